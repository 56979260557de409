"""A training data order that depends only on (seed, epoch) and resumes mid-epoch where it stopped.

Lightning 2.6 restores a mid-epoch checkpoint by counting the batches already done, but it restarts the
dataloader's iterator: with a plain ``shuffle=True`` loader the resumed epoch draws a *new* permutation and replays
its first batches, so some samples are seen twice and others never. Lightning saves and restores a loader only if
the loader itself has ``state_dict``/``load_state_dict`` (``lightning.fabric.utilities.types._Stateful``), called
when a checkpoint is written and right before the resumed epoch's iterator is created.

:class:`ResumableDataLoader` is such a loader: its state is the epoch and the number of batches handed out in it,
and :class:`EpochSampler` turns that state back into the same remaining indices. The permutation of an epoch is
``randperm(n, seed + epoch)`` (PyTorch's ``DistributedSampler``), never the global random state, so it is the same
in an uninterrupted and a resumed run, and for any number of processes: process ``r`` of ``W`` takes positions
``r, r + W, ...``, so one process with batch ``2B`` sees the union of two processes' batches ``B``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def shuffle_seed() -> int:
    """The seed of the data order: ``seed_everything``'s seed (``PL_GLOBAL_SEED``), else 0, as Lightning's DDP."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSampler(DistributedSampler):
    """Indices of one process for one epoch, from ``(seed, epoch)`` only, optionally skipping a resumed prefix.

    A :class:`~torch.utils.data.distributed.DistributedSampler` (so Lightning never swaps it for its own under DDP)
    that also works without a process group: ``num_replicas`` and ``rank`` are given explicitly.

    Args:
        dataset: The dataset to index.
        num_replicas: Number of processes.
        rank: This process's rank.
        shuffle: Permute per epoch; ``False`` keeps the dataset order.
        seed: Base seed of the permutations.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.resume_at: tuple[int, int] | None = None

    def resume(self, epoch: int, samples: int) -> None:
        """Skip the first ``samples`` indices of this process the next time ``epoch`` is iterated."""
        self.resume_at = (epoch, samples)

    def pending_skip(self) -> int:
        """How many leading indices the next iteration of the current epoch skips."""
        if self.resume_at is None or self.resume_at[0] != self.epoch:
            return 0
        return self.resume_at[1]

    def __iter__(self) -> Iterator[int]:
        skip = self.pending_skip()
        self.resume_at = None  # one resumed pass only: later epochs (and re-iterations) start from the beginning
        return itertools.islice(super().__iter__(), skip, None)


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position in the epoch goes into checkpoints.

    The state counts batches handed to the consumer (not indices taken by workers, which read ahead), so it is
    exact with any ``num_workers``. Lightning does not prefetch from loaders with a length, so the count at
    checkpoint time is the number of batches trained on. Worker seeds come from this loader's own generator,
    re-seeded per epoch, so creating an iterator never consumes the global random state that training draws from.
    """

    sampler: EpochSampler

    def __init__(self, dataset: Dataset, sampler: EpochSampler, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.batches_done = 0

    def __iter__(self) -> Iterator[Any]:
        batch_size = self.batch_size or 1
        self.batches_done = self.sampler.pending_skip() // batch_size
        self.generator.manual_seed(self.sampler.seed + self.sampler.epoch)
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and batches done in it (read by Lightning when it writes a checkpoint)."""
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done, "batch_size": self.batch_size or 1}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch after its done batches (Lightning calls this before iterating on resume)."""
        self.sampler.resume(state["epoch"], state["batches_done"] * state["batch_size"])


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    trainer: Any | None = None,
    **kwargs: Any,
) -> ResumableDataLoader:
    """A :class:`ResumableDataLoader` for this process of ``trainer`` (one process without a trainer).

    Args:
        dataset: The dataset.
        batch_size: Batch size per process.
        shuffle: Permute per epoch (from :func:`shuffle_seed` and the epoch).
        trainer: The running Lightning trainer, for the world size and this process's rank.
        kwargs: Further DataLoader options (``num_workers``, ``persistent_workers``, ...).
    """
    replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = EpochSampler(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=shuffle_seed())
    return ResumableDataLoader(dataset, sampler=sampler, batch_size=batch_size, **kwargs)
