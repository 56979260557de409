"""CoPS's official test constants, chosen from the tested dataset's name (methods.md §2).

The official test script takes alpha (SAGA's spatial weight), beta (the image-score fusion) and the neighbour
kernel K (of the prototypes and of SAGA alike) from ``--dataset``: VisA's constants when the name contains "visa",
the others' for every other name. Both the ``cops`` synthesizer (K) and the ``saga`` head (alpha, beta, K) follow
the rule with their ``by_dataset`` settings, so the rule lives here, below both.
"""

from __future__ import annotations

from typing import Any

OFFICIAL_TEST_PRESETS: dict[str, dict[str, Any]] = {
    "visa": {"alpha": 0.35, "beta": 1.0, "neighbor_kernel": 3},
    "others": {"alpha": 0.26, "beta": 0.9, "neighbor_kernel": 5},
}
"""CoPS's per-test-dataset constants (commit a3a41fc): VisA, and every other dataset."""

DEFAULT_CONSTANTS = OFFICIAL_TEST_PRESETS["others"]
"""The constants of a dataset that is not VisA, and of an unknown one (the official ``--dataset`` default is mvtec)."""


def official_preset_name(dataset: str) -> str:
    """The official rule: ``"visa"`` if the test dataset's name contains "visa", else ``"others"``."""
    return "visa" if "visa" in dataset.lower() else "others"


def official_preset(dataset: str | None) -> dict[str, Any]:
    """The alpha, beta and K the official test script would use on ``dataset`` (``None``: unknown, the others')."""
    return dict(DEFAULT_CONSTANTS if dataset is None else OFFICIAL_TEST_PRESETS[official_preset_name(dataset)])


__all__ = ["DEFAULT_CONSTANTS", "OFFICIAL_TEST_PRESETS", "official_preset", "official_preset_name"]
