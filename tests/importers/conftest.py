"""What every imported checkpoint must record, checked the same way for each method."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from zsad.errors import CheckpointError


def check_import_provenance(
    provenance: dict[str, Any], source: Path, method: str, preset: Sequence[str], trained_on: str
) -> None:
    """The provenance of ``zsad import``: the source file's SHA-256, the method, its preset and the training set."""
    assert provenance["kind"] == "import" and provenance["method"] == method
    assert provenance["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert provenance["source"]["format"] == method
    assert provenance["preset"] == [f"configs/{name}.yaml" for name in preset]
    assert provenance["aux"] == [{"dataset": trained_on, "root": None, "categories": None, "split": "test"}]


@pytest.fixture
def import_provenance() -> Callable[..., None]:
    """:func:`check_import_provenance`, for the tests of this folder."""
    return check_import_provenance


def check_foreign_files_refused(read: Callable[[Path], Any], folder: Path, key: str = "prompt_learner") -> None:
    """An importer's ``read`` refuses a file without the official ``key``, bytes that are no checkpoint, and a
    checkpoint that needs code to unpickle (one line each, nothing executed)."""
    torch.save({"state_dict": {"ctx_pos": torch.zeros(1)}}, folder / "other.pth")
    with pytest.raises(CheckpointError, match=rf"has no '{key}' state dict \(found \['state_dict'\]\)"):
        read(folder / "other.pth")
    (folder / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read(folder / "garbage.pth")
    torch.save({key: {"ctx_pos": torch.zeros(1)}, "hook": Path("/tmp")}, folder / "pickle.pth")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read(folder / "pickle.pth")


@pytest.fixture
def foreign_files_refused() -> Callable[..., None]:
    """:func:`check_foreign_files_refused`, for the tests of this folder."""
    return check_foreign_files_refused
