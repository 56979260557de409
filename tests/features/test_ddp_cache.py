"""Under 2-process CPU DDP, each rank caches the images it sees, and training matches the uncached run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_cache_worker.py")


def run_worker(cache: str, root: Path, out: Path) -> tuple[dict, list]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "ZSAD_CACHE_DIR": str(root.parent)}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, str(WORKER), "--devices", "2", "--root", str(root), "--out", str(out), "--cache", cache]
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    counts = [json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in (0, 1)]
    return torch.load(out, weights_only=True), counts


@pytest.mark.slow
def test_each_rank_caches_what_it_sees(tmp_path):
    root = tmp_path / "synthetic"
    plain, no_counts = run_worker("off", root, tmp_path / "plain.pt")
    cached, counts = run_worker("memory", root, tmp_path / "cached.pt")
    assert no_counts == [None, None]
    for rank in counts:
        assert rank["hits"] + rank["misses"] == 4 * 8  # 4 epochs of this rank's 8 images
        assert 8 <= rank["misses"] <= 16 and rank["hits"] > 0  # its first 8, then only images it had not seen
    # an image computed alone (a miss among hits) may round its global feature differently from a batch of 8
    for name, value in cached.items():
        torch.testing.assert_close(value, plain[name], rtol=1e-5, atol=1e-6)
