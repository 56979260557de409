"""Small Python objects across the processes of a DDP run (a no-op in a single process).

Lower layers (the metrics) and the workflow both gather lists of paths, skipped files or random states this way;
tensors go through torchmetrics' own synchronisation instead.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def in_process_group() -> bool:
    """Whether a DDP process group is running in this process."""
    return dist.is_available() and dist.is_initialized()


def gather_from_processes(value: Any) -> list[Any]:
    """``value`` of every process, in rank order (just ``[value]`` without a process group).

    Every process must call it: it is a collective.
    """
    if not in_process_group():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def concatenate_from_processes(local: list[T]) -> list[T]:
    """The lists of every process, concatenated in rank order (a collective, see :func:`gather_from_processes`)."""
    return [item for part in gather_from_processes(local) for item in (part or [])]
