"""DAGM 2007 (Weakly Supervised Learning for Industrial Optical Inspection): 10 synthetic texture classes.

::

    <root>/Class1 ... Class10/{Train,Test}/<id>.PNG
    <root>/ClassN/{Train,Test}/Label/<id>_label.PNG
    <root>/ClassN/{Train,Test}/Label/Labels.txt

``Labels.txt`` is a whitespace table after one header line: index, flag (1 = defective), image name, 0, label
image name. The category is the class folder (``Class1`` ...); the splits are ``train`` (``Train``) and ``test``
(``Test``). An image is anomalous iff its flag is 1 or its label file exists (defect type ``"defect"``); images
absent from the table fall back to the label file. The label masks are coarse ellipses around each defect.
Download: https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection

Importing this module registers ``dagm`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, images_by_stem
from zsad.data.datasets.mvtec_family import missing_mask, visible_images
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

CLASS_FOLDER = re.compile(r"Class(\d+)")
SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
DEFECT = "defect"


def read_labels(path: Path) -> dict[str, tuple[bool, str]]:
    """``image name -> (defective, label file name)`` from a ``Labels.txt``; {} if the file is absent.

    Raises:
        DataError: A row whose flag is not 0 or 1.
    """
    if not path.is_file():
        return {}
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()[1:], start=2):
        fields = line.split()
        if len(fields) < 3:
            continue
        if fields[1] not in ("0", "1"):
            raise DataError(
                f"Line {number} of '{path}' has flag '{fields[1]}'; expected 0 (normal) or 1 (defective) in the "
                f"second column (index, flag, image, 0, label)."
            )
        table[fields[2]] = (fields[1] == "1", fields[4] if len(fields) > 4 else "")
    return table


@DATASETS.register("dagm")
class DAGM2007(Benchmark):
    """DAGM 2007: 10 synthetic texture classes (Class1..Class10) with coarse elliptical defect masks."""

    name = "dagm"
    title = "DAGM 2007"
    download = "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection"
    layout = (
        "<root>/ClassN/{Train,Test}/<id>.PNG with masks <root>/ClassN/{Train,Test}/Label/<id>_label.PNG and the "
        "table <root>/ClassN/{Train,Test}/Label/Labels.txt"
    )
    mask_threshold = 0
    splits = ("train", "test")
    known_categories: ClassVar[tuple[str, ...]] = tuple(f"Class{i}" for i in range(1, 11))

    def find_categories(self) -> list[str]:
        """``ClassN`` folders with a ``Train/`` or ``Test/`` subfolder, in numeric order."""
        found = [
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and CLASS_FOLDER.fullmatch(p.name) and any((p / s).is_dir() for s in SPLIT_FOLDERS.values())
        ]
        return sorted(found, key=lambda name: int(name[len("Class") :]))

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Images of ``<root>/<category>/<Train|Test>``, labelled by ``Label/Labels.txt``.

        Raises:
            DataError: A defective image without a label mask, or a malformed ``Labels.txt``.
        """
        split_dir = self.root / category / SPLIT_FOLDERS[split]
        label_dir = split_dir / "Label"
        table = read_labels(label_dir / "Labels.txt")
        label_files = images_by_stem(label_dir)
        records = []
        for image in visible_images(split_dir):
            flagged, label_name = table.get(image.name, (False, ""))
            named = label_dir / label_name if label_name else None
            mask = named if named is not None and named.is_file() else label_files.get(f"{image.stem}_label")
            if not (flagged or mask is not None):
                records.append(SampleRecord(image, 0, category, NORMAL, None, self.name))
                continue
            if mask is None and self.pixel_level:
                raise missing_mask(self.title, image, named or label_dir / f"{image.stem}_label.PNG")
            records.append(SampleRecord(image, 1, category, DEFECT, mask, self.name))
        return records


@DATAMODULES.register("dagm")
class DAGMDataModule(BenchmarkDataModule):
    """DAGM 2007 texture classes: aux categories train, target categories are tested."""

    benchmark = DAGM2007
