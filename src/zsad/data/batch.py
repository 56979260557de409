"""Operations on collated batches (dicts of tensors and lists)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def select(batch: dict[str, Any], keep: Tensor) -> dict[str, Any]:
    """The samples of ``batch`` where the boolean ``keep`` is true, for every tensor and list entry."""
    indices = keep.nonzero().flatten().tolist()
    selected: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == keep.shape[0]:
            selected[key] = value[keep]
        elif isinstance(value, list) and len(value) == keep.shape[0]:
            selected[key] = [value[i] for i in indices]
        else:
            selected[key] = value
    return selected


def split_valid(batch: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Drop samples the loader could not read (``valid`` false) and return them as ``(path, problem)`` pairs."""
    valid = batch.get("valid")
    if valid is None or bool(valid.all()):
        return batch, []
    skipped = [(batch["path"][i], batch["problem"][i]) for i in (~valid).nonzero().flatten().tolist()]
    return select(batch, valid.bool()), skipped


def dataset_runs(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch cut into runs of consecutive samples of one dataset (``batch["dataset"]``), in the batch's order."""
    datasets = list(batch["dataset"])
    starts = [i for i, name in enumerate(datasets) if i == 0 or name != datasets[i - 1]]
    if len(starts) == 1:
        return [batch]
    ends = [*starts[1:], len(datasets)]
    runs = []
    for start, end in zip(starts, ends, strict=True):
        keep = torch.zeros(len(datasets), dtype=torch.bool)
        keep[start:end] = True
        runs.append(select(batch, keep))
    return runs


def batch_size(batch: dict[str, Any]) -> int:
    """Number of samples in a batch."""
    return int(batch["label"].shape[0]) if "label" in batch else len(batch["image"])


__all__ = ["batch_size", "dataset_runs", "select", "split_valid"]
