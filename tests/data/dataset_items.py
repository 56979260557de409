"""What every dataset item holds, shared by the dataset and datamodule tests."""

from __future__ import annotations

ITEM_KEYS = frozenset(
    {
        "image",
        "mask",
        "mask_level",
        "label",
        "category",
        "defect_type",
        "path",
        "dataset",
        "index",
        "valid",
        "problem",
        "native_size",
        "mask_path",
        "mask_threshold",
    }
)
"""The keys of an :class:`~zsad.data.datasets.base.AnomalyDataset` item, and so of every collated batch."""
