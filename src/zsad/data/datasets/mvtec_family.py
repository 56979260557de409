"""Benchmarks stored in the MVTec AD layout or close to it: MVTec 3D-AD (RGB only), MPDD and DTD-Synthetic.

MPDD and DTD-Synthetic use the MVTec AD layout unchanged (:mod:`zsad.data.datasets.mvtec`). MVTec 3D-AD has two
layouts; the reader checks each category to see which one is on disk:

- official release: ``<root>/<category>/{train,validation,test}/<good|defect>/rgb/<id>.png`` with masks
  ``<root>/<category>/test/<defect>/gt/<id>.png`` (the ``xyz/`` point clouds are ignored);
- MVTec-style repackaging: ``<root>/<category>/test/<defect>/<id>.png`` with masks
  ``<root>/<category>/ground_truth/<defect>/<id>_mask.png``.

This module also holds small helpers that the other industrial readers share.

Importing this module registers ``mvtec3d``, ``mpdd`` and ``dtd`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, images_by_stem, list_images
from zsad.data.datasets.mvtec import MVTecLayout, mvtec_records
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS


def visible_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` sorted by name (see :func:`list_images`), or ``[]`` if the folder is absent."""
    return list_images(folder) if folder.is_dir() else []


def missing_mask(title: str, image: Path, expected: Path | str) -> DataError:
    """The error for an anomalous image of a pixel-level benchmark whose mask is missing."""
    return DataError(
        f"Anomalous image '{image}' of {title} has no mask at '{expected}'. Restore the mask from the dataset's "
        f"download, or remove the image."
    )


def category_folders(root: Path) -> list[str]:
    """Folders under ``root`` that have a ``test/`` subfolder, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "test").is_dir())


class MVTecFamily(MVTecLayout):
    """The MVTec AD layout under another benchmark's name: errors name that benchmark and its download page."""

    def find_categories(self) -> list[str]:
        """Folders with a ``test/`` subfolder (none lets the base class name this benchmark's layout)."""
        return category_folders(self.root)


@DATASETS.register("mvtec3d")
class MVTec3DAD(Benchmark):
    """MVTec 3D-AD, RGB images only: 10 industrial categories with pixel masks (CC BY-NC-SA 4.0).

    Reads the official release (``<category>/<split>/<good|defect>/rgb/<id>.png`` with masks in ``gt/``) or the
    MVTec-style repackaging (``test/<defect>/<id>.png``, ``ground_truth/<defect>/<id>_mask.png``), detected per
    category. Masks hold 0 and 253/254/255, so any value above 0 is anomalous. The official ``gt/`` masks of good
    images (all zero) are not used: normal samples have no mask.
    """

    name = "mvtec3d"
    title = "MVTec 3D-AD (RGB)"
    download = "https://www.mvtec.com/company/research/datasets/mvtec-3d-ad"
    layout = (
        "<root>/<category>/{train,validation,test}/<good|defect>/rgb/<id>.png with masks "
        "<root>/<category>/test/<defect>/gt/<id>.png (official), or <root>/<category>/test/<defect>/<id>.png with "
        "masks <root>/<category>/ground_truth/<defect>/<id>_mask.png (MVTec-style)"
    )
    mask_threshold = 0
    splits = ("train", "validation", "test")
    known_categories: ClassVar[tuple[str, ...]] = (
        "bagel", "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire",
    )  # fmt: skip

    def find_categories(self) -> list[str]:
        """Folders with a ``test/`` subfolder."""
        return category_folders(self.root)

    def is_official(self, category: str) -> bool:
        """Whether the category is in the official layout (its test defect folders hold ``rgb/``)."""
        test = self.root / category / "test"
        return any((d / "rgb").is_dir() for d in test.iterdir() if d.is_dir())

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Samples of one split, from whichever layout the category is in."""
        if not self.is_official(category):
            return mvtec_records(self.root, category, split, dataset=self.name, require_masks=self.pixel_level)
        split_dir = self.root / category / split
        if not split_dir.is_dir():
            return []
        records = []
        for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            masks = {} if defect == NORMAL else images_by_stem(defect_dir / "gt")
            for image in visible_images(defect_dir / "rgb"):
                if defect == NORMAL:
                    records.append(SampleRecord(image, 0, category, NORMAL, None, self.name))
                    continue
                mask = masks.get(image.stem)
                if mask is None and self.pixel_level:
                    raise missing_mask(self.title, image, defect_dir / "gt" / f"{image.stem}.png")
                records.append(SampleRecord(image, 1, category, defect, mask, self.name))
        return records


@DATASETS.register("mpdd")
class MPDD(MVTecFamily):
    """MPDD (Metal Parts Defect Detection): 6 categories of painted metal parts, in the MVTec AD layout."""

    name = "mpdd"
    title = "MPDD"
    download = "https://github.com/stepanje/MPDD"
    known_categories: ClassVar[tuple[str, ...]] = (
        "bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes",
    )  # fmt: skip


@DATASETS.register("dtd")
class DTDSynthetic(MVTecFamily):
    """DTD-Synthetic: 12 DTD textures with synthetic defects (Aota et al., WACV 2023), in the MVTec AD layout."""

    name = "dtd"
    title = "DTD-Synthetic"
    download = "https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1"
    known_categories: ClassVar[tuple[str, ...]] = (
        "Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037", "Stratified_154",
        "Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127",
    )  # fmt: skip


@DATAMODULES.register("mvtec3d")
class MVTec3DDataModule(BenchmarkDataModule):
    """MVTec 3D-AD RGB images (official or MVTec-style layout): aux categories train, target categories are tested."""

    benchmark = MVTec3DAD


@DATAMODULES.register("mpdd")
class MPDDDataModule(BenchmarkDataModule):
    """MPDD metal parts: aux categories train, target categories are tested."""

    benchmark = MPDD


@DATAMODULES.register("dtd")
class DTDSyntheticDataModule(BenchmarkDataModule):
    """DTD-Synthetic textures: aux categories train, target categories are tested."""

    benchmark = DTDSynthetic
