"""Checking an output path before the slow work starts: a folder where a file is wanted, a file in the way, no rights.

A command that loads a model and computes for minutes should not fail at its very last step because ``--out`` names
a folder, sits under a file, or lies on a read-only disk; these checks run first and say what to change.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zsad.errors import ConfigError


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder that new folders would be created in)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()  # a relative path whose every part is missing lives in the working directory


def check_writable_folder(folder: Path, option: str, target: Path) -> None:
    """Refuse a folder that zsad cannot create files in (tried for real: permission bits do not bind root).

    Args:
        folder: An existing folder.
        option: The command-line option, for the message.
        target: What the option named, for the message.

    Raises:
        ConfigError: A file is in the way, or the folder is not writable.
    """
    if not folder.is_dir():
        raise ConfigError(f"{option} '{target}': '{folder}' is a file, not a folder. Choose another path.")
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".zsad-write-check-")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"{option} '{target}': cannot write in '{folder}' ({reason}). Choose a writable place."
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Check that a file can be written at ``path`` (an existing file is replaced).

    Args:
        path: The output file.
        option: The command-line option that named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is a folder, a file is in the way of its folder, or its folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} '{path}' is a folder; give a file name, e.g. '{path / 'model.onnx'}'.")
    check_writable_folder(nearest_existing(path.parent), option, path)
    return path


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder.

    Args:
        path: The output folder.
        option: The command-line option that named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is a file, a file is in the way, or the folder is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} '{path}' is a file, not a folder. Give a folder (it is created when missing).")
    check_writable_folder(nearest_existing(path), option, path)
    return path
