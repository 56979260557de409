"""Metrics under a 2-process CPU (gloo) DDP run equal the 1-process run, padded samples counted once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("evaluate_worker.py")


def run_worker(devices: int, root: Path, out: Path) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    process = subprocess.run(
        [sys.executable, str(WORKER), "--devices", str(devices), "--root", str(root), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_process_metrics_equal_one_process(tmp_path):
    root = tmp_path / "synthetic"
    single = run_worker(1, root, tmp_path / "single.json")
    double = run_worker(2, root, tmp_path / "double.json")
    assert double["world_size"] == 2
    scored = [int((tmp_path / f"double.json.rank{rank}").read_text()) for rank in (0, 1)]
    assert scored == [23, 23]  # 45 samples padded to 46 by the distributed sampler: one sample scored twice
    assert single["results"]["counts"] == double["results"]["counts"]  # ... and counted once
    assert double["results"]["counts"]["synthetic"]["ring"] == {"normal": 5, "anomalous": 10}
    assert single["results"]["per_category"] == double["results"]["per_category"]
    assert single["results"]["mean"] == double["results"]["mean"]
