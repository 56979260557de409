"""The interface of a benchmark's on-disk layout: which categories exist and which samples each holds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from zsad.data.datasets.base import SampleRecord
from zsad.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (any case of suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class Benchmark(ABC):
    """Reads one benchmark's standard layout.

    Subclasses set the class attributes and implement :meth:`find_categories` and :meth:`find_records`; the
    public :meth:`categories` and :meth:`records` add the checks every benchmark needs (missing root, unknown or
    empty category, duplicate paths), with messages that name the layout and the download page.

    Args:
        root: The folder the benchmark was unpacked into.
    """

    name: ClassVar[str]
    """Registry name, also written into results (``sample.dataset``)."""
    title: ClassVar[str] = ""
    domain: ClassVar[str] = "industrial"
    """``"industrial"``, ``"medical"`` or ``"synthetic"``."""
    pixel_level: ClassVar[bool] = True
    """Whether anomalous images have masks (pixel metrics are defined)."""
    image_level: ClassVar[bool] = True
    """Whether normal images exist (image metrics are defined)."""
    download: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    mask_threshold: ClassVar[int] = 0
    """Source mask values above this are anomalous (127 for JPEG masks)."""
    splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def prepare(self) -> None:  # noqa: B027 - optional hook; most benchmarks are downloaded by the user
        """Create the data if the benchmark can generate it (only zsad's synthetic data can)."""

    @abstractmethod
    def find_categories(self) -> list[str]:
        """Category names present under the root (the root exists)."""

    @abstractmethod
    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Samples of a known category and split (may be empty)."""

    def describe_layout(self) -> str:
        """Layout and download page, for error messages."""
        return f"Expected the {self.title or self.name} layout: {self.layout}. Download: {self.download or 'n/a'}."

    def categories(self) -> list[str]:
        """Categories under the root.

        Raises:
            DataError: Missing root, or no category found.
        """
        if not self.root.is_dir():
            raise DataError(f"Dataset root '{self.root}' does not exist. {self.describe_layout()}")
        found = self.find_categories()
        if not found:
            raise DataError(
                f"No {self.title or self.name} category found under '{self.root}'. {self.describe_layout()}"
            )
        return found

    def records(self, category: str, split: str = "test") -> list[SampleRecord]:
        """Samples of one category and split.

        Raises:
            DataError: Unknown category (lists the valid ones), unknown split, empty category, duplicate paths.
        """
        valid = self.categories()
        if category not in valid:
            raise DataError(
                f"Unknown category '{category}' of {self.name} in '{self.root}'. Valid categories: {', '.join(valid)}."
            )
        if split not in self.splits:
            raise DataError(f"{self.name} has no split '{split}'. Splits: {', '.join(self.splits)}.")
        records = [replace(r, mask_threshold=self.mask_threshold) for r in self.find_records(category, split)]
        if not records:
            raise DataError(
                f"Category '{category}' of {self.name} has no {split} images under '{self.root}'. "
                f"{self.describe_layout()}"
            )
        duplicates = [path for path, count in Counter(r.path for r in records).items() if count > 1]
        if duplicates:
            raise DataError(
                f"{len(duplicates)} image(s) of {self.name}/{category} are listed more than once, e.g. "
                f"'{duplicates[0]}'. Fix the dataset's split file or manifest."
            )
        return records
