"""Sample records and the dataset that turns them into tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from zsad.data.transforms import ImageTransform, MaskTransform, load_mask, load_rgb

NORMAL = "good"


@dataclass(frozen=True)
class SampleRecord:
    """One image on disk and what is known about it.

    Attributes:
        path: Image file.
        label: 0 normal, 1 anomalous.
        category: Object or texture category.
        defect_type: ``"good"`` for normal images, else the defect folder name.
        mask_path: Pixel mask, or ``None`` (normal images, image-level-only datasets).
        dataset: Name of the dataset the sample belongs to.
    """

    path: Path
    label: int
    category: str
    defect_type: str
    mask_path: Path | None = None
    dataset: str = ""


class AnomalyDataset(Dataset):
    """Loads :class:`SampleRecord`s as dictionaries of tensors.

    Each item has ``image`` ``[3, S, S]``, ``mask`` ``[1, S, S]`` (zeros when there is no mask), ``label``,
    ``category``, ``defect_type``, ``path`` and ``dataset``.

    Args:
        records: The samples.
        image_size: Side S of the square output.
        mask_threshold: Source mask values above this are anomalous (0 for PNG, 127 for JPEG masks).
        interpolation: Image resize interpolation.
    """

    def __init__(
        self, records: list[SampleRecord], image_size: int, mask_threshold: int = 0, interpolation: str = "bicubic"
    ) -> None:
        self.records = records
        self.image_transform = ImageTransform(image_size, interpolation)
        self.mask_transform = MaskTransform(image_size)
        self.mask_threshold = mask_threshold
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.image_transform(load_rgb(record.path))
        if record.mask_path is None:
            mask = torch.zeros(1, self.image_size, self.image_size)
        else:
            mask = self.mask_transform(load_mask(record.mask_path, self.mask_threshold))
        return {
            "image": image,
            "mask": mask,
            "label": torch.tensor(record.label),
            "category": record.category,
            "defect_type": record.defect_type,
            "path": str(record.path),
            "dataset": record.dataset,
        }
