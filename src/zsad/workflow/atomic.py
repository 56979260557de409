"""Atomic file writes: a hidden temporary file beside the target, flushed to disk, then renamed over it.

A reader sees either the previous file or the new one, never a half-written one. A kill mid-write leaves at most
the hidden ``.<name>.<pid>.tmp`` file, which no glob for the real file (``last*.ckpt``, ``*.json``) matches.
Checkpoints (:mod:`zsad.workflow.checkpointing`), results, reports, grid configs and the feature cache's
``key.json``/``layout.json`` are all written this way; the feature-cache entries too, without the fsyncs; ONNX
exports through :func:`atomic_save`. A write the file system refuses (full disk, read-only folder) raises a
:class:`~zsad.errors.WriteError` that names the file, and leaves the previous file as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from zsad.errors import WriteError

TEMPORARY_SUFFIX = ".tmp"
WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free space there or write to another place",
    errno.EDQUOT: "the disk quota is used up: free space there or write to another place",
    errno.EACCES: "the folder is not writable: choose another place or fix its permissions",
    errno.EPERM: "the folder is not writable: choose another place or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another place",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
}
"""What to do about a failed write, by ``errno``."""


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

    Raises:
        WriteError: The file system refused the write (full disk, read-only folder, ...), naming ``path``.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())  # the data reach the disk before the rename makes them visible
        os.replace(temporary, path)
        if durable:
            sync_folder(path.parent)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise write_error(path, error) from error
        raise
    return path


def atomic_write_files(contents: Sequence[tuple[str | Path, bytes]], durable: bool = True) -> list[Path]:
    """Write several files so that a failed write changes none of them: all temporary files first, then the renames.

    A full disk (the usual failure) strikes while writing, before any rename: every file keeps its previous
    content. Only a kill between the renames (microseconds) can leave some files new and others old; readers that
    need the files to match record a digest of one in the other (``results.json`` and ``scores.csv``).

    Args:
        contents: ``(path, bytes)`` pairs, renamed into place in this order; missing parent folders are created.
        durable: Flush the files and their folders to disk.

    Returns:
        The paths, in order.

    Raises:
        WriteError: The file system refused a write, naming that file; no file was changed.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in contents:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.append((temporary_path(path), path))
            with open(staged[-1][0], "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
    except BaseException as error:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise write_error(staged[-1][1] if staged else Path(contents[0][0]), error) from error
        raise
    for temporary, path in staged:
        try:
            os.replace(temporary, path)
        except OSError as error:
            for left, _ in staged:
                left.unlink(missing_ok=True)
            raise write_error(path, error) from error
    if durable:
        for folder in dict.fromkeys(path.parent for _, path in staged):
            sync_folder(folder)
    return [path for _, path in staged]


def atomic_save(path: str | Path, save: Callable[[Path], object], durable: bool = True) -> Path:
    """:func:`atomic_write` for writers that take a file name and may write companion files beside it.

    ``save(staged)`` writes into a hidden staging folder beside ``path`` (``staged`` has ``path``'s name, so that
    companion files such as ONNX external data, ``<name>.data``, get their final names and references); then each
    file is flushed and renamed into ``path``'s folder, ``path`` itself last. With no companion file this is as
    atomic as :func:`atomic_write`; with some, a kill between the renames can leave new companions beside the old
    main file, never a half-written file.

    Args:
        path: The main file to create or replace; missing parent folders are created.
        save: Writes the main file (and any companions) at the path it is given.
        durable: Flush the files and the folder to disk.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError: The file system refused the write, naming ``path``.
    """
    path = Path(path)
    staging = temporary_path(path)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        save(staging / path.name)
        for staged in sorted(staging.iterdir(), key=lambda file: file.name == path.name):  # the main file last
            if durable:
                sync_file(staged)
            os.replace(staged, path.parent / staged.name)
        if durable:
            sync_folder(path.parent)
    except OSError as error:
        raise error if isinstance(error, WriteError) else write_error(path, error) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_error(path: str | Path, error: OSError) -> WriteError:
    """A one-line :class:`~zsad.errors.WriteError` naming the file, the system's reason and what to do.

    Args:
        path: The file that could not be written.
        error: What the file system raised.
    """
    reason = error.strerror or str(error) or type(error).__name__
    fix = WRITE_FIXES.get(error.errno or 0, "check the path and the disk")
    written = WriteError(f"Cannot write '{path}': {reason}; {fix}. Nothing was written there.")
    written.errno = error.errno  # (not strerror nor filename: OSError would print those instead of the message)
    return written


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


def sync_file(path: Path) -> None:
    """Flush a written file's data to disk.

    Args:
        path: The file.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
