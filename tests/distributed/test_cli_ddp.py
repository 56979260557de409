"""`zsad fit` and `zsad test` with 2 CPU processes (gloo DDP) through the command line, for static and CoPS.

Test metrics: the 2-process test of a checkpoint equals the 1-process test of the same checkpoint.

Training: zsad's training order is one permutation per (seed, epoch) that process r of W reads at positions
r, r + W, ... (zsad.data.resumable), so the two processes' batches of 4 together are exactly the one process's
batch of 8. DDP averages the two processes' gradients, which equals the gradient of the batch of 8 whenever the
loss is a mean over the images of a batch: true for AnomalyCLIP's losses (cross-entropy, focal and Dice are
per-image means), so the static prompts trained by 2 processes equal those trained by 1 process up to float
summation order. Measured after 4 Adam steps: at most 1.5e-6 apart (Adam's first steps divide by tiny second
moments, which magnifies rounding), against 5e-3 when the steps see other images (1 process at batch 4); the
tolerance is 2e-5. The comparison runs with ``round_deep_to_fp16: false``: the official preset rounds each deep-prompt
copy's gradient to fp16 (as AnomalyCLIP does), and a gradient rounded per process before DDP averages it differs from
one rounded over the whole batch by an fp16 step (measured 2.6e-5 after 4 steps), a rounding, not a DDP effect.
CoPS's losses are not per-image means (the center losses pool
patches over the batch, the released reconstruction loss compares every sample with every image of the batch) and
each process draws its own VAE noise, so for CoPS the 2-process parameters are only checked to be finite.
That every trainable parameter of every method receives a gradient at every step, which DDP without
find_unused_parameters needs, is checked in test_gradients_reach_every_parameter.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_runs import config_args, newest_results, run_zsad, trained_state, zsad_environment

from zsad.cli import main
from zsad.data import SyntheticDataModule

STEPS = 4
CHECKPOINT = Path("runs/smoke/last.ckpt")
DDP = ["--trainer.devices=2", "--trainer.strategy=ddp", "--data.init_args.batch_size=4"]


def common_args(method: str, data_root: Path) -> list[str]:
    exact = ["--model.prompt.init_args.round_deep_to_fp16=false"] if method == "static" else []
    return [
        *config_args("backbone/tiny.yaml", f"method/{method}.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"),
        *exact,
        f"--data.init_args.root={data_root}",
        "--data.init_args.aux_categories=[stripes, weave]",  # 32 images: 4 steps of 8 (or of 2 x 4) per epoch
        "--data.init_args.target_categories=[ring, capsule]",
        "--trainer.enable_progress_bar=false",
    ]


def in_process(verb: str, args: list[str], cwd: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(cwd)
    main([verb, *args])
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["static", "cops"])
def test_two_process_fit_and_test(method, tmp_path, monkeypatch, capsys):
    env = zsad_environment(tmp_path / "cache")
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # restored afterwards: the in-process runs seed this process
    data = SyntheticDataModule(
        str(tmp_path / "data"), aux_categories=["stripes", "weave"], target_categories=["ring", "capsule"]
    )
    data.prepare_data()  # written once, before the processes start
    args = common_args(method, tmp_path / "data")
    double, single = tmp_path / "two_processes", tmp_path / "one_process"
    double.mkdir(), single.mkdir()

    run_zsad("fit", [*args, *DDP, f"--trainer.max_steps={STEPS}"], double, env)
    run_zsad("test", [*args, *DDP, f"--ckpt_path={CHECKPOINT}"], double, env)
    in_process("test", [*args, f"--ckpt_path={double / CHECKPOINT}"], single, monkeypatch, capsys)
    two, one = newest_results(double / "runs"), newest_results(single / "runs")
    assert two["counts"] == one["counts"]  # every target image counted once, whatever process scored it
    assert two["per_category"] == one["per_category"]
    assert two["mean"] == one["mean"]

    trained = trained_state(double / CHECKPOINT)
    assert all(torch.isfinite(value).all() for value in trained.values())
    if method == "static":
        in_process("fit", [*args, f"--trainer.max_steps={STEPS}"], single, monkeypatch, capsys)
        reference = trained_state(single / CHECKPOINT)
        for name, value in reference.items():
            torch.testing.assert_close(trained[name], value, rtol=0, atol=2e-5, msg=f"{name} differs")
