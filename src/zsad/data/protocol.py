"""Cross-dataset protocols: which benchmark(s) train the prompts and which are evaluated zero-shot.

The convention of every ZSAD paper: the prompts train on the *test split* of an auxiliary dataset (it has masks),
then every other dataset is evaluated. Presets in ``configs/protocol/``:

- ``mvtec_to_all``: train on MVTec AD, test on every other benchmark;
- ``visa_to_mvtec``: train on VisA, test on MVTec AD.

An auxiliary source that overlaps a target (same benchmark and a shared category, or the same folder) is
refused unless ``allow_overlap`` is set: several published repositories leaked test images into training this way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zsad.data.datamodule import ZSADDataModule
from zsad.data.datasets.base import BadImagePolicy, SampleRecord
from zsad.data.datasets.benchmark import Benchmark
from zsad.errors import ConfigError
from zsad.registry import DATAMODULES, DATASETS


@dataclass
class DataSource:
    """Some categories of one benchmark.

    Attributes:
        dataset: Registered benchmark name (``zsad list`` shows them), e.g. ``"mvtec"``.
        root: Folder the benchmark was unpacked into; ``None`` only in records of where a checkpoint was trained
            (a released official file names the benchmark, not a folder).
        categories: Categories to use; ``None`` for all on disk.
        split: Split to read (auxiliary data conventionally uses ``"test"``).
    """

    dataset: str
    root: str | None
    categories: list[str] | None = None
    split: str = "test"

    def benchmark(self) -> Benchmark:
        """The reader for this source."""
        return DATASETS.get(self.dataset)(self.root)

    def resolved_categories(self) -> list[str]:
        """``categories``, or every category on disk."""
        return list(self.categories) if self.categories is not None else self.benchmark().categories()

    def records(self) -> list[SampleRecord]:
        """Every sample of the source, then the files of its folders that are not read (listed as skipped)."""
        reader = self.benchmark()
        categories = self.resolved_categories()
        records = [r for c in categories for r in reader.records(c, self.split)]
        return records + [r for c in categories for r in reader.unread(c, self.split)]


def find_overlaps(aux: list[DataSource], targets: list[DataSource]) -> list[str]:
    """Human-readable descriptions of every aux/target overlap: the same benchmark or folder, a shared category.

    A source whose categories are ``None`` and cannot be listed (no root) counts as holding every category.
    """
    overlaps = []
    for a in aux:
        for t in targets:
            same_folder = a.root is not None and t.root is not None and _same_folder(a.root, t.root)
            if a.dataset != t.dataset and not same_folder:
                continue
            if a.categories is None and a.root is None:
                shared = t.resolved_categories()
            else:
                shared = sorted(set(a.resolved_categories()) & set(t.resolved_categories()))
            if shared:
                trained_on = f"aux '{a.root}'" if a.root is not None else "aux: its training set"
                overlaps.append(f"{a.dataset} categories {shared} ({trained_on}, target '{t.root}')")
    return overlaps


def _same_folder(first: str, second: str) -> bool:
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


@DATAMODULES.register("protocol")
class ProtocolDataModule(ZSADDataModule):
    """Train on auxiliary benchmark(s), evaluate target benchmark(s): the cross-dataset ZSAD protocol.

    Args:
        aux: Sources whose samples train the prompts.
        targets: Sources evaluated zero-shot, each category separately.
        name: Protocol name written into results (e.g. ``"mvtec_to_all"``).
        allow_overlap: Permit aux/target overlap (leaks test data into training; refused by default).
        image_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        eval_batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        num_workers: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        on_bad_image: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        interpolation: See :class:`~zsad.data.datamodule.ZSADDataModule`.
    """

    def __init__(
        self,
        aux: list[DataSource],
        targets: list[DataSource],
        name: str = "custom",
        allow_overlap: bool = False,
        image_size: int = 518,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        on_bad_image: BadImagePolicy = "error",
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(image_size, batch_size, eval_batch_size, num_workers, 0, on_bad_image, interpolation)
        self.aux = [s if isinstance(s, DataSource) else DataSource(**s) for s in aux]
        self.targets = [s if isinstance(s, DataSource) else DataSource(**s) for s in targets]
        self.name = name
        self.allow_overlap = allow_overlap
        for source in [*self.aux, *self.targets]:
            DATASETS.get(source.dataset)  # unknown names fail now, with the valid ones listed
        if not self.targets:
            raise ConfigError("The protocol has no targets: list at least one data source under `targets`.")

    def prepare_data(self) -> None:
        """Let generated benchmarks (zsad's synthetic data) create themselves."""
        for source in [*self.aux, *self.targets]:
            source.benchmark().prepare()

    def check_overlap(self) -> None:
        """Refuse aux/target overlap unless ``allow_overlap``."""
        overlaps = find_overlaps(self.aux, self.targets)
        if overlaps and not self.allow_overlap:
            raise ConfigError(
                f"Protocol '{self.name}' trains on data it also evaluates: {'; '.join(overlaps)}. This leaks test "
                f"images into training. Remove the overlap, or set allow_overlap: true to do it on purpose."
            )

    def aux_records(self) -> list[SampleRecord]:
        """Samples of every auxiliary source."""
        self.check_overlap()
        return [r for source in self.aux for r in source.records()]

    def target_records(self) -> list[SampleRecord]:
        """Samples of every target source."""
        self.check_overlap()
        return [r for source in self.targets for r in source.records()]

    def protocol(self) -> dict[str, Any]:
        """The protocol as plain data."""
        return {
            "name": self.name,
            "aux": [asdict(s) for s in self.aux],
            "targets": [asdict(s) for s in self.targets],
            "allow_overlap": self.allow_overlap,
        }
