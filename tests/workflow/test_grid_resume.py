"""A grid killed in the middle of a fit resumes that run from its last checkpoint and ends as an uninterrupted grid.

The grid runs as a real subprocess and is stopped with SIGTERM (what a cancelled batch job receives) while its
worker is parked after optimizer step 2 of 8, in the middle of epoch 0 (tests/resume/pause.py). The same command
then resumes the run from the step-2 checkpoint; its results must equal those of the same grid run without a
break, exactly (CPU, one thread, fixed seed, feature cache off: see tests/resume/test_resume.py for why).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from cli_runs import ROOT, run_zsad, signal_when_paused, start_zsad, zsad_environment

from zsad.workflow.grid.records import RUNS_FILE, read_records
from zsad.workflow.grid.runner import ATTEMPT_HEADER

RESUME_TESTS = Path(__file__).resolve().parents[1] / "resume"
PAUSE_STEP = 2
STEPS = 8
CHECKPOINT = {
    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
    "init_args": {"save_last": True, "enable_version_counter": False},
}


def write_resumable_grid(folder: Path, marker: Path) -> Path:
    """One static run on 2 auxiliary categories (16 images at batch 4: 4 steps per epoch; 2 epochs), checkpointed
    every 2 steps."""
    step_checkpoint = {**CHECKPOINT, "init_args": {**CHECKPOINT["init_args"], "save_top_k": 0}}
    step_checkpoint["init_args"]["every_n_train_steps"] = PAUSE_STEP
    pause = {"class_path": "pause.PauseAtStep", "init_args": {"step": PAUSE_STEP, "marker": str(marker)}}
    inline = {
        "seed_everything": 0,
        "model": {"feature_cache": "off"},
        "data": {
            "init_args": {
                "root": str(folder / "data"),
                "aux_categories": ["stripes", "weave"],
                "target_categories": ["checker"],
                "n_test_good": 3,
                "n_test_per_defect": 1,
                "batch_size": 4,
            }
        },
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [CHECKPOINT, step_checkpoint, pause],
        },
    }
    configs = ROOT / "configs"
    base = [str(configs / name) for name in ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml")]
    path = folder / "resumable.yaml"
    path.write_text(yaml.safe_dump({"name": "resumable", "base": [*base, inline]}, sort_keys=False))
    return path


def stop_when_paused(grid: Path, out: Path, cwd: Path, env: dict[str, str], marker: Path) -> str:
    """Start ``zsad grid``, and SIGTERM it once its worker is parked; returns what the grid printed."""
    process = start_zsad("grid", [str(grid), "--out", str(out)], cwd, env)
    output = signal_when_paused(process, marker, signal.SIGTERM)
    assert process.returncode == 130, output
    return output


def only_run(out: Path) -> tuple[dict, Path]:
    """The single run's record and folder."""
    (record,) = read_records(out / RUNS_FILE)
    return record, out / record["run_id"]


def restorations(folder: Path) -> int:
    """How often the run's latest attempt loaded a checkpoint (Lightning logs each load)."""
    latest = (folder / "log.txt").read_text().split(ATTEMPT_HEADER)[-1]  # resumed attempts append to the log
    return latest.count("Restoring states from the checkpoint path")


def metrics(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    return {"per_category": results["per_category"], "mean": results["mean"]}


@pytest.mark.slow
def test_a_stopped_grid_resumes_its_run_and_ends_as_an_uninterrupted_one(tmp_path):
    env = zsad_environment(tmp_path / "cache", extra_pythonpath=RESUME_TESTS)
    marker = tmp_path / "paused"
    grid = write_resumable_grid(tmp_path, marker)
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"

    printed = stop_when_paused(grid, stopped, tmp_path, env, marker)
    assert "resumes it from its last checkpoint" in printed
    assert not (stopped / RUNS_FILE).exists()  # the stopped run wrote no line
    (run_dir,) = [p for p in stopped.iterdir() if p.is_dir()]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    interrupted = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert interrupted["global_step"] == PAUSE_STEP
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches_done": PAUSE_STEP, "batch_size": 4}
    ]  # stopped in the middle of epoch 0

    run_zsad("grid", [str(grid), "--out", str(whole)], tmp_path, env)  # the marker exists: no pause this time
    resumed = run_zsad("grid", [str(grid), "--out", str(stopped)], tmp_path, env)
    assert f"resuming from {run_dir.name}/checkpoints/last.ckpt ... done in" in resumed
    record, folder = only_run(stopped)
    assert record["status"] == "done" and folder == run_dir
    assert restorations(folder) == 2  # the fit's, then the test's
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == STEPS
    expected = metrics(only_run(whole)[1])
    assert metrics(folder) == expected

    # Stopped after the fit, during the test: the run resumes from the finished fit, trains no further, tests.
    (stopped / RUNS_FILE).unlink()
    again = run_zsad("grid", [str(grid), "--out", str(stopped)], tmp_path, env)
    assert "resuming from" in again and "done in" in again
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == STEPS
    assert metrics(folder) == expected
