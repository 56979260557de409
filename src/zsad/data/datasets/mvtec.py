"""The MVTec AD folder layout, which several benchmarks and zsad's synthetic data share.

::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/<id>.png
    <root>/<category>/ground_truth/<defect>/<id>_mask.png

Download: https://www.mvtec.com/company/research/datasets/mvtec-ad (CC BY-NC-SA 4.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, images_by_stem, list_images
from zsad.errors import DataError
from zsad.registry import DATASETS

LAYOUT = (
    "<root>/<category>/{train,test}/<good|defect>/<image> with masks in "
    "<root>/<category>/ground_truth/<defect>/<id>_mask.png"
)


def mvtec_categories(root: str | Path) -> list[str]:
    """Category folders under ``root``.

    Raises:
        DataError: If ``root`` does not exist or holds no category.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Dataset root '{root}' does not exist. Expected the MVTec AD layout: {LAYOUT}.")
    categories = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "test").is_dir())
    if not categories:
        raise DataError(f"No category with a test/ folder under '{root}'. Expected the MVTec AD layout: {LAYOUT}.")
    return categories


def mvtec_records(
    root: str | Path, category: str, split: str = "test", dataset: str = "mvtec", require_masks: bool = True
) -> list[SampleRecord]:
    """All samples of one category and split.

    Raises:
        DataError: Unknown category (lists the valid ones), missing split folder, empty category, or an anomalous
            image without a mask when ``require_masks``.
    """
    root = Path(root)
    valid = mvtec_categories(root)
    if category not in valid:
        raise DataError(f"Unknown category '{category}' in '{root}'. Valid categories: {', '.join(valid)}.")
    split_dir = root / category / split
    if not split_dir.is_dir():
        splits = sorted(repr(p.name) for p in (root / category).iterdir() if p.is_dir() and p.name != "ground_truth")
        raise DataError(
            f"Split '{split}' of category '{category}' not found: '{split_dir}' does not exist "
            f"(splits present: {', '.join(splits)}). Expected the MVTec AD layout: {LAYOUT}."
        )
    records = []
    for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        masks = {} if defect == NORMAL else images_by_stem(root / category / "ground_truth" / defect)
        for image in list_images(defect_dir):
            mask = masks.get(f"{image.stem}_mask")
            if defect != NORMAL and mask is None and require_masks:
                raise DataError(
                    f"Anomalous image '{image}' has no mask at "
                    f"'{root / category / 'ground_truth' / defect / (image.stem + '_mask.png')}'. "
                    f"Add the mask, or load the dataset with require_masks=False for image-level metrics only."
                )
            label = 0 if defect == NORMAL else 1
            records.append(SampleRecord(image, label, category, defect, mask, dataset))
    if not records:
        raise DataError(
            f"Category '{category}' has no images under '{split_dir}'. Images belong in one folder per defect type "
            f"(good/ for normal images); expected the MVTec AD layout: {LAYOUT}."
        )
    return records


class MVTecLayout(Benchmark):
    """Any benchmark stored in the MVTec AD layout (MVTec AD, MPDD, DTD-Synthetic, zsad's synthetic data)."""

    layout = LAYOUT
    splits = ("train", "test")

    def find_categories(self) -> list[str]:
        """Folders with a ``test/`` subfolder."""
        return mvtec_categories(self.root)

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Samples of ``<root>/<category>/<split>``."""
        return mvtec_records(self.root, category, split, dataset=self.name, require_masks=self.pixel_level)


@DATASETS.register("mvtec")
class MVTecAD(MVTecLayout):
    """MVTec AD: 15 industrial categories, pixel masks (CC BY-NC-SA 4.0)."""

    name = "mvtec"
    title = "MVTec AD"
    download = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
    known_categories: ClassVar[tuple[str, ...]] = (
        "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
        "tile", "toothbrush", "transistor", "wood", "zipper",
    )  # fmt: skip
