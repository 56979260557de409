"""`zsad predict --images`: any folder or glob, scores.csv, overlays mirrored, unreadable files listed."""

from __future__ import annotations

import csv
import io
import shutil

import pytest
import torch
from PIL import Image
from tests.conftest import shared_data
from tests.inference.conftest import config_args

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.heads.multiclass import MultiClassHead
from zsad.inference import Detector
from zsad.inference.files import find_input_files, overlay_names
from zsad.prompts.dapo import DAPOPrompt
from zsad.workflow.predict import score_files, scores_csv


def read_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_folder_with_a_sub_folder_and_files_that_are_not_images(trained, tmp_path, run_cli):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(trained.image("ring", "good", 0), folder / "a.png")
    Image.open(trained.image("capsule", "good", 0)).resize((80, 48)).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "truncated.png").write_bytes(b"\x89PNG\r\n")
    out = tmp_path / "out"
    args = ["predict", "--ckpt", str(trained.checkpoint), "--images", str(folder), "--out", str(out)]
    code, output = run_cli([*args, "--batch-size", "1", "--device", "cpu"])
    assert code == 0, output
    rows = read_rows(out / "scores.csv")
    assert [row["path"] for row in rows] == ["a.png", "sub/b.jpg"]  # relative, sorted; no defect column (static)
    assert set(rows[0]) == {"path", "score"} and all(0.0 <= float(row["score"]) <= 1.0 for row in rows)
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == ["notes.txt", "sub/truncated.png"]
    assert "skipped notes.txt: Cannot read image" in output and "2 skipped" in output
    overlay = Image.open(out / "overlays" / "sub" / "b.png")  # the folder layout, mirrored
    assert overlay.width >= 2 * 80  # image | overlay, at the image's own size (or larger)
    assert (out / "overlays" / "a.png").is_file()
    assert "100%" in output  # the progress bar ran to the end


def test_glob_pattern_and_errors(trained, tmp_path, run_cli):
    folder = tmp_path / "glob" / "x"
    folder.mkdir(parents=True)
    for index in range(2):
        shutil.copy(trained.image("grain", "good", index), folder / f"{index}.png")
    out = tmp_path / "out"
    pattern = str(tmp_path / "glob" / "**" / "*.png")
    code, output = run_cli(["predict", "--ckpt", str(trained.checkpoint), "--images", pattern, "--out", str(out)])
    assert code == 0, output
    assert [row["path"] for row in read_rows(out / "scores.csv")] == ["x/0.png", "x/1.png"]
    assert (out / "skipped.txt").read_text() == ""
    only_text = tmp_path / "text_only"
    only_text.mkdir()
    (only_text / "readme.md").write_text("# no images here")
    code, output = run_cli(["predict", "--ckpt", str(trained.checkpoint), "--images", str(only_text), "--out",
                            str(tmp_path / "out2")])  # fmt: skip
    assert code == 2 and "zsad: error: None of the 1 files" in output
    assert (tmp_path / "out2" / "skipped.txt").read_text().startswith("readme.md\t")


def test_predict_without_images_stays_lightning(run_cli):
    code, output = run_cli(["predict", *config_args("backbone/tiny.yaml"), "--help"])
    assert code == 0 and "--trainer" in output and "--images" not in output


def test_input_names_and_overlay_names(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("d/a.png", "d/a.jpg", "b.bmp"):
        (tmp_path / name).write_bytes(b"")
    files = find_input_files(tmp_path)
    assert [f.name for f in files] == ["b.bmp", "d/a.jpg", "d/a.png"]
    assert overlay_names([f.name for f in files]) == {
        "b.bmp": "b.png",
        "d/a.jpg": "d/a.jpg.png",
        "d/a.png": "d/a.png.png",
    }
    assert [f.name for f in find_input_files(tmp_path / "d" / "a.png")] == ["a.png"]


@pytest.mark.shared_data
def test_real_mvtec_images(trained, tmp_path, run_cli):
    """Three 900 x 900 MVTec AD bottle images from ../shared/data: maps and overlays at their own size."""
    root = shared_data("mvtec_ad")
    pattern = str(root / "bottle" / "test" / "broken_large" / "00[0-2].png")
    out = tmp_path / "out"
    code, output = run_cli(["predict", "--ckpt", str(trained.checkpoint), "--images", pattern, "--out", str(out)])
    assert code == 0, output
    assert [row["path"] for row in read_rows(out / "scores.csv")] == ["000.png", "001.png", "002.png"]
    overlay = Image.open(out / "overlays" / "000.png")
    assert overlay.width == 2 * 900 and overlay.height > 900  # image | overlay at full size, captions above


def test_defect_type_column_for_class_maps(trained, tmp_path):
    """A DAPO-style head gives scores.csv a defect_type column: one of its defect words, or "none"."""
    torch.manual_seed(0)
    prompt = DAPOPrompt(vocabulary=["crack", "hole"], prompt_count=2, vision_deep_layers=2)
    detector = Detector(ZSADModule(TinyRandomBackbone(project_patches=False), prompt, MultiClassHead()))
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        shutil.copy(trained.image("ring", "good", index), folder / f"{index}.png")
    rows, skipped, typed = score_files(detector, find_input_files(folder), tmp_path / "out")
    assert typed and not skipped
    table = list(csv.DictReader(io.StringIO(scores_csv(rows, typed))))
    assert [row["path"] for row in table] == ["0.png", "1.png"]
    assert all(row["defect_type"] in {"crack", "hole", "none"} for row in table)
    assert (tmp_path / "out" / "overlays" / "1.png").is_file()
