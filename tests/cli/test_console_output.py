"""A quiet console: each warning once, no known third-party noise, the results table once, and a fast offline error.

The commands run as a user runs them, in a subprocess, so that what reaches the terminal (warnings, log records,
Lightning's own prints) is what is counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from zsad.backbones import loading
from zsad.errors import WeightsUnavailableError

NOISE = (
    "tensorboardX",
    "litlogger",
    "LeafSpec",
    "across ranks is zero",
    "No pretrained weights loaded",
    "dirpath has changed",
    "UserWarning",
    "FutureWarning",
)
"""Fragments of the third-party notices (and of Python's raw warning format) a zsad command must not print."""
TABLE_HEADER = "category  image_auroc"
FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def zsad(args: list[str], folder: Path) -> str:
    """Run ``python -m zsad ARGS`` in ``folder``; its stdout and stderr together."""
    env = {**os.environ, "ZSAD_CACHE_DIR": str(folder / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "zsad", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def repeated_warnings(output: str) -> list[str]:
    """Lines that say "warning" and appear more than once."""
    counts = Counter(line.strip() for line in output.splitlines() if "warning" in line.lower())
    return [line for line, count in counts.items() if count > 1]


@pytest.mark.slow
def test_fit_and_test_print_each_warning_once_and_the_table_once(tmp_path):
    configs = ["-c", "method/static", "-c", "backbone/tiny", "-c", "data/synthetic", "-c", "trainer/smoke"]
    fit = zsad(["fit", *configs, "--trainer.max_steps=1", *FAST], tmp_path)
    test = zsad(
        ["test", "-c", "data/synthetic", "-c", "trainer/smoke", "--ckpt_path=runs/smoke/last.ckpt", *FAST], tmp_path
    )
    for name, output in (("fit", fit), ("test", test)):
        assert not repeated_warnings(output), f"zsad {name}: {repeated_warnings(output)}\n{output}"
        assert not [n for n in NOISE if n in output], f"zsad {name} printed known noise:\n{output}"
        random_warning = "zsad: warning: Backbone 'zsad-tiny' has RANDOM weights: its anomaly scores mean nothing."
        assert output.count(random_warning) == 1, output
    assert test.count(TABLE_HEADER) == 1, test  # zsad's table; Lightning's "Test metric" table is off
    assert "Test metric" not in test and "results written to" in test


def test_offline_a_hub_download_fails_at_once_naming_the_remedies(monkeypatch):
    """One reachability check, no retries, the hub's offline mode only for the call, and remedies that work."""
    from huggingface_hub import constants

    probes = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "is_reachable", lambda host, timeout=3.0: probes.append(host) or False)
    offline_before = constants.HF_HUB_OFFLINE
    with pytest.raises(WeightsUnavailableError) as caught:
        loading.create_clip("ViT-B-32", "openai")
    message = str(caught.value)
    assert probes == [urlsplit(constants.ENDPOINT).hostname]  # one try
    assert f"{probes[0]} cannot be reached" in message and "not in the local cache" in message
    assert "--model.backbone.init_args.pretrained=" in message and "add `-c configs/backbone/tiny.yaml`" in message
    assert offline_before == constants.HF_HUB_OFFLINE  # the offline switch does not outlive the call


def test_zsad_demo_words_the_remedies_in_its_own_options(monkeypatch, tmp_path):
    from zsad.workflow.demo import demo_main

    monkeypatch.setattr(loading, "is_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(WeightsUnavailableError) as caught:
        demo_main(["--backbone", "ViT-B-32", "--out", str(tmp_path / "demo")])
    message = str(caught.value)
    assert "`--weights FILE`" in message and "`zsad demo --backbone tiny-random`" in message
    assert "-c configs/backbone/tiny.yaml" not in message
