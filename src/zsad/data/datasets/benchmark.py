"""The interface of a benchmark's on-disk layout: which categories exist and which samples each holds.

Image folders are listed by :func:`list_images`, which reads every format Pillow decodes (:data:`IMAGE_SUFFIXES`).
Nothing in a listed folder is dropped silently: a file that is not read (another format, a hidden file named like an
image) is reported with its reason to the collection that :meth:`Benchmark.records` opens, warned about, and becomes
a record whose ``problem`` says why, so that the results list it under ``skipped``. Hidden files not named like
images (``.DS_Store``) and sub-folders are the layout's business and are not reported.
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from PIL import Image, ImageFile

from zsad.data.datasets.base import SampleRecord
from zsad.errors import DataError

COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""The suffixes of the benchmarks; they win, in this order, when two files of one folder share a stem."""
NOT_PICTURES = frozenset({"MPEG"})
"""Pillow formats that open but hold no decodable picture (Pillow reads only an MPEG video's header)."""


def _decodable_suffixes() -> tuple[str, ...]:
    """Every file suffix of a format Pillow can open and decode, the common ones first."""
    Image.preinit()  # the common formats first, so that Image.open probes them first, as it does without us
    Image.init()  # then every plugin, so that the list does not depend on what was imported before
    decodable = set()
    for suffix, name in Image.registered_extensions().items():
        factory = Image.OPEN.get(name, (None,))[0]
        stub = inspect.isclass(factory) and issubclass(factory, ImageFile.StubImageFile)  # needs a handler: HDF5, WMF
        if factory is not None and not stub and name not in NOT_PICTURES:
            decodable.add(suffix.lower())
    return COMMON_SUFFIXES + tuple(sorted(decodable - set(COMMON_SUFFIXES)))


IMAGE_SUFFIXES = _decodable_suffixes()
"""Lower-case suffixes of every picture format Pillow decodes (``.webp``, ``.gif``, ``.jp2``, ``.ppm``, ...)."""
_SUFFIX_RANK = {suffix: rank for rank, suffix in enumerate(IMAGE_SUFFIXES)}

UnreadFile = tuple[Path, str]
"""A file of an image folder that is not read, and why."""
_unread_files: ContextVar[list[UnreadFile] | None] = ContextVar("zsad_unread_files", default=None)


@dataclass(frozen=True)
class FolderListing:
    """What an image folder holds.

    Attributes:
        images: Files named like images (any case of an :data:`IMAGE_SUFFIXES` suffix), sorted by name. Broken
            symbolic links and link loops are included: reading them fails with a message that names them.
        unread: Other files with the reason they are not read: files of formats Pillow does not decode, broken
            links not named like images, and hidden files named like images (macOS ``._name`` forks).
    """

    images: list[Path]
    unread: list[UnreadFile]


def is_image_name(path: Path) -> bool:
    """Whether the file name ends with a suffix of a format Pillow decodes (any case)."""
    return path.suffix.lower() in _SUFFIX_RANK


