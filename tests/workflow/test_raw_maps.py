"""Raw maps on disk: float32 .npy exactly, 16-bit PNG within its recorded scale's step, class maps with names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zsad.errors import ConfigError, DataError
from zsad.workflow.raw_maps import (
    HIGH_KEY,
    LOW_KEY,
    check_map_format,
    read_class_map,
    read_map,
    write_class_map,
    write_manifest,
    write_map,
)
from zsad.workflow.run_outputs import class_names_record


def smooth_map() -> np.ndarray:
    y, x = np.mgrid[0:37, 0:53]
    return (0.3 + 3.2 * np.exp(-((x - 20) ** 2 + (y - 15) ** 2) / 90)).astype(np.float32)


def test_npy_round_trips_exactly(tmp_path):
    values = smooth_map()
    path = write_map(tmp_path / "a" / "good_000", values, "npy")
    assert path.name == "good_000.npy"
    assert np.array_equal(np.load(path), values) and np.array_equal(read_map(path), values)


def test_png16_keeps_its_scale_and_decodes_within_half_a_step(tmp_path):
    values = smooth_map()
    path = write_map(tmp_path / "b", values, "png16")
    with Image.open(path) as picture:
        assert picture.mode.startswith("I") and np.asarray(picture).max() == 65535
        assert float(picture.info[LOW_KEY]) == float(values.min()) and float(picture.info[HIGH_KEY]) == float(
            values.max()
        )
    step = (values.max() - values.min()) / 65535
    assert np.abs(read_map(path) - values).max() <= step / 2 + 1e-6
    flat = write_map(tmp_path / "flat", np.full((4, 4), 2.5, np.float32), "png16")
    assert np.all(read_map(flat) == 2.5)


def test_class_maps_keep_their_names(tmp_path):
    classes = np.zeros((10, 12), dtype=np.int64)
    classes[2:5, 3:7] = 2
    path = write_class_map(tmp_path / "x", classes, ("normal", "scratch", "hole"))
    assert path.name == "x.classes.png"
    read, names = read_class_map(path)
    assert np.array_equal(read, classes) and names == ["normal", "scratch", "hole"]


def test_manifest_and_refusals(tmp_path):
    manifest = json.loads(write_manifest(tmp_path, "png16", "eval", {"class_names": []}).read_text())
    assert manifest["format"] == "png16" and "low + (high - low)" in manifest["decoding"]
    with pytest.raises(ConfigError, match="maps='tiff'"):
        check_map_format("tiff")
    Image.new("I;16", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(DataError, match="not a 16-bit map zsad wrote"):
        read_map(tmp_path / "plain.png")


def test_manifest_class_names_are_listed_per_dataset_only_when_they_differ():
    same = class_names_record({"mvtec": ("normal", "hole"), "btad": ("normal", "hole")})
    assert same == {"class_names": ["normal", "hole"]}
    differ = class_names_record({"visa": ("normal", "chip"), "mvtec": ("normal", "hole")})
    assert differ == {
        "class_names": [],
        "class_names_by_dataset": {"mvtec": ["normal", "hole"], "visa": ["normal", "chip"]},
    }
    assert class_names_record({}) == {"class_names": []}
