"""benchmarks/vs_official.py: without an official checkout it says what it needs; its records compare exactly."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import vs_official
from parity.common import Comparison, official_import_path


@pytest.mark.parametrize("method", sorted(vs_official.METHODS))
def test_without_src_it_says_what_to_give_and_exits_0(method, capsys):
    assert vs_official.main(["--method", method]) == 0
    out = capsys.readouterr().out
    assert "give --src" in out and vs_official.METHODS[method] in out


def test_stages_record_the_largest_differences_and_the_verdict():
    comparison = Comparison("demo", seconds_official=2.0, seconds_zsad=1.0)
    maps = comparison.stage("final maps", tolerance=1e-5)
    double = torch.float64
    maps.update(torch.tensor([1.0, 2.0], dtype=double), torch.tensor([1.0, 2.0 + 4e-6], dtype=double))
    maps.update(torch.tensor([0.0], dtype=double), torch.tensor([3e-6], dtype=double))
    features = comparison.stage("features", tolerance=1e-4, relative=True)
    features.update(torch.tensor([10.0], dtype=double), torch.tensor([10.01], dtype=double))
    assert maps.max_abs_diff == pytest.approx(4e-6, rel=1e-3) and maps.passed
    assert features.max_rel_diff == pytest.approx(1e-3, rel=1e-2) and not features.passed
    assert not comparison.passed
    table = comparison.table()
    assert "| final maps | 4.00e-06 |" in table and "| NO |" in table and "zsad / official 0.500x" in table
    with pytest.raises(ValueError, match="shapes differ"):
        maps.update(torch.zeros(2), torch.zeros(3))


def test_official_code_is_imported_only_from_the_given_folder(tmp_path):
    (tmp_path / "official_probe.py").write_text("VALUE = 41 + 1\n")
    with official_import_path(tmp_path):
        import official_probe

        assert official_probe.VALUE == 42
    assert "official_probe" not in sys.modules and str(tmp_path) not in sys.path
    with pytest.raises(SystemExit, match="is not a folder"), official_import_path(tmp_path / "missing"):
        pass


@pytest.mark.parametrize("method", sorted(vs_official.METHODS))
def test_every_method_module_imports_the_way_vs_official_imports_it(method):
    module = importlib.import_module(f"parity.{method}")
    assert callable(module.compare)
