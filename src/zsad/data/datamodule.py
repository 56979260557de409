"""LightningDataModules: auxiliary data trains the prompts, target categories are evaluated zero-shot."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from zsad.data.datasets.base import AnomalyDataset, BadImagePolicy, SampleRecord
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.datasets.mvtec import MVTecAD
from zsad.data.resumable import resumable_loader
from zsad.data.transforms import ImageTransform
from zsad.distributed import in_process_group
from zsad.errors import ConfigError
from zsad.registry import DATAMODULES

BAD_IMAGE_POLICIES = ("error", "skip")
MAX_MASK_THRESHOLD = 254
"""Mask values above the threshold are anomalous, so 255 would leave every 8-bit mask empty."""


class ZSADDataModule(L.LightningDataModule, ABC):
    """Base datamodule: ``train`` serves the auxiliary records, ``test``/``validate``/``predict`` the targets.

    Zero-shot evaluation does no model selection, so ``validate`` simply evaluates the targets too.

    Args:
        image_size: Square side images and masks are resized to; must equal the backbone's.
        batch_size: Training batch size (8 in every reference method).
        eval_batch_size: Evaluation batch size; defaults to ``batch_size``.
        num_workers: DataLoader workers; never more than the CPUs this process may use (more would only compete
            for them, and torch warns).
        mask_threshold: Source mask values above this are anomalous, for records that set no threshold.
        on_bad_image: ``"error"`` stops at an unreadable image or a mask of the wrong size; ``"skip"`` drops the
            sample and lists it in the results.
        interpolation: Image resize interpolation, ``"bicubic"`` (the reference preprocessing) or ``"bilinear"``.

    Raises:
        ConfigError: An option out of range (see :func:`check_loader_options`) or an unknown interpolation.
    """

    def __init__(
        self,
        image_size: int = 518,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        mask_threshold: int = 0,
        on_bad_image: BadImagePolicy = "error",
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        check_loader_options(image_size, batch_size, eval_batch_size, num_workers, mask_threshold, on_bad_image)
        ImageTransform(image_size, interpolation)  # an unknown interpolation fails here, not at the first batch
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.mask_threshold = mask_threshold
        self.on_bad_image = on_bad_image
        self.interpolation = interpolation

    @abstractmethod
    def aux_records(self) -> list[SampleRecord]:
        """Samples that train the prompts (records with a ``problem`` are files that are not read)."""

    @abstractmethod
    def target_records(self) -> list[SampleRecord]:
        """Samples evaluated zero-shot (records with a ``problem`` are files that are not read, listed as skipped)."""

    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """Which data trains and which is evaluated, as plain data for results files."""

    def _loader(self, records: list[SampleRecord], batch_size: int, shuffle: bool) -> DataLoader:
        dataset = AnomalyDataset(
            records, self.image_size, self.mask_threshold, self.interpolation, on_bad_image=self.on_bad_image
        )
        workers = min(self.num_workers, usable_cpus())
        options = {"batch_size": batch_size, "num_workers": workers, "persistent_workers": workers > 0}
        options["multiprocessing_context"] = worker_start_method(workers)
        if shuffle:  # training: an order from (seed, epoch) that resumes mid-epoch (zsad.data.resumable)
            return resumable_loader(dataset, shuffle=True, trainer=self.trainer, **options)
        return DataLoader(dataset, shuffle=False, **options)

    def train_dataloader(self) -> DataLoader:
        """Shuffled auxiliary samples.

        Raises:
            ConfigError: If there are no auxiliary samples to train on, or none of them is anomalous (see
                :func:`check_training_records`).
        """
        records = self.aux_records()
        if not records:
            raise ConfigError(
                f"{type(self).__name__} has no auxiliary (training) samples: aux_categories is empty. List the "
                f"categories that train the prompts in aux_categories, or only test/validate a training-free method."
            )
        check_training_records(records)
        return self._loader(records, self.batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        """Target samples in a fixed order."""
        return self._loader(self.target_records(), self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader | list:
        """Targets for ``validate``; nothing while fitting, since zero-shot training does no model selection."""
        if self.trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            return []
        return self.test_dataloader()

    predict_dataloader = test_dataloader


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform tells it, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_start_method(workers: int) -> str | None:
    """How loader workers start: from a fork-server while a DDP process group runs, else torch's default.

    A worker forked from a DDP process can hang for good right after the fork: a process-group thread (gloo's
    run loop) may hold the interpreter's thread-state lock at that moment, and the child then waits on it forever
    in Python's after-fork clean-up. This was seen in a 2-process ``zsad test`` on CPython 3.11: the worker stuck
    in ``PyOS_AfterFork_Child``, its rank waiting on the worker, the other rank on the collective. A fork-server
    forks workers from a clean single-threaded process instead; the price is each worker importing torch once
    (workers are persistent, so once per loader).
    """
    if workers == 0 or not in_process_group() or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    return "forkserver"


def check_loader_options(
    image_size: int,
    batch_size: int,
    eval_batch_size: int | None,
    num_workers: int,
    mask_threshold: int,
    on_bad_image: str,
) -> None:
    """Refuse loader settings that would fail deep inside torch or silently change the data.

    Raises:
        ConfigError: A size or batch size below 1, negative workers, a mask threshold outside 0..254 (255 and above
            would make every mask empty, below 0 every pixel anomalous), or an unknown ``on_bad_image``.
    """
    positive = {"image_size": image_size, "batch_size": batch_size}
    if eval_batch_size is not None:
        positive["eval_batch_size"] = eval_batch_size
    for name, value in positive.items():
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer (e.g. {name}: 8).")
    if not _is_int(num_workers) or num_workers < 0:
        raise ConfigError(f"num_workers={num_workers!r} must be 0 (load in the main process) or a positive integer.")
    if not _is_int(mask_threshold) or not 0 <= mask_threshold <= MAX_MASK_THRESHOLD:
        raise ConfigError(
            f"mask_threshold={mask_threshold!r} must be an integer in 0..{MAX_MASK_THRESHOLD}: mask values above it "
            f"are anomalous (0 for PNG masks, 127 for JPEG masks)."
        )
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"on_bad_image={on_bad_image!r} is not one of {', '.join(map(repr, BAD_IMAGE_POLICIES))}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_training_records(records: list[SampleRecord]) -> None:
    """Refuse auxiliary data without anomalies, and warn about categories that cannot teach them.

    Every zsad loss that learns what is anomalous (``image_ce``, ``focal``, ``dice``, ``multiclass_focal``,
    ``center``) compares normal with anomalous images or pixels; a training set of normal images only (e.g. the
    ``train`` split of an MVTec-style benchmark) would teach the prompts that nothing is anomalous.

    Raises:
        ConfigError: If no auxiliary file can be read, or no auxiliary image is anomalous; the message names the
            categories and the split to use.
    """
    readable = [r for r in records if not r.problem]
    if not readable:
        raise ConfigError(
            f"None of the {len(records)} auxiliary files can be read, e.g. '{records[0].path}' ({records[0].problem})."
        )
    normal_only = sorted(_categories(readable) - _categories([r for r in readable if r.label]))
    if len(normal_only) == len(_categories(readable)):
        raise ConfigError(
            f"The auxiliary (training) data holds only normal images: {', '.join(normal_only)} "
            f"({len(readable)} images). The prompts learn from anomalous images and their masks: train on a split "
            f"with anomalies (aux_split: test, the ZSAD convention) or on other categories."
        )
    if normal_only:
        warnings.warn(
            f"Auxiliary categories {', '.join(normal_only)} hold only normal images: they teach the prompts nothing "
            f"about anomalies. Check their split (aux_split) or leave them out of aux_categories.",
            stacklevel=2,
        )
    without_masks = sorted(_categories([r for r in readable if r.label and r.mask_path is None]))
    if without_masks:
        warnings.warn(
            f"Anomalous auxiliary images of {', '.join(without_masks)} have no mask: pixel losses (focal, dice) "
            f"take every pixel of them as normal. Train on data with masks, or on image losses only.",
            stacklevel=2,
        )


def _categories(records: list[SampleRecord]) -> set[str]:
    return {f"{r.dataset}/{r.category}" if r.dataset else r.category for r in records}


class BenchmarkDataModule(ZSADDataModule):
    """One benchmark: some of its categories train the prompts, others are evaluated zero-shot.

    Subclasses only set ``benchmark`` (a :class:`~zsad.data.datasets.benchmark.Benchmark` class) and register
    themselves under the benchmark's name. For training on one benchmark and testing on others, use
    :class:`~zsad.data.protocol.ProtocolDataModule`.

    Args:
        root: Folder the benchmark was unpacked into.
        aux_categories: Categories whose ``aux_split`` trains the prompts; ``None`` or empty for none.
        target_categories: Categories evaluated on their test split; ``None`` for all.
        aux_split: Split used as auxiliary data (by convention the test split, which has masks).
        allow_overlap: Permit a category in both sets (leaks the test data into training; off by default).
        image_size: See :class:`ZSADDataModule`.
        batch_size: See :class:`ZSADDataModule`.
        eval_batch_size: See :class:`ZSADDataModule`.
        num_workers: See :class:`ZSADDataModule`.
        mask_threshold: Source mask values above this are anomalous; ``None`` uses the benchmark's convention.
        on_bad_image: See :class:`ZSADDataModule`.
        interpolation: See :class:`ZSADDataModule`.
    """

    benchmark: type[Benchmark]

    def __init__(
        self,
        root: str,
        aux_categories: Sequence[str] | None = None,
        target_categories: Sequence[str] | None = None,
        aux_split: str = "test",
        allow_overlap: bool = False,
        image_size: int = 518,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        mask_threshold: int | None = None,
        on_bad_image: BadImagePolicy = "error",
        interpolation: str = "bicubic",
    ) -> None:
        threshold = self.benchmark.mask_threshold if mask_threshold is None else mask_threshold
        super().__init__(image_size, batch_size, eval_batch_size, num_workers, threshold, on_bad_image, interpolation)
        self.root = Path(root)
        self.dataset = self.benchmark(self.root)
        self.aux_categories = list(aux_categories or [])
        self.target_categories = list(target_categories) if target_categories is not None else None
        self.aux_split = aux_split
        self.allow_overlap = allow_overlap

    def targets(self) -> list[str]:
        """Target categories (all categories on disk when not configured)."""
        return self.target_categories if self.target_categories is not None else self.dataset.categories()

    def check_overlap(self) -> None:
        """Refuse auxiliary categories that are also targets, unless ``allow_overlap``."""
        shared = sorted(set(self.aux_categories) & set(self.targets()))
        if shared and not self.allow_overlap:
            targets = "target_categories"
            if self.target_categories is None:
                targets += " (null: every category under root; list the targets explicitly to leave some out)"
            raise ConfigError(
                f"Categories {shared} of '{self.root}' are both in aux_categories (training) and in {targets} "
                f"(test), which leaks test images into training. Remove them from one list, or set allow_overlap: true."
            )

    def _read(self, categories: list[str], split: str) -> list[SampleRecord]:
        """Samples of the categories, then the files of their folders that are not read (listed as skipped)."""
        records = [r for c in categories for r in self.dataset.records(c, split)]
        records += [r for c in categories for r in self.dataset.unread(c, split)]
        if self.mask_threshold != self.benchmark.mask_threshold:  # an explicit override wins
            records = [replace(r, mask_threshold=self.mask_threshold) for r in records]
        return records

    def aux_records(self) -> list[SampleRecord]:
        """Auxiliary samples (``aux_split`` of ``aux_categories``)."""
        self.check_overlap()
        return self._read(self.aux_categories, self.aux_split)

    def target_records(self) -> list[SampleRecord]:
        """Target samples (test split of every target category)."""
        self.check_overlap()
        return self._read(self.targets(), "test")

    def protocol(self) -> dict[str, Any]:
        """Auxiliary and target categories of this one benchmark."""
        name = self.benchmark.name
        return {
            "name": f"{name}-within",
            "aux": [
                {"dataset": name, "root": str(self.root), "categories": self.aux_categories, "split": self.aux_split}
            ]
            if self.aux_categories
            else [],
            "targets": [
                {"dataset": name, "root": str(self.root), "categories": self.target_categories, "split": "test"}
            ],
            "allow_overlap": self.allow_overlap,
        }


@DATAMODULES.register("mvtec")
class MVTecDataModule(BenchmarkDataModule):
    """MVTec AD (or any data in its layout): aux categories train, target categories are tested."""

    benchmark = MVTecAD
