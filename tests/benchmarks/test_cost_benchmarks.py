"""The inference-cost and memory benchmarks run end to end on the tiny CLIP and report sane numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import memory

import inference


@pytest.mark.slow
def test_inference_benchmark_times_every_stage(capsys):
    rows = inference.main(
        ["--backbone", "tiny-random", "--methods", "static", "vip", "--repeats", "1", "--warmup", "0"]
    )
    static, vip = rows
    assert static["ratio"] > 0 and static["zsad_ms"] > 0 and static["vv_ms"] is not None
    assert static["prompts_once_ms"] > 0 and vip["prompts_once_ms"] is None  # only shared prompts are encoded once
    assert vip["vv_ms"] is None and vip["features_ms"] + vip["head_ms"] <= vip["zsad_ms"] * 1.001
    assert "static + dual_branch" in capsys.readouterr().out


@pytest.mark.slow
def test_memory_benchmark_measures_each_stage_in_its_own_process(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path))
    assert [(j["method"], j["stage"]) for j in memory.jobs(memory.parse_args(["--methods", "dapo", "winclip"]))] == [
        ("dapo", "fit"),
        ("dapo", "test"),
        ("winclip", "test"),  # WinCLIP is training-free: nothing to fit
    ]
    rows = memory.main(["--methods", "static", "--stages", "fit", "--steps", "1", "--batch-size", "2"])
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert rows[0]["peak_mb"] >= rows[0]["imported_mb"] > 100


def test_parse_errors_name_the_option():
    with pytest.raises(SystemExit):
        inference.parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        memory.parse_args(["--steps", "0"])
