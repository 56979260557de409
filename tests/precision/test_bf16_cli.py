"""`zsad fit` and `zsad test` with `--trainer.precision bf16-mixed` on the CPU (Lightning's autocast), static and CoPS.

The fit must run without dtype errors and keep fp32 parameters (mixed precision trains fp32 master weights); the
bf16 test of its checkpoint is compared with the fp32 test of the same checkpoint (CoPS with `test_seed: null`, so
that both tests draw the same prior samples from the equally seeded global random state). `16-mixed` cannot run on
the CPU (Lightning turns it into bf16-mixed there); test_mixed_precision_scoring.py runs every method under fp16
autocast instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsad.cli import main

ROOT = Path(__file__).resolve().parents[2]
METRIC_TOLERANCE = 0.08
"""On macro means. Measured at most 0.025 (static image AUROC: about 6 of the 240 normal/anomalous image pairs swap
order, since the tiny random CLIP separates its scores by less than bf16 moves them) and 0.008 for CoPS."""
CHECKPOINT = Path("runs/smoke/last.ckpt")


def results_of(verb_args: list[str], capsys) -> dict:
    main(verb_args)
    capsys.readouterr()
    newest = max(Path("runs").rglob("results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


@pytest.mark.parametrize("method", ["static", "cops"])
def test_bf16_mixed_fit_and_test(method, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ["backbone/tiny.yaml", f"method/{method}.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    args = [a for c in configs for a in ("-c", str(ROOT / "configs" / c))]
    args += ["--trainer.enable_progress_bar=false", "--data.init_args.aux_categories=[stripes]"]
    args += ["--model.prompt.init_args.test_seed=null"] if method == "cops" else []  # same prior samples in both
    main(["fit", *args, "--trainer.precision=bf16-mixed", "--trainer.max_steps=2"])
    state = torch.load(CHECKPOINT, weights_only=True)["state_dict"]
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in state.values())

    half = results_of(["test", *args, "--trainer.precision=bf16-mixed", f"--ckpt_path={CHECKPOINT}"], capsys)
    full = results_of(["test", *args, "--trainer.precision=32-true", f"--ckpt_path={CHECKPOINT}"], capsys)
    assert half["counts"] == full["counts"]
    assert half["mean"].keys() == full["mean"].keys()
    for name, value in full["mean"].items():
        assert abs(half["mean"][name] - value) <= METRIC_TOLERANCE, f"{name}: bf16 {half['mean'][name]}, fp32 {value}"
