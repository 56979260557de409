"""KolektorSDD (Kolektor Surface-Defect Dataset, v1; Tabernik et al. 2019): commutator surfaces with pixel labels.

::

    <root>/kos01/Part0.jpg ... Part7.jpg
    <root>/kos01/Part0_label.bmp ... Part7_label.bmp
    ...
    <root>/kos50/...

Every image has a label mask of the same stem plus ``_label``; an image is anomalous iff its label has a pixel
above 0 (defect type ``"defect"``). The 50 physical items ``kosNN`` are read as **one category, "ksdd"**, with a
``test`` split only, as the ZSAD literature evaluates it; deciding the labels opens every label file once.
Download: https://www.vicos.si/resources/kolektorsdd/ (CC BY-NC-SA 4.0).

Importing this module registers ``ksdd`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, images_by_stem
from zsad.data.datasets.mvtec_family import visible_images
from zsad.data.transforms import load_mask
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

CATEGORY = "ksdd"
DEFECT = "defect"
LABEL_SUFFIX = "_label"


@DATASETS.register("ksdd")
class KolektorSDD(Benchmark):
    """KolektorSDD (v1): 50 commutators, one category "ksdd"; an image is anomalous iff its label mask is not empty."""

    name = "ksdd"
    title = "KolektorSDD"
    download = "https://www.vicos.si/resources/kolektorsdd/"
    layout = "<root>/kos01 ... kos50/PartN.jpg with label masks <root>/kosNN/PartN_label.bmp (one category 'ksdd')"
    mask_threshold = 0
    splits = ("test",)
    known_categories: ClassVar[tuple[str, ...]] = (CATEGORY,)

    def item_folders(self) -> list[Path]:
        """The ``kosNN`` folders, sorted."""
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.lower().startswith("kos"))

    def find_categories(self) -> list[str]:
        """``["ksdd"]`` when any ``kosNN`` folder is present."""
        return [CATEGORY] if self.item_folders() else []

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Every image of every item, labelled by its label mask.

        Raises:
            DataError: An image without a label mask (the label decides whether it is anomalous), or an unreadable
                label.
        """
        records = []
        for folder in self.item_folders():
            labels = images_by_stem(folder)
            for image in visible_images(folder):
                if image.stem.endswith(LABEL_SUFFIX):
                    continue
                label = labels.get(image.stem + LABEL_SUFFIX)
                if label is None:
                    raise DataError(
                        f"KolektorSDD image '{image}' has no label mask at "
                        f"'{folder / (image.stem + LABEL_SUFFIX + '.bmp')}'; the label decides whether the image is "
                        f"anomalous. Restore it from the download ({self.download}) or remove the image."
                    )
                anomalous = load_mask(label, self.mask_threshold).getbbox() is not None
                if anomalous:
                    records.append(SampleRecord(image, 1, category, DEFECT, label, self.name))
                else:
                    records.append(SampleRecord(image, 0, category, NORMAL, None, self.name))
        return records


@DATAMODULES.register("ksdd")
class KolektorSDDDataModule(BenchmarkDataModule):
    """KolektorSDD (v1) as its single category "ksdd" (test split only): evaluated zero-shot."""

    benchmark = KolektorSDD
