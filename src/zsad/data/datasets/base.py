"""Sample records and the dataset that turns them into tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from zsad.data.transforms import ImageTransform, MaskTransform, binary_mask, load_mask, load_rgb
from zsad.errors import DataError

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
        mask_threshold: Source mask values above this are anomalous; ``None`` defers to the loader's default.
        problem: Why the file is not read (a format Pillow does not decode, a hidden file), or ``""`` for a sample.
            Such records come from :meth:`~zsad.data.datasets.benchmark.Benchmark.unread`: a loader skips them
            whatever ``on_bad_image`` says, and the results list them under ``skipped``.
    """

    path: Path
    label: int
    category: str
    defect_type: str
    mask_path: Path | None = None
    dataset: str = ""
    mask_threshold: int | None = None
    problem: str = ""


BadImagePolicy = Literal["error", "skip"]


class AnomalyDataset(Dataset):
    """Loads :class:`SampleRecord`s as dictionaries of tensors.

    Each item has ``image`` ``[3, S, S]``, ``mask`` ``[1, S, S]`` (zeros when there is no mask), ``mask_level``
    ``[1, S, S]`` uint8 (the resized mask before ``mask`` thresholds it at one half), ``label``,
    ``category``, ``defect_type``, ``path``, ``dataset``, ``index`` (position in ``records``, which identifies the
    sample across processes), ``valid``, ``problem``, and for native-resolution metrics ``native_size`` (H, W),
    ``mask_path`` (``""`` when none) and ``mask_threshold``.

    Args:
        records: The samples.
        image_size: Side S of the square output.
        mask_threshold: Default for records without their own threshold (0 for PNG, 127 for JPEG masks).
        interpolation: Image resize interpolation.
        on_bad_image: ``"error"`` raises on an unreadable image or a mask whose size differs from its image;
            ``"skip"`` returns the item with ``valid=False`` and the reason in ``problem``, so that the loop drops
            it and the results list it. Records that carry a ``problem`` already (files that are not read) are
            returned that way under either policy.
    """

    def __init__(
        self,
        records: list[SampleRecord],
        image_size: int,
        mask_threshold: int = 0,
        interpolation: str = "bicubic",
        on_bad_image: BadImagePolicy = "error",
    ) -> None:
        self.records = records
        self.image_transform = ImageTransform(image_size, interpolation)
        self.mask_transform = MaskTransform(image_size)
        self.mask_threshold = mask_threshold
        self.image_size = image_size
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, mask_level, native_size, problem = self._read(record)
        threshold = self.mask_threshold if record.mask_threshold is None else record.mask_threshold
        return {
            "image": image,
            "mask": binary_mask(mask_level),
            "mask_level": mask_level,
            "label": torch.tensor(record.label),
            "category": record.category,
            "defect_type": record.defect_type,
            "path": str(record.path),
            "dataset": record.dataset,
            "index": torch.tensor(index),
            "valid": torch.tensor(not problem),
            "problem": problem,
            "native_size": torch.tensor(native_size),
            "mask_path": str(record.mask_path or ""),
            "mask_threshold": torch.tensor(threshold),
        }

    def _read(self, record: SampleRecord) -> tuple[Tensor, Tensor, tuple[int, int], str]:
        """Image, mask levels, native size and problem (``""`` when read); applies ``on_bad_image``."""
        if record.problem:
            return self._placeholder(record.problem)
        try:
            return (*self._load(record), "")
        except DataError as error:
            if self.on_bad_image != "skip":
                raise
            return self._placeholder(str(error))

    def _placeholder(self, problem: str) -> tuple[Tensor, Tensor, tuple[int, int], str]:
        """Zero image and mask for a sample that is not read; ``valid`` is false, so no step ever uses them."""
        size = self.image_size
        return torch.zeros(3, size, size), self._no_mask(), (size, size), problem

    def _no_mask(self) -> Tensor:
        return torch.zeros(1, self.image_size, self.image_size, dtype=torch.uint8)

    def _load(self, record: SampleRecord) -> tuple[Tensor, Tensor, tuple[int, int]]:
        picture = load_rgb(record.path)
        native_size = (picture.height, picture.width)
        if record.mask_path is None:
            return self.image_transform(picture), self._no_mask(), native_size
        threshold = self.mask_threshold if record.mask_threshold is None else record.mask_threshold
        mask = load_mask(record.mask_path, threshold)
        if mask.size != picture.size:
            raise DataError(
                f"Mask '{record.mask_path}' is {mask.size[0]}x{mask.size[1]} but its image '{record.path}' is "
                f"{picture.size[0]}x{picture.size[1]}. Replace the mask with one of the image's size."
            )
        return self.image_transform(picture), self.mask_transform.levels(mask), native_size
