"""Component specs: recorded arguments, nesting, plain-data enforcement, rebuilding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsad.components import Component, build, to_plain
from zsad.errors import ConfigError
from zsad.heads import DualBranchHead


class Inner(Component, torch.nn.Module):
    def __init__(self, size: int = 3, name: str = "x") -> None:
        super().__init__()
        self.size = size


class Outer(Component, torch.nn.Module):
    def __init__(self, inner: Inner, scales: tuple = (1, 2), root: Path = Path("/tmp"), **extra) -> None:
        super().__init__()
        self.inner = inner


class Derived(Inner):
    def __init__(self, size: int = 7) -> None:
        super().__init__(size=size, name="derived")


def test_spec_records_the_outermost_arguments_with_defaults():
    spec = Outer(Inner(size=5), root=Path("/data"), flag=True).spec()
    assert spec == {
        "class_path": f"{__name__}.Outer",
        "init_args": {
            "inner": {"class_path": f"{__name__}.Inner", "init_args": {"size": 5, "name": "x"}},
            "scales": [1, 2],
            "root": "/data",
            "flag": True,
        },
    }


def test_subclass_records_its_own_signature():
    assert Derived(size=9).spec()["init_args"] == {"size": 9}


def test_build_round_trip():
    rebuilt = build(DualBranchHead(sigma=2.5, aggregation="mean").spec())
    assert isinstance(rebuilt, DualBranchHead) and rebuilt.sigma == 2.5 and rebuilt.aggregation == "mean"
    assert build(3) == 3 and build({"a": 1}) == {"a": 1}


def test_non_plain_arguments_are_refused_with_the_argument_name():
    with pytest.raises(ConfigError, match=r"Outer.scales\[0\] is a Tensor"):
        Outer(Inner(), scales=(torch.ones(1),)).spec()
    assert to_plain({"a": (1, Path("/x"))}) == {"a": [1, "/x"]}


def test_unknown_class_path():
    with pytest.raises(ConfigError, match=r"'nonexistent_thing' is neither a registered component name"):
        build({"class_path": "nonexistent_thing"})
    with pytest.raises(ConfigError, match=r"Cannot import component class 'zsad\.nope\.Nothing'"):
        build({"class_path": "zsad.nope.Nothing"})
