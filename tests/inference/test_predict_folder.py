"""`zsad predict --images`: any folder or glob, scores.csv, overlays mirrored, unreadable files listed."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
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
from zsad.workflow.predict import PredictOptions, score_files, scores_csv
from zsad.workflow.raw_maps import read_class_map, read_map


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
    args = ["predict", "--ckpt", str(trained.checkpoint), "--images", pattern, "--out", str(out), "--maps", "npy"]
    code, output = run_cli(args)
    assert code == 0, output
    assert [row["path"] for row in read_rows(out / "scores.csv")] == ["000.png", "001.png", "002.png"]
    overlay = Image.open(out / "overlays" / "000.png")
    assert 2 * 384 < overlay.width < 3 * 384 and overlay.height > 384  # image | overlay | colour bar, 384 px panels
    assert np.load(out / "maps" / "000.npy").shape == (900, 900)  # raw maps at the image's own size
    assert "Time: scoring" in output and "drawing 3 overlays" in output


def test_defect_type_column_for_class_maps(trained, tmp_path):
    """A DAPO-style head gives scores.csv a defect_type column: one of its defect words, or "none"."""
    torch.manual_seed(0)
    prompt = DAPOPrompt(vocabulary=["crack", "hole"], prompt_count=2, vision_deep_layers=2)
    detector = Detector(ZSADModule(TinyRandomBackbone(project_patches=False), prompt, MultiClassHead()))
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        shutil.copy(trained.image("ring", "good", index), folder / f"{index}.png")
    options = PredictOptions(maps="npy", pixel_threshold=0.0, workers=0)
    rows, skipped, typed = score_files(detector, find_input_files(folder), tmp_path / "out", options=options)
    assert typed and not skipped
    table = list(csv.DictReader(io.StringIO(scores_csv(rows, typed))))
    assert [row["path"] for row in table] == ["0.png", "1.png"]
    assert all(row["defect_type"] in {"crack", "hole", "none"} for row in table)
    overlay = Image.open(tmp_path / "out" / "overlays" / "1.png")
    assert overlay.width > 4 * 192  # image | overlay | prediction | defect type (64 px enlarged to 192) | bar
    classes, names = read_class_map(tmp_path / "out" / "maps" / "1.classes.png")
    assert names == ["normal", "crack", "hole"] and classes.shape == (64, 64) and set(np.unique(classes)) <= {0, 1, 2}


def test_predict_help_shows_the_folder_options_first(run_cli):
    code, output = run_cli(["predict", "--help"])
    options = ("--images", "--ckpt", "--out", "--vmax", "--overwrite", "--pixel-threshold", "--maps", "--workers")
    assert code == 0 and all(option in output for option in options)
    assert "--trainer" not in output and "`zsad predict -c CONFIG --help` lists" in " ".join(output.split())


def test_overwrite_replaces_only_what_zsad_predict_wrote(tmp_path, run_cli):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 40), (90, 140, 60)).save(folder / name)
    out = tmp_path / "out"
    args = ["predict", *config_args("method/winclip.yaml", "backbone/tiny_winclip.yaml"), "--out", str(out)]
    code, output = run_cli([*args, "--images", str(folder)])
    assert code == 0, output
    (out / "notes.md").write_text("the user's own notes")  # beside zsad's outputs, not where they go
    (folder / "b.png").unlink()
    code, output = run_cli([*args, "--images", str(folder), "--overwrite"])
    assert code == 0, output
    assert [row["path"] for row in read_rows(out / "scores.csv")] == ["a.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png"]  # b's old overlay is gone
    assert (out / "notes.md").read_text() == "the user's own notes"


@pytest.mark.slow  # a LightningCLI predict over 2 x 4 synthetic images, about 5 s
def test_lightning_predict_writes_scores_and_says_where(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    args = [*config_args("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")]
    small = ["--data.init_args.target_categories=[ring, grain]", "--data.init_args.n_test_good=2"]
    code, output = run_cli(["predict", *args, *small, "--untrained=true", "--trainer.enable_progress_bar=false"])
    assert code == 0, output
    written = sorted(tmp_path.glob("runs/smoke/lightning_logs/*/scores.csv"))
    assert len(written) == 1 and f"written to {written[0].relative_to(tmp_path)}" in output
    rows = read_rows(written[0])
    assert {row["category"] for row in rows} == {"ring", "grain"} and {row["label"] for row in rows} == {"0", "1"}
    assert all(0.0 <= float(row["score"]) <= 1.0 and Path(row["path"]).is_file() for row in rows)


def test_thresholds_masks_maps_and_pred_label(trained, tmp_path, run_cli):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        shutil.copy(trained.image("ring", "crack" if index else "good", 0 if index < 2 else 1), folder / f"{index}.png")
    out = tmp_path / "out"
    base = ["predict", "--ckpt", str(trained.checkpoint), "--images", str(folder), "--out", str(out), "--device", "cpu"]
    code, output = run_cli([*base, "--image-threshold", "0.5", "--pixel-threshold", "1.5", "--maps", "png16"])
    assert code == 0, output
    rows = read_rows(out / "scores.csv")
    assert list(rows[0]) == ["path", "score", "pred_label"]
    assert all(row["pred_label"] == str(int(float(row["score"]) >= 0.5)) for row in rows)
    for index in range(3):
        values = read_map(out / "maps" / f"{index}.png")
        mask = np.asarray(Image.open(out / "masks" / f"{index}.png"))
        assert values.shape == mask.shape == (64, 64) and mask.dtype == bool
        edge = np.abs(values - 1.5) < 1e-3  # 16-bit rounding may move a pixel right at the threshold
        assert np.array_equal(mask[~edge], values[~edge] >= 1.5)
    info = Image.open(out / "overlays" / "0.png").info
    assert info["Software"] == "zsad predict"
    assert "Time: scoring" in output and "masks in" in output and "png16 maps in" in output

    results = tmp_path / "results.json"
    results.write_text(
        '{"thresholds": {"rule": "f1", "tuned_on_target": true, "per_category": {"synthetic": {"ring": '
        '{"image": {"threshold": 0.25}, "pixel": {"threshold": 2.0}}}}}}'
    )
    code, output = run_cli([*base, "--overwrite", "--thresholds", str(results), "--category", "ring", "--no-overlays"])
    assert code == 0, output
    assert all(row["pred_label"] == str(int(float(row["score"]) >= 0.25)) for row in read_rows(out / "scores.csv"))
    assert not (out / "maps").exists() and not (out / "overlays").exists()  # the earlier run's outputs were removed
    assert (out / "masks" / "0.png").is_file() and "no overlays drawn" in output
    code, output = run_cli([*base, "--overwrite", "--thresholds", str(results), "--category", "bottle"])
    assert code == 2 and "give --category as one of synthetic/ring" in output
