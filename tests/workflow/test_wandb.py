"""W&B tracking through the CLI, offline: the resolved config, test metrics in the summary, pictures as images.

The offline run is read back from its ``.wandb`` file with wandb's own reader (``wandb leet inspect``): offline runs
of wandb >= 0.2x write no ``files/config.yaml`` or ``files/wandb-summary.json`` until they are synced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger

from zsad.cli import main
from zsad.metrics.results import Results
from zsad.workflow.tracking import log_config, log_results, results_table

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml", "logger/wandb.yaml"]
TARGETS = ["checker", "grain", "ring", "capsule"]


@pytest.fixture
def wandb_run_dir(tmp_path, monkeypatch):
    """An offline, silent W&B in tmp_path; wandb's process-wide state is torn down afterwards."""
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    yield tmp_path
    wandb.finish()
    wandb.teardown()  # settings are cached per process: a later test must not reuse this run


def cli_args(*extra_configs: Path) -> list[str]:
    configs = [ROOT / "configs" / c for c in CONFIGS] + list(extra_configs)
    return [a for c in configs for a in ("-c", str(c))] + ["--trainer.enable_progress_bar=false"]


def read_offline_run(run_file: Path) -> dict:
    """Config, summary and tags of an offline run, from its .wandb file."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", str(run_file), "--summary", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "No such command" in done.stderr:
        pytest.skip(f"this wandb has no .wandb reader (`wandb leet inspect`): {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def flat_results(document: dict) -> dict[str, float]:
    results = Results(document["per_category"], document["per_dataset"], document["mean"])
    return results.flat()


@pytest.mark.slow
def test_fit_and_test_log_config_summary_and_pictures_offline(wandb_run_dir, capsys):
    import wandb

    tmp_path = wandb_run_dir
    main(["fit", *cli_args(), "--trainer.max_steps=2", "--trainer.logger.init_args.tags=[smoke]"])
    wandb.finish()  # the CLI is one process per command; in-process, a second logger would reuse this run
    checkpoint = tmp_path / "runs" / "smoke" / "last.ckpt"  # kept: pictures.yaml appends callbacks
    pictures = [ROOT / "configs" / "logger" / "pictures.yaml"]
    limit = "--trainer.callbacks.init_args.max_per_category=2"
    main(["test", *cli_args(*pictures), limit, f"--ckpt_path={checkpoint}", "--trainer.logger.init_args.tags=[smoke]"])
    wandb.finish()
    capsys.readouterr()

    run_files = sorted((tmp_path / "runs" / "smoke" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2  # save_dir is the run folder (trainer.default_root_dir), not WANDB_DIR
    runs = [read_offline_run(path) for path in run_files]
    test_run, run_file = next((r, f) for r, f in zip(runs, run_files, strict=True) if "test/results" in r["summary"])
    assert test_run["project"] == "zsad" and test_run["tags"] == ["smoke"]

    # the fully resolved config (interpolations, registry names) is the run's config and still in config.yaml
    config = test_run["config"]
    saved = yaml.safe_load((tmp_path / "runs" / "smoke" / "config.yaml").read_text())
    assert config["model"] == saved["model"] and config["data"] == saved["data"]
    assert config["model"]["prompt"]["class_path"] == "zsad.prompts.static.StaticPrompt"
    assert config["model"]["backbone"]["init_args"]["image_size"] == 64
    assert config["data"]["init_args"]["image_size"] == 64  # ${model.backbone.init_args.image_size} resolved
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "runs/smoke"
    assert config["ckpt_path"] == str(checkpoint)

    # every per-category metric and macro mean of results.json is in the summary, with the same value
    document = json.loads((tmp_path / "runs" / "smoke" / "results.json").read_text())
    expected = {f"test/{key}": value for key, value in flat_results(document).items()}
    summary = test_run["summary"]
    metric_keys = {k for k in summary if k.startswith("test/") and not k.startswith(("test/pictures/", "test/results"))}
    assert metric_keys == set(expected)
    assert {k: summary[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert len(expected) >= 4 * 8  # 4 categories x 8 metrics, minus undefined ones, plus the means

    # the results table and two pictures per category went in as media files
    run_folder = run_file.parent
    assert summary["test/results"]["_type"] == "table-file"
    table = json.loads((run_folder / "files" / summary["test/results"]["path"]).read_text())
    assert table["columns"][:2] == ["dataset", "category"] and len(table["data"]) == len(TARGETS) + 1
    for category in TARGETS:
        images = summary[f"test/pictures/synthetic/{category}"]
        assert images["_type"] == "images/separated" and images["count"] == 2
        assert all((run_folder / "files" / name).is_file() for name in images["filenames"])
        assert any(caption.startswith("good_") for caption in images["captions"])  # normal and anomalous
        assert len(list((tmp_path / "runs" / "smoke" / "pictures" / "synthetic" / category).glob("*.png"))) == 2


@pytest.mark.slow
def test_disabled_wandb_runs_without_files(wandb_run_dir, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["test", *cli_args(), "--untrained=true"])  # an untrained model: enough to go through set-up and test end
    assert "results written to" in capsys.readouterr().out
    assert not list(wandb_run_dir.rglob("*.wandb"))
    assert (wandb_run_dir / "runs" / "smoke" / "results.json").is_file()


def test_other_loggers_get_the_config_as_hyperparameters_and_no_results(tmp_path):
    logger = CSVLogger(str(tmp_path))
    log_config([logger], {"model": {"prompt": {"class_path": "static"}}, "seed_everything": 0})
    log_results([logger], Results({"d": {"c": {"image_auroc": 0.5}}}, {"d": {"image_auroc": 0.5}}, {}))
    logger.save()
    saved = yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text())
    assert saved == {"model": {"prompt": {"class_path": "static"}}, "seed_everything": 0}
    assert not Path(logger.log_dir, "metrics.csv").exists()


def test_results_table_has_category_and_mean_rows():
    results = Results(
        per_category={"a": {"x": {"image_auroc": 0.5, "pixel_auroc": 0.7}, "y": {"image_auroc": 0.9}}, "b": {}},
        per_dataset={"a": {"image_auroc": 0.7, "pixel_auroc": 0.7}, "b": {"image_auroc": 0.1}},
        mean={"image_auroc": 0.4, "pixel_auroc": 0.7},
    )
    columns, rows = results_table(results)
    assert columns == ["dataset", "category", "image_auroc", "pixel_auroc"]
    assert rows == [
        ["a", "x", 0.5, 0.7],
        ["a", "y", 0.9, None],
        ["a", "mean", 0.7, 0.7],
        ["b", "mean", 0.1, None],
        ["mean", "mean", 0.4, 0.7],
    ]
