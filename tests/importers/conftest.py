"""What every imported checkpoint must record, checked the same way for each method."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest


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
