"""VisA (Visual Anomaly dataset, Zou et al., ECCV 2022), read through its official split file.

::

    <root>/split_csv/1cls.csv                      columns object,split,label,image,mask
    <root>/<object>/Data/Images/Normal/<id>.JPG
    <root>/<object>/Data/Images/Anomaly/<id>.JPG
    <root>/<object>/Data/Masks/Anomaly/<id>.png

Paths in the CSV are relative to ``<root>``; ``label`` is ``normal`` or ``anomaly``; ``mask`` is empty for normal
images. The CSV names no defect types, so every anomalous sample has defect type ``"anomaly"``. ``1cls.csv`` is
the one-class split of the VisA repository (``split_csv/`` in https://github.com/amazon-science/spot-diff); the
ZSAD literature uses its test split (methods.md §10). The images come from
https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar (CC BY 4.0).

Importing this module registers ``visa`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.datasets.mvtec_family import missing_mask
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

COLUMNS = ("object", "split", "label", "image", "mask")
ANOMALY = "anomaly"


@DATASETS.register("visa")
class VisA(Benchmark):
    """VisA: 12 industrial categories with pixel masks, split by the official ``split_csv/1cls.csv``."""

    name = "visa"
    title = "VisA"
    download = "https://github.com/amazon-science/spot-diff"
    layout = (
        "<root>/split_csv/1cls.csv with columns object,split,label,image,mask (paths relative to <root>, e.g. "
        "candle/Data/Images/Anomaly/000.JPG and candle/Data/Masks/Anomaly/000.png)"
    )
    mask_threshold = 0
    splits = ("train", "test")
    split_file: ClassVar[str] = "split_csv/1cls.csv"
    known_categories: ClassVar[tuple[str, ...]] = (
        "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
        "pcb4", "pipe_fryum",
    )  # fmt: skip

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._rows: list[tuple[int, dict[str, str]]] | None = None

    @property
    def csv_path(self) -> Path:
        """The split file."""
        return self.root / self.split_file

    def rows(self) -> list[tuple[int, dict[str, str]]]:
        """``(line number, row)`` for every row of the split file, read once.

        Raises:
            DataError: Missing split file or missing columns.
        """
        if self._rows is not None:
            return self._rows
        path = self.csv_path
        if not path.is_file():
            raise DataError(
                f"VisA split file '{path}' does not exist. Copy split_csv/1cls.csv from the VisA repository "
                f"({self.download}, folder split_csv) to '{path}'. {self.describe_layout()}"
            )
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            absent = [c for c in COLUMNS if c not in header]
            if absent:
                raise DataError(
                    f"VisA split file '{path}' lacks the column(s) {', '.join(absent)}; its header is "
                    f"{','.join(header) or '(empty)'}. Expected the columns {','.join(COLUMNS)}."
                )
            self._rows = [
                (reader.line_num, {name: value.strip() for name, value in zip(header, row, strict=False)})
                for row in reader
                if any(cell.strip() for cell in row)
            ]
        return self._rows

    def find_categories(self) -> list[str]:
        """The distinct values of the CSV's ``object`` column."""
        return sorted({row["object"] for _, row in self.rows() if row.get("object")})

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """The CSV rows of one object and split.

        Raises:
            DataError: An unknown label, an image missing on disk, or an anomalous image without a mask.
        """
        records = []
        missing: list[Path] = []
        for line, row in self.rows():
            if row.get("object") != category or row.get("split") != split:
                continue
            label = row.get("label", "")
            if label not in ("normal", ANOMALY):
                raise DataError(
                    f"Line {line} of '{self.csv_path}' has label '{label}'; VisA labels are 'normal' or 'anomaly'."
                )
            image = self.root / row.get("image", "")
            if not image.is_file():
                missing.append(image)
                continue
            if label == "normal":
                records.append(SampleRecord(image, 0, category, NORMAL, None, self.name))
                continue
            mask = self.root / row["mask"] if row.get("mask") else None
            mask_on_disk = mask if mask is not None and mask.is_file() else None
            if mask_on_disk is None and self.pixel_level:
                raise missing_mask(self.title, image, mask or f"(no mask listed on line {line} of '{self.csv_path}')")
            records.append(SampleRecord(image, 1, category, ANOMALY, mask_on_disk, self.name))
        if missing:
            raise DataError(
                f"{len(missing)} image(s) of VisA/{category} listed in '{self.csv_path}' are missing on disk, e.g. "
                f"'{missing[0]}'. Unpack the VisA archive into '{self.root}' (the CSV's paths are relative to it)."
            )
        return records


@DATAMODULES.register("visa")
class VisADataModule(BenchmarkDataModule):
    """VisA, split by ``split_csv/1cls.csv``: aux categories train, target categories are tested."""

    benchmark = VisA
