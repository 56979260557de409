"""Medical benchmark readers (HeadCT, BrainMRI, Br35H, Kvasir-SEG, CVC-ClinicDB, CVC-ColonDB, ISIC, Endo)."""

from __future__ import annotations

import inspect
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes_medical import (
    IMAGE_LEVEL,
    PIXEL_LEVEL,
    WRITERS,
    mask_array,
    write_clinicdb_png,
    write_headct,
    write_headct_labels,
    write_isic_flat,
    write_mask,
    write_no_yes,
)
from PIL import Image

from conftest import shared_data
from zsad.data.batch import split_valid
from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets import medical, polyps
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.transforms import load_mask
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

NAMES = tuple(WRITERS)


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Every benchmark's fake layout, written once (read-only for the tests that use it)."""
    roots = {}
    for name, writer in WRITERS.items():
        root = tmp_path_factory.mktemp(name)
        roots[name] = (root, writer(root))
    return roots


def _copy(fake_roots, name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(fake_roots[name][0], root)
    return root


def _benchmark(name: str, root: Path) -> Benchmark:
    return DATASETS.get(name)(root)


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_one_short_name(name):
    dataset, datamodule = DATASETS.get(name), DATAMODULES.get(name)
    assert issubclass(dataset, Benchmark) and issubclass(datamodule, BenchmarkDataModule)
    assert datamodule.benchmark is dataset
    assert dataset.name == name and dataset.domain == "medical" and dataset.splits == ("test",)
    assert dataset.pixel_level == (name in PIXEL_LEVEL) and dataset.image_level == (name in IMAGE_LEVEL)
    doc = inspect.getdoc(dataset)
    assert doc.splitlines()[0] and dataset.download.split()[0] in doc
    assert "<root>" in doc and "evaluation-only" in doc
    assert inspect.getdoc(datamodule).splitlines()[0]
    assert dataset.__module__ in (medical.__name__, polyps.__name__)


# ------------------------------------------------------------------------------------------------ records


@pytest.mark.parametrize("name", NAMES)
def test_records_of_fake_layout(fake_roots, name):
    root, expected = fake_roots[name]
    benchmark = _benchmark(name, root)
    assert benchmark.categories() == [name]
    records = benchmark.records(name)
    assert len(records) == expected.normal + expected.anomalous
    assert Counter(r.label for r in records) == Counter({0: expected.normal, 1: expected.anomalous}) - Counter()
    assert {r.defect_type for r in records if r.label == 1} == {expected.defect_type}
    assert {r.defect_type for r in records if r.label == 0} <= {"good"}
    assert {r.category for r in records} == {name} and {r.dataset for r in records} == {name}
    if expected.masks:
        assert all(r.mask_path is not None and r.mask_path.is_file() for r in records)
        assert all(r.mask_path.parent != r.path.parent for r in records)
    else:
        assert all(r.mask_path is None for r in records)
    assert all(r.path.suffix.lower() != ".txt" and r.path.parent.name != "pred" for r in records)


@pytest.mark.parametrize("name", NAMES)
def test_datamodule_test_loader(fake_roots, name):
    root, expected = fake_roots[name]
    module = DATAMODULES.get(name)(str(root), image_size=32, batch_size=4, num_workers=0)
    batches = list(module.test_dataloader())
    # the stray notes.txt of the no/yes fakes is not read: it comes last, marked invalid, for the skipped list
    skipped = [(path, problem) for b in batches for path, problem in split_valid(b)[1]]
    assert [Path(path).name for path, _ in skipped] == (["notes.txt"] if name in ("brainmri", "br35h") else [])
    assert all("not an image format Pillow reads (suffix '.txt')" in problem for _, problem in skipped)
    batches = [split_valid(b)[0] for b in batches]
    images = torch.cat([b["image"] for b in batches])
    masks = torch.cat([b["mask"] for b in batches])
    assert images.shape == (expected.normal + expected.anomalous, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (len(images), 1, 32, 32) and masks.dtype == torch.float32
    per_image = masks.flatten(1).sum(1)
    if name in PIXEL_LEVEL:
        assert (per_image > 0).all()
        # the fake mask is the middle square: with JPEG noise thresholded at 127 nothing outside it survives
        assert masks[:, :, :6].sum() == 0 and masks[:, :, -6:].sum() == 0
    else:
        assert per_image.sum() == 0
    assert {c for b in batches for c in b["category"]} == {name}


def test_jpeg_masks_are_thresholded_at_127(fake_roots):
    kvasir = _benchmark("kvasir", fake_roots["kvasir"][0]).records("kvasir")
    endo = _benchmark("endo", fake_roots["endo"][0]).records("endo")
    isic = _benchmark("isic", fake_roots["isic"][0]).records("isic")
    assert {r.mask_threshold for r in kvasir + endo} == {127}
    assert {r.mask_threshold for r in isic} == {0}  # PNG masks
    path = kvasir[0].mask_path
    assert len(np.unique(np.asarray(Image.open(path).convert("L")))) > 2  # the fake JPEG really is noisy
    assert np.array_equal(np.asarray(load_mask(path, 127)) > 0, mask_array() > 0)
    assert (np.asarray(load_mask(path, 0)) > 0).sum() > (mask_array() > 0).sum()  # threshold 0 keeps the noise


def test_explicit_mask_threshold_overrides_the_convention(fake_roots):
    module = DATAMODULES.get("kvasir")(str(fake_roots["kvasir"][0]), mask_threshold=200, num_workers=0)
    assert {r.mask_threshold for r in module.target_records()} == {200}


def test_no_yes_reads_every_image_whatever_the_name(tmp_path):
    write_no_yes(tmp_path, n_no=6, n_yes=6)
    names = {r.path.name for r in _benchmark("brainmri", tmp_path).records("brainmri")}
    assert {"0 no.jpeg", "N1.JPG", "2 no.png", "N3.PNG", "y 1.JPG", "Y2.png"} <= names
    assert len(names) == 12


@pytest.mark.parametrize(
    ("name", "writer", "image_dir"),
    [("clinicdb", write_clinicdb_png, "images"), ("isic", write_isic_flat, "images")],
)
def test_alternative_image_mask_layout(tmp_path, name, writer, image_dir):
    expected = writer(tmp_path)
    records = _benchmark(name, tmp_path).records(name)
    assert len(records) == expected.anomalous
    assert {r.path.parent.name for r in records} == {image_dir}
    assert all(r.mask_path.stem == r.path.stem for r in records)


def test_official_layouts_are_detected(fake_roots):
    clinic = _benchmark("clinicdb", fake_roots["clinicdb"][0]).records("clinicdb")
    assert {(r.path.parent.name, r.mask_path.parent.name) for r in clinic} == {("Original", "Ground Truth")}
    isic = _benchmark("isic", fake_roots["isic"][0]).records("isic")
    assert all(r.mask_path.name == f"{r.path.stem}_Segmentation.png" for r in isic)
    colon = _benchmark("colondb", fake_roots["colondb"][0]).records("colondb")
    assert {(r.path.suffix, r.mask_path.suffix) for r in colon} == {(".png", ".TIF")}


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", NAMES)
def test_missing_root_names_layout_and_download(tmp_path, name):
    benchmark = _benchmark(name, tmp_path / "absent")
    with pytest.raises(DataError) as info:
        benchmark.records(name)
    message = str(info.value)
    assert "does not exist" in message and benchmark.layout in message and benchmark.download in message


@pytest.mark.parametrize("name", NAMES)
def test_empty_root_finds_no_category(tmp_path, name):
    with pytest.raises(DataError, match=r"No .* category found") as info:
        _benchmark(name, tmp_path).categories()
    assert DATASETS.get(name).download in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_category_and_split(fake_roots, name):
    benchmark = _benchmark(name, fake_roots[name][0])
    with pytest.raises(DataError, match=f"Valid categories: {name}"):
        benchmark.records("bottle")
    with pytest.raises(DataError, match="no split 'train'"):
        benchmark.records(name, "train")


@pytest.mark.parametrize("name", PIXEL_LEVEL)
def test_image_without_mask(fake_roots, tmp_path, name):
    root = _copy(fake_roots, name, tmp_path)
    record = _benchmark(name, root).records(name)[1]
    record.mask_path.unlink()
    with pytest.raises(DataError, match="1 image\\(s\\) have no mask") as info:
        _benchmark(name, root).records(name)
    message = str(info.value)
    assert str(record.path) in message
    assert str(record.mask_path.with_suffix("")) in message  # where the mask was expected


@pytest.mark.parametrize("name", PIXEL_LEVEL)
def test_mask_without_image(fake_roots, tmp_path, name):
    root = _copy(fake_roots, name, tmp_path)
    record = _benchmark(name, root).records(name)[0]
    record.path.unlink()
    with pytest.raises(DataError, match="1 mask\\(s\\) have no image") as info:
        _benchmark(name, root).records(name)
    message = str(info.value)
    assert str(record.mask_path) in message and str(record.path.with_suffix("")) in message


def test_isic_mask_with_a_foreign_name(fake_roots, tmp_path):
    root = _copy(fake_roots, "isic", tmp_path)
    write_mask(root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_9.png")
    with pytest.raises(DataError, match=r"ISIC_9.png.*'<image stem>_Segmentation.<ext>'"):
        _benchmark("isic", root).records("isic")


def test_missing_mask_folder(fake_roots, tmp_path):
    root = _copy(fake_roots, "kvasir", tmp_path)
    shutil.rmtree(root / "masks")
    with pytest.raises(DataError, match=r"mask folder .*masks' does not exist"):
        _benchmark("kvasir", root).records("kvasir")


def test_same_stem_twice_is_ambiguous(fake_roots, tmp_path):
    root = _copy(fake_roots, "colondb", tmp_path)
    write_mask(root / "masks" / "0.png")
    with pytest.raises(DataError, match="share the name '0'"):
        _benchmark("colondb", root).records("colondb")


@pytest.mark.parametrize("missing", ["no", "yes"])
def test_no_yes_with_a_folder_missing(tmp_path, missing):
    write_no_yes(tmp_path)
    shutil.rmtree(tmp_path / missing)
    with pytest.raises(DataError, match=f"'{tmp_path / missing}' does not exist"):
        _benchmark("br35h", tmp_path).records("br35h")


def test_headct_missing_labels(tmp_path):
    write_headct(tmp_path)
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(DataError, match=r"labels.csv' do not exist") as info:
        _benchmark("headct", tmp_path).records("headct")
    assert "id, hemorrhage" in str(info.value)


def test_headct_image_without_label_row(tmp_path):
    write_headct(tmp_path)
    Image.new("RGB", (16, 16)).save(tmp_path / "head_ct" / "017.png")
    with pytest.raises(DataError, match=r"017.png' has no label row .*its id would be 17"):
        _benchmark("headct", tmp_path).records("headct")


def test_headct_label_row_without_image(tmp_path):
    write_headct(tmp_path)
    (tmp_path / "head_ct" / "004.png").unlink()
    with pytest.raises(DataError, match=r"1 HeadCT label row.* have no image, e.g. id 4: expected .*004.png"):
        _benchmark("headct", tmp_path).records("headct")


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        ([(0, 1), (1, 2)], "id, hemorrhage", "hemorrhage=2"),
        ([(0, 1), ("one", 0)], "id, hemorrhage", "line 3 .* not '<integer id>,<0 or 1>'"),
        ([(0, 1), (0, 0)], "id, hemorrhage", "line 3 .* repeats id 0"),
        ([(0, 1)], "id, label", "need the columns 'id' and 'hemorrhage'"),
    ],
)
def test_headct_bad_labels(tmp_path, rows, header, match):
    write_headct(tmp_path, n_normal=1, n_hemorrhage=1)
    write_headct_labels(tmp_path, rows, header)
    with pytest.raises(DataError, match=match):
        _benchmark("headct", tmp_path).records("headct")


def test_headct_ids_are_integers_of_padded_names(tmp_path):
    write_headct(tmp_path, n_normal=2, n_hemorrhage=2, ids=[0, 7, 100, 149])
    records = _benchmark("headct", tmp_path).records("headct")
    assert [(r.path.name, r.label) for r in records] == [("000.png", 1), ("007.png", 1), ("100.png", 0), ("149.png", 0)]


# ------------------------------------------------------------------------------------------------ real subsets


@pytest.mark.shared_data
def test_real_headct():
    root = shared_data("headct")
    records = _benchmark("headct", root).records("headct")
    assert len(records) == 100
    assert Counter((r.label, r.defect_type) for r in records) == {(0, "good"): 50, (1, "hemorrhage"): 50}
    module = DATAMODULES.get("headct")(str(root), image_size=32, batch_size=50, num_workers=0)
    batches = list(module.test_dataloader())
    assert sum(len(b["image"]) for b in batches) == 100
    assert all(b["image"].shape[1:] == (3, 32, 32) and b["mask"].sum() == 0 for b in batches)


@pytest.mark.shared_data
def test_real_brainmri():
    root = shared_data("brainmri")
    records = _benchmark("brainmri", root).records("brainmri")
    assert len(records) == 253
    assert Counter(r.label for r in records) == {0: 98, 1: 155}
    names = [r.path.name for r in records]
    assert any(" " in n for n in names) and {Path(n).suffix for n in names} >= {".JPG", ".jpeg", ".jpg", ".png"}
    module = DATAMODULES.get("brainmri")(str(root), image_size=32, batch_size=128, num_workers=0)
    assert sum(len(b["image"]) for b in module.test_dataloader()) == 253


@pytest.mark.shared_data
def test_real_kvasir():
    root = shared_data("kvasir_seg")
    records = _benchmark("kvasir", root).records("kvasir")
    assert len(records) == 150 and {r.label for r in records} == {1}
    assert all(r.mask_path is not None and r.mask_path.name == r.path.name for r in records)
    assert all(np.asarray(load_mask(r.mask_path, r.mask_threshold)).any() for r in records)
    module = DATAMODULES.get("kvasir")(str(root), image_size=32, batch_size=50, num_workers=0)
    masks = torch.cat([b["mask"] for b in module.test_dataloader()])
    assert masks.shape == (150, 1, 32, 32) and (masks.flatten(1).sum(1) > 0).all()
