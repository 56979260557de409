"""The CoPS and ViP2 reproduction configs run a fit -> test cycle through the CLI on the tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsad.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["cops", "vip"])
def test_fit_then_test_cycle(method, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ["backbone/tiny.yaml", f"method/{method}.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    args = [a for c in configs for a in ("-c", str(ROOT / "configs" / c))] + ["--trainer.enable_progress_bar=false"]
    main(["fit", *args, "--trainer.max_steps=3"])
    checkpoint = tmp_path / "runs" / "smoke" / "last.ckpt"
    main(["test", *args, f"--ckpt_path={checkpoint}"])
    output = capsys.readouterr().out
    assert "synthetic" in output and "pixel_aupro" in output
    document = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert set(document["per_category"]["synthetic"]) == {"checker", "grain", "ring", "capsule"}
    assert document["model"]["prompt"]["class_path"].endswith({"cops": "CoPSPrompt", "vip": "ViPPrompt"}[method])
