"""The docs name every registered dataset, so the datasets page cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import zsad  # noqa: F401  (registers everything)
from zsad.registry import DATASETS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_dataset_is_documented():
    page = (DOCS / "datasets.md").read_text()
    missing = [name for name in DATASETS.names() if f"`{name}`" not in page]
    assert not missing, f"add {missing} to docs/datasets.md"
