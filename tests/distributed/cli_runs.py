"""Run `python -m zsad ...` in a subprocess on the CPU, as the DDP and resume tests need (helpers, not tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTED_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def config_args(*names: str) -> list[str]:
    """``-c`` options for configs under ``configs/``."""
    return [a for name in names for a in ("-c", str(ROOT / "configs" / name))]


def zsad_environment(cache: Path, extra_pythonpath: Path | None = None) -> dict[str, str]:
    """CPU-only, one thread per process (bit-for-bit repeatable runs), no inherited distributed variables."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["ZSAD_CACHE_DIR"] = str(cache)
    for key in DISTRIBUTED_VARIABLES:
        env.pop(key, None)
    if extra_pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_pythonpath), env.get("PYTHONPATH")) if p)
    return env


def zsad_command(verb: str, args: list[str]) -> list[str]:
    """``python -m zsad <verb> <args>``: Lightning's DDP launcher re-runs exactly this for the other processes."""
    return [sys.executable, "-m", "zsad", verb, *args]


def start_zsad(verb: str, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a zsad command (output collected, stderr into stdout)."""
    command = zsad_command(verb, args)
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a started command; returns its output, fails the test with the output's tail unless it succeeded.

    A command still running after ``timeout`` seconds is killed with every process it started (a DDP launcher's
    other ranks hold the output pipe open), and the test fails with what it printed until then.
    """
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(process.args[2:4])} still ran after {timeout} s; its output:\n{output[-6000:]}")
    assert process.returncode == 0, f"{' '.join(process.args[2:4])} failed ({process.returncode}):\n{output[-4000:]}"
    return output


def run_zsad(verb: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a zsad command to completion (see :func:`finish`)."""
    return finish(start_zsad(verb, args, cwd, env), timeout)


def signal_when_paused(process: subprocess.Popen, marker: Path, signum: int, timeout: float = 300) -> str:
    """Wait until ``marker`` exists (tests/resume/pause.py parks a fit and touches it), then send ``signum``.

    Returns:
        What the process printed. Fails the test if the process ends before it is paused or never pauses.
    """
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"the process ended before it was paused:\n{process.stdout.read()[-4000:]}")
            assert time.monotonic() < deadline, "the fit never reached the pause step"
            time.sleep(0.1)
    finally:
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    return output


def newest_results(folder: Path) -> dict:
    """The most recently written results.json under ``folder``."""
    path = max(folder.rglob("results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text())


def trained_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The trainable parameters stored in a checkpoint."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
