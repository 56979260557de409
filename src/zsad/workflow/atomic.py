"""Atomic file writes: a hidden temporary file beside the target, flushed to disk, then renamed over it.

A reader sees either the previous file or the new one, never a half-written one. A kill mid-write leaves at most
the hidden ``.<name>.<pid>.tmp`` file, which no glob for the real file (``last*.ckpt``, ``*.json``) matches.
Checkpoints (:mod:`zsad.workflow.checkpointing`), results, reports, grid configs and the feature cache's
``key.json``/``layout.json`` are all written this way; the feature-cache entries too, without the fsyncs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: str | Path) -> Path:
    """Where :func:`atomic_write` writes before the rename: hidden, in the same folder, ending in ``.tmp``.

    The same folder keeps the rename atomic (one file system); the ``.tmp`` suffix keeps Lightning's
    ``--ckpt_path last`` (``last*.ckpt``) and ``zsad test`` globs from ever picking up a half-written file.

    Args:
        path: The file that will be written.

    Returns:
        ``<folder>/.<name>.<pid>.tmp``: one per process, so that processes writing the same file do not collide.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Write a file through ``write(handle)`` into :func:`temporary_path`, fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content.

    Args:
        path: The file to create or replace; missing parent folders are created.
        write: Writes the whole content to the binary handle it is given (its return value is ignored).
        durable: Flush the file and the folder to disk. ``False`` keeps the atomic rename but skips both fsyncs,
            for files that are cheap to recompute when a power loss leaves them unreadable (feature-cache entries).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())  # the data reach the disk before the rename makes them visible
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: The file to create or replace; missing parent folders are created.
        text: The whole content, written as is (no newline translation).
        encoding: Text encoding of the file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda handle: handle.write(text.encode(encoding)))


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the platform allows it.

    Args:
        folder: The folder whose entries changed.
    """
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
