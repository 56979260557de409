"""The zsad command line, run in-process: list, help, fit -> test from a checkpoint, bad input, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsad import ZSADModule

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [
    str(ROOT / "configs" / c)
    for c in ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
]


def config_args():
    return [arg for path in CONFIGS for arg in ("-c", path)]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_list_shows_every_kind(run_cli):
    code, out = run_cli(["list"])
    assert code == 0
    for expected in (
        "backbones:",
        "tiny-random",
        "prompt synthesizers:",
        "static",
        "scoring heads:",
        "dual_branch",
        "losses:",
        "focal",
        "datamodules:",
        "synthetic",
    ):
        assert expected in out
    assert "Tiny random CLIP" in out  # one-line descriptions


def test_top_level_help(run_cli):
    code, out = run_cli(["--help"])
    assert code == 0 and "fit" in out and "demo" in out and "list" in out


def test_fit_help(run_cli):
    code, out = run_cli(["fit", "--help"])
    assert code == 0 and "--model.prompt" in out and "--trainer.max_steps" in out


def test_print_config_resolves_aliases_and_interpolation(workdir, run_cli):
    code, out = run_cli(["fit", *config_args(), "--model.head=dual_branch", "--print_config"])
    assert code == 0
    assert "class_path: zsad.prompts.static.StaticPrompt" in out
    assert "class_path: zsad.heads.dual_branch.DualBranchHead" in out
    assert "class_path: zsad.data.synthetic.datamodule.SyntheticDataModule" in out
    assert "image_size: 64" in out and "${" not in out


def test_fit_then_test_from_the_checkpoint(workdir, run_cli):
    code, out = run_cli(["fit", *config_args(), "--trainer.max_steps=5", "--trainer.enable_progress_bar=false"])
    assert code == 0, out
    checkpoint = workdir / "runs" / "smoke" / "last.ckpt"
    assert checkpoint.is_file()
    # a CLI-built checkpoint holds plain specs and reloads in plain Python without unsafe pickle
    reloaded = ZSADModule.load_from_checkpoint(checkpoint, weights_only=True)
    saved = torch.load(checkpoint, weights_only=True)
    assert torch.equal(reloaded.prompt.context, saved["state_dict"]["prompt.context"])
    assert set(saved["state_dict"]) == {"prompt.context", "prompt.deep"}
    code, out = run_cli(["test", *config_args(), f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false"])
    assert code == 0, out
    assert "mean" in out and "image_auroc" in out
    results = sorted(workdir.glob("runs/smoke/lightning_logs/*/results.json"))
    document = json.loads(results[-1].read_text())
    assert set(document["per_category"]["synthetic"]) == {"checker", "grain", "ring", "capsule"}
    assert 0.0 <= document["mean"]["image_auroc"] <= 1.0
    assert document["protocol"]["targets"][0]["categories"] == ["checker", "grain", "ring", "capsule"]
    assert set(document["aupro_variants"]) == {"pixel_aupro", "pixel_aupro_cflow"}
    assert document["model"]["prompt"]["class_path"] == "zsad.prompts.static.StaticPrompt"


def test_unknown_component_name(workdir, run_cli):
    code, out = run_cli(["fit", *config_args(), "--model.head=dual_brnch"])
    assert code == 2
    assert "Unknown scoring head 'dual_brnch'. Did you mean 'dual_branch'?" in out


def test_config_key_that_does_not_exist(workdir, run_cli):
    code, out = run_cli(["fit", *config_args(), "--model.prompt.init_args.n_ctxx=3"])
    assert code == 2
    assert "n_ctxx" in out


def test_layer_beyond_depth_through_the_cli(workdir, run_cli):
    code, out = run_cli(["fit", *config_args(), "--model.backbone.init_args.layers=[6,30]"])
    assert code == 2
    assert "zsad: error: layers=[6, 30]: [30] outside 1..24" in out
    assert "Traceback" not in out


def test_unknown_command(run_cli):
    code, out = run_cli(["trian"])
    assert code == 2 and "unknown command 'trian'" in out


def test_demo_with_the_tiny_random_backbone(workdir, run_cli):
    code, out = run_cli(
        [
            "demo",
            "--backbone",
            "tiny-random",
            "--out",
            str(workdir / "demo"),
            "--epochs",
            "1",
            "--pictures",
            "2",
            "--accelerator",
            "cpu",
        ]
    )
    assert code == 0, out
    assert "RANDOM WEIGHTS" in out
    metrics = json.loads((workdir / "demo" / "metrics.json").read_text())
    assert metrics["warning"].startswith("RANDOM WEIGHTS")
    assert metrics["defect_look"] == "marked" and "marked defects" in out  # the tiny backbone's default
    assert set(metrics["trained"]["per_category"]["synthetic"]) == {"checker", "grain", "ring", "capsule"}
    assert len(list((workdir / "demo" / "overlays").glob("*/*.png"))) == 8


def test_zsad_test_on_real_mvtec_layout_data(workdir, run_cli):
    """`zsad test` on ../shared/data/mvtec_ad (bottle): per-category and mean table, results.json."""
    from tests.conftest import shared_data

    root = shared_data("mvtec_ad")
    args = ["test", "-c", CONFIGS[0], "-c", CONFIGS[1], "-c", str(ROOT / "configs" / "data" / "mvtec.yaml"),
            f"--data.init_args.root={root}", "--data.init_args.num_workers=0", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.default_root_dir=run", "--untrained=true"]  # fmt: skip
    code, out = run_cli(args)
    assert code == 0, out
    assert "mvtec" in out and "bottle" in out and "pixel_aupro" in out
    document = json.loads(next((workdir / "run").rglob("results.json")).read_text())
    assert document["counts"]["mvtec"]["bottle"] == {"normal": 20, "anomalous": 63}
    assert set(document["per_category"]["mvtec"]["bottle"]) == {
        "image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
        "pixel_aupro_cflow",
    }  # fmt: skip
    assert document["protocol"]["targets"][0]["dataset"] == "mvtec"
    assert document["environment"]["zsad"]


@pytest.mark.slow
def test_protocol_over_every_real_subset(tmp_path, monkeypatch, run_cli):
    """configs/protocol/shared_subsets.yaml through `zsad test`: every real subset, undefined metrics left out."""
    from tests.conftest import shared_data

    shared_data("mvtec_ad")
    monkeypatch.chdir(ROOT)  # the preset's roots are relative to the repository
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    args = ["test", "-c", CONFIGS[0], "-c", CONFIGS[1], "-c", str(ROOT / "configs/protocol/shared_subsets.yaml"),
            "-c", CONFIGS[3], "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--model.pixel_metrics=[pixel_auroc, pixel_aupro]", "--untrained=true"]  # fmt: skip
    code, out = run_cli(args)
    assert code == 0, out
    document = json.loads(next((tmp_path / "run").rglob("results.json")).read_text())
    assert document["counts"] == {
        "brainmri": {"brainmri": {"normal": 98, "anomalous": 155}},
        "headct": {"headct": {"normal": 50, "anomalous": 50}},
        "kvasir": {"kvasir": {"normal": 0, "anomalous": 150}},
        "mvtec": {"bottle": {"normal": 20, "anomalous": 63}},
        "mvtec3d": {"tire": {"normal": 10, "anomalous": 29}},
    }
    assert "kvasir/kvasir" in document["undefined"]["image_auroc"]  # every image anomalous
    assert "headct/headct" in document["undefined"]["pixel_auroc"]  # no masks
    assert "image_auroc" not in document["per_dataset"]["kvasir"]
    assert document["protocol"]["name"] == "synthetic_to_shared_subsets"