def scan_folder(folder: Path) -> FolderListing:
    """Sort the entries of ``folder`` into images and files that are not read (see :class:`FolderListing`).

    Raises:
        DataError: If the folder cannot be listed (permissions, not a folder).
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DataError(f"Cannot list the folder '{folder}': {error}. Check the path and its permissions.") from None
    images: list[Path] = []
    unread: list[UnreadFile] = []
    for path in entries:
        named_like_image = is_image_name(path)
        if path.name.startswith("."):
            if named_like_image:
                unread.append((path, "hidden file (a macOS '._' fork or similar); hidden files are not read"))
        elif named_like_image and (path.is_symlink() or path.is_file()):
            images.append(path)
        elif path.is_file() or (path.is_symlink() and not path.exists()):
            reason = (
                f"not an image format Pillow reads (suffix '{path.suffix}')"
                if path.is_file()
                else "broken symbolic link"
            )
            unread.append((path, reason))
    return FolderListing(images, unread)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (any case of suffix), sorted by name.

    The folder's other files (see :func:`scan_folder`) go to the collection of :func:`collecting_unread_files`, if
    one is open, so that :meth:`Benchmark.records` can warn about them and list them.
    """
    listing = scan_folder(folder)
    collection = _unread_files.get()
    if collection is not None:
        collection.extend(listing.unread)
    return listing.images


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem, for finding masks; ``{}`` if the folder is absent.

    When several files share a stem, the first suffix of :data:`IMAGE_SUFFIXES` wins (``.png`` before ``.jpg``), then
    the lower-case name. Other files of the folder are not reported: a mask folder may hold the layout's own files
    (DAGM's ``Labels.txt``).
    """
    if not folder.is_dir():
        return {}
    ranked = sorted(scan_folder(folder).images, key=_preference)
    found: dict[str, Path] = {}
    for path in ranked:
        found.setdefault(path.stem, path)
    return found


def _preference(path: Path) -> tuple[int, bool, str]:
    """Sort key among files of one stem: common suffix first, then lower-case suffix, then name."""
    return _SUFFIX_RANK[path.suffix.lower()], path.suffix != path.suffix.lower(), path.name


@contextmanager
def collecting_unread_files() -> Iterator[list[UnreadFile]]:
    """Collect the files that :func:`list_images` lists but does not read, while the block runs."""
    collection: list[UnreadFile] = []
    token = _unread_files.set(collection)
    try:
        yield collection
    finally:
        _unread_files.reset(token)


class Benchmark(ABC):
    """Reads one benchmark's standard layout.

    Subclasses set the class attributes and implement :meth:`find_categories` and :meth:`find_records`; the
    public :meth:`categories` and :meth:`records` add the checks every benchmark needs (missing root, unknown or
    empty category, duplicate paths), with messages that name the layout and the download page. Files of the image
    folders that are not read are warned about and returned by :meth:`unread`.

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
        self._unread: dict[tuple[str, str], list[SampleRecord]] = {}

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

        Files of its image folders that are not read are warned about and kept for :meth:`unread`.

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
        with collecting_unread_files() as collected:
            try:
                found = self.find_records(category, split)
            except DataError as error:
                if not collected:
                    raise
                unread = list(dict(collected).items())
                raise DataError(
                    f"{error} Also, {len(unread)} file(s) there are not read: {examples(unread)}."
                ) from None
        records = [replace(r, mask_threshold=self.mask_threshold) for r in found]
        unread = list(dict(collected).items())  # a folder listed twice reports its files twice
        self._unread[(category, split)] = [
            SampleRecord(path, 0, category, "", None, self.name, problem=f"not read: {reason}")
            for path, reason in unread
        ]
        if not records:
            also = f" ({len(unread)} file(s) there are not read, e.g. {examples(unread)})" if unread else ""
            raise DataError(
                f"Category '{category}' of {self.name} has no {split} images under '{self.root}'{also}. "
                f"{self.describe_layout()}"
            )
        if unread:
            warnings.warn(
                f"{len(unread)} file(s) of {self.name}/{category} ({split}) are not read, e.g. {examples(unread)}. "
                f"They are listed under 'skipped' in the results.",
                stacklevel=2,
            )
        duplicates = [path for path, count in Counter(r.path for r in records).items() if count > 1]
        if duplicates:
            raise DataError(
                f"{len(duplicates)} image(s) of {self.name}/{category} are listed more than once, e.g. "
                f"'{duplicates[0]}'. Fix the dataset's split file or manifest."
            )
        return records

    def unread(self, category: str, split: str = "test") -> list[SampleRecord]:
        """Files of the category's image folders that :meth:`records` found but does not read.

        Each is a record (label 0, no defect type) whose ``problem`` says why, so that a loader skips it and the
        results list it under ``skipped``: nothing on disk disappears without a word.
        """
        if (category, split) not in self._unread:
            self.records(category, split)
        return list(self._unread[(category, split)])


def examples(unread: list[UnreadFile], limit: int = 2) -> str:
    """The first unread files with their reasons, for a message: ``'a.dcm' (reason) and 3 more``."""
    shown = "; ".join(f"'{path}' ({reason})" for path, reason in unread[:limit])
    return shown + (f" and {len(unread) - limit} more" if len(unread) > limit else "")
