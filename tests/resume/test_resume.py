"""A `zsad fit` killed mid-epoch and resumed with `--ckpt_path last` ends exactly where an uninterrupted fit ends.

CoPS is the method under test because its training draws random numbers at every step (the VAE's posterior noise):
equality needs the data order (zsad.data.resumable) *and* the random states (zsad.workflow.checkpointing) to
continue where they stopped, besides the parameters, optimizer and loop counters that Lightning restores itself.
Measured on this set-up, resuming without the saved random states moves the trained parameters by up to 1e-2, and
without the data position by up to 7e-3; with both, they are equal bit for bit.

2 auxiliary categories x 16 images at batch 8 are 4 steps per epoch; 2 epochs; a checkpoint every 2 steps. The fit
is parked (tests/resume/pause.py) after step 2, in the middle of epoch 0, and killed there with SIGKILL.
The feature cache is off: with it, the resumed fit recomputes the features of the images seen before the kill in
other batches than the cache replays them, which moves parameters by rounding only (7e-7 measured, static).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from cli_runs import (
    config_args,
    finish,
    newest_results,
    run_zsad,
    signal_when_paused,
    start_zsad,
    trained_state,
    zsad_environment,
)

from zsad.cli import main
from zsad.data import SyntheticDataModule
from zsad.workflow.atomic import temporary_path

STEPS_PER_EPOCH = 4
PAUSE_STEP = 2
CHECKPOINT = Path("runs/resumable/last.ckpt")


def fit_args(data_root: Path) -> list[str]:
    return [
        *config_args("backbone/tiny.yaml", "method/cops.yaml", "data/synthetic.yaml", "trainer/resumable.yaml"),
        f"--data.init_args.root={data_root}",
        "--data.init_args.aux_categories=[stripes, weave]",
        "--model.feature_cache=off",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks.init_args.every_n_train_steps=2",  # the step-triggered checkpoint (the last callback)
    ]


def kill_when_paused(args: list[str], cwd: Path, env: dict[str, str], marker: Path) -> None:
    """Run a fit that parks after PAUSE_STEP steps, and SIGKILL it there."""
    pause = ["--trainer.callbacks+=pause.PauseAtStep", f"--trainer.callbacks.step={PAUSE_STEP}"]
    process = start_zsad("fit", [*args, *pause, f"--trainer.callbacks.marker={marker}"], cwd, env)
    signal_when_paused(process, marker, signal.SIGKILL)


def results_of_test(cwd: Path, args: list[str], monkeypatch, capsys) -> dict:
    monkeypatch.chdir(cwd)
    main(["test", *args, f"--ckpt_path={CHECKPOINT}"])
    capsys.readouterr()
    return newest_results(cwd / "runs")


@pytest.mark.slow
def test_killed_fit_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    env = zsad_environment(tmp_path / "cache", extra_pythonpath=Path(__file__).parent)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    args = fit_args(tmp_path / "data")
    # Both fits run at once, so the data are written beforehand (the same spec as the configs give).
    SyntheticDataModule(root=str(tmp_path / "data"), aux_categories=["stripes", "weave"]).prepare_data()
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir(), resumed.mkdir()
    uninterrupted = start_zsad("fit", args, whole, env)  # runs beside the interrupted fit

    kill_when_paused(args, resumed, env, tmp_path / "paused")
    interrupted = torch.load(resumed / CHECKPOINT, map_location="cpu", weights_only=True)
    assert interrupted["global_step"] == PAUSE_STEP  # killed mid-epoch 0, after its step-2 checkpoint
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches_done": PAUSE_STEP, "batch_size": 8}
    ]
    # A checkpoint write cut short by a kill leaves only its hidden temporary file: newer, but never picked up.
    temporary_path(resumed / CHECKPOINT).write_bytes(b"half a checkpoint")
    output = run_zsad("fit", [*args, "--ckpt_path=last"], resumed, env)
    assert "Restoring states from the checkpoint path" in output and str(CHECKPOINT) in output
    finish(uninterrupted)

    expected, actual = trained_state(whole / CHECKPOINT), trained_state(resumed / CHECKPOINT)
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(value, actual[name]), f"{name} differs after resuming"
    assert torch.load(resumed / CHECKPOINT, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH

    whole_results = results_of_test(whole, args, monkeypatch, capsys)
    resumed_results = results_of_test(resumed, args, monkeypatch, capsys)
    assert resumed_results["per_category"] == whole_results["per_category"]
    assert resumed_results["mean"] == whole_results["mean"]
