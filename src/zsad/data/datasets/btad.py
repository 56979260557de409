"""BTAD (beanTech Anomaly Detection, Mishra et al. 2021): three industrial products with pixel masks.

::

    <root>/{01,02,03}/train/ok/<id>.<ext>
    <root>/{01,02,03}/test/ok/<id>.<ext>
    <root>/{01,02,03}/test/ko/<id>.<ext>
    <root>/{01,02,03}/ground_truth/ko/<id>.<ext>     same stem as the image

``ok`` is normal and ``ko`` anomalous (defect type ``"ko"``: BTAD names no finer defect types). Product 01 images
are BMP and the others PNG; masks are matched by stem with any image suffix. The archive
http://avires.dimi.uniud.it/papers/btad/btad.zip unpacks into ``BTech_Dataset_transformed/``, which is the root.

Importing this module registers ``btad`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, images_by_stem
from zsad.data.datasets.mvtec_family import category_folders, missing_mask, visible_images
from zsad.registry import DATAMODULES, DATASETS

ANOMALOUS = "ko"


@DATASETS.register("btad")
class BTAD(Benchmark):
    """BTAD: 3 industrial products (01, 02, 03) with pixel masks; ``ok`` images are normal, ``ko`` anomalous."""

    name = "btad"
    title = "BTAD"
    download = "http://avires.dimi.uniud.it/papers/btad/btad.zip"
    layout = (
        "<root>/<01|02|03>/train/ok/<image>, <root>/<01|02|03>/test/{ok,ko}/<image> with masks "
        "<root>/<01|02|03>/ground_truth/ko/<image stem>.{png,bmp}"
    )
    mask_threshold = 0
    splits = ("train", "test")
    known_categories: ClassVar[tuple[str, ...]] = ("01", "02", "03")

    def find_categories(self) -> list[str]:
        """Product folders with a ``test/`` subfolder."""
        return category_folders(self.root)

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """``ok`` (normal) then ``ko`` (anomalous) images of one split.

        Raises:
            DataError: An anomalous image without a mask.
        """
        split_dir = self.root / category / split
        records = [SampleRecord(p, 0, category, NORMAL, None, self.name) for p in visible_images(split_dir / "ok")]
        mask_dir = self.root / category / "ground_truth" / ANOMALOUS
        masks = images_by_stem(mask_dir)
        for image in visible_images(split_dir / ANOMALOUS):
            mask = masks.get(image.stem)
            if mask is None and self.pixel_level:
                raise missing_mask(self.title, image, mask_dir / f"{image.stem}.png")
            records.append(SampleRecord(image, 1, category, ANOMALOUS, mask, self.name))
        return records


@DATAMODULES.register("btad")
class BTADDataModule(BenchmarkDataModule):
    """BTAD products 01/02/03: aux categories train, target categories are tested."""

    benchmark = BTAD
