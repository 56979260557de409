"""Where cached features live: in this process's memory, or in memory-mapped files on disk.

Both stores hold the entries of one cache namespace (see :mod:`zsad.features.keys`), keyed by image digest, and
that namespace's :class:`~zsad.features.records.FeatureLayout`.

On disk a namespace is a folder: ``key.json`` (the ingredients of its digest, for people), ``layout.json`` and
``<aa>/<image sha256>.pt`` per image. Every file is written to a temporary file beside it and renamed into place
(``os.replace`` is atomic), so a killed run leaves at most a ``*.tmp`` file, which lookups never read. An entry
that still fails to load (a disk error, a power loss before the data reached the disk) is recomputed and
rewritten.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from zsad.errors import DataError
from zsad.features.records import FeatureLayout
from zsad.workflow.atomic import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

Entry = dict[str, Tensor]


class FeatureStore(Protocol):
    """The entries and layout of one cache namespace."""

    layout: FeatureLayout | None

    def get(self, image_digest: str) -> Entry | None:
        """The entry of an image, or ``None`` when it is not stored."""

    def put(self, image_digest: str, entry: Entry) -> None:
        """Store an image's entry."""

    def set_layout(self, layout: FeatureLayout) -> None:
        """Record the layout (the first time), or check that it matches the recorded one."""


def check_same_layout(recorded: FeatureLayout, found: FeatureLayout, where: str) -> None:
    """Raise when a namespace's entries would mix layouts (the cache key missed an ingredient).

    Raises:
        DataError: Naming the layouts and the store.
    """
    if recorded != found:
        raise DataError(
            f"The feature cache {where} holds features laid out as {recorded}, but the backbone now gives {found}. "
            "The cache key missed what changed: delete the cache folder (or set model.feature_cache: off) and "
            "report this."
        )


class MemoryStore:
    """Entries in this process's memory (CPU tensors), gone when the process ends."""

    def __init__(self) -> None:
        self.layout: FeatureLayout | None = None
        self._entries: dict[str, Entry] = {}

    def get(self, image_digest: str) -> Entry | None:
        """The entry of an image, or ``None``."""
        return self._entries.get(image_digest)

    def put(self, image_digest: str, entry: Entry) -> None:
        """Keep an image's entry."""
        self._entries[image_digest] = entry

    def set_layout(self, layout: FeatureLayout) -> None:
        """Record the layout, or check it."""
        if self.layout is None:
            self.layout = layout
        check_same_layout(self.layout, layout, "in memory")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(t.nbytes for entry in self._entries.values() for t in entry.values())


class DiskStore:
    """Entries as ``torch.save`` files under ``directory``, read back memory-mapped.

    Args:
        directory: The namespace's folder (created when missing).
        ingredients: What the namespace digest was computed from, written to ``key.json`` for people to read.
    """

    def __init__(self, directory: str | Path, ingredients: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.layout: FeatureLayout | None = None
        key_file = self.directory / "key.json"
        if not key_file.exists():
            atomic_write_text(key_file, json.dumps(ingredients, indent=2, sort_keys=True, default=str) + "\n")
        layout_file = self.directory / "layout.json"
        if layout_file.exists():
            try:
                self.layout = FeatureLayout.from_dict(json.loads(layout_file.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise DataError(
                    f"Feature cache layout '{layout_file}' is unreadable ({error}). Delete the folder "
                    f"'{self.directory}'; it is recomputed."
                ) from error

    def path(self, image_digest: str) -> Path:
        """The file of an image's entry."""
        return self.directory / image_digest[:2] / f"{image_digest}.pt"

    def get(self, image_digest: str) -> Entry | None:
        """The entry of an image (memory-mapped), or ``None`` when absent or unreadable."""
        path = self.path(image_digest)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
            logger.warning("Feature cache entry %s is unreadable (%s); recomputing it.", path, error)
            return None
        expected = self._entry_names()
        if not isinstance(entry, dict) or (expected is not None and set(entry) != expected):
            logger.warning("Feature cache entry %s does not match the namespace layout; recomputing it.", path)
            return None
        return entry

    def _entry_names(self) -> set[str] | None:
        return None if self.layout is None else set(self.layout.dtypes)

    def put(self, image_digest: str, entry: Entry) -> None:
        """Write an image's entry atomically; a failed write is logged and leaves no entry."""
        path = self.path(image_digest)
        try:
            atomic_torch_save(entry, path)
        except OSError as error:
            logger.warning("Could not write feature cache entry %s (%s); it stays uncached.", path, error)

    def set_layout(self, layout: FeatureLayout) -> None:
        """Write ``layout.json`` the first time, or check the layout against it."""
        if self.layout is None:
            atomic_write_text(self.directory / "layout.json", json.dumps(layout.to_dict(), indent=2) + "\n")
            self.layout = layout
        check_same_layout(self.layout, layout, f"in '{self.directory}'")


def atomic_torch_save(value: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place (no fsync: see the module)."""
    atomic_write(path, lambda handle: torch.save(value, handle), durable=False)
