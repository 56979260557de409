"""The input files of ``zsad predict``: a folder (recursively) or a glob pattern, with their relative names."""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zsad.errors import DataError

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file to score.

    Attributes:
        path: The file on disk.
        name: Its path relative to the folder (or the glob's fixed leading folders), with ``/`` separators: the
            name in ``scores.csv`` and the layout mirrored by the overlays.
    """

    path: Path
    name: str


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds glob wildcards."""
    return any(character in pattern for character in GLOB_CHARACTERS)


def glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern before its first wildcard: ``data/*/x.png`` -> ``data``."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def find_input_files(images: str | Path) -> list[InputFile]:
    """Every file of a folder and its sub-folders, or every file a glob matches (``**`` recurses), sorted.

    All files are returned, images or not: the caller reports those it cannot read instead of dropping them.

    Raises:
        DataError: Nothing matches, or the folder is empty.
    """
    pattern = str(images)
    path = Path(pattern)
    if path.is_dir():
        root, files = path, [p for p in path.rglob("*") if p.is_file()]
        where = f"folder '{path}' (searched recursively)"
    elif is_glob(pattern):
        root, files = glob_root(pattern), [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
        where = f"glob pattern '{pattern}'"
    elif path.is_file():
        root, files = path.parent, [path]
        where = f"'{path}'"
    else:
        raise DataError(f"--images '{pattern}' is neither a folder, nor a file, nor a glob pattern. Check the path.")
    if not files:
        raise DataError(f"No files found in the {where}. Point --images at a folder or pattern holding images.")
    return [InputFile(file, file.relative_to(root).as_posix()) for file in sorted(files)]


def overlay_names(names: Sequence[str]) -> dict[str, str]:
    """The overlay file name of each input name: its relative path with the suffix replaced by ``.png``.

    Inputs that would share an overlay (``a.png`` and ``a.jpg`` in one folder) keep their full name instead
    (``a.png.png``, ``a.jpg.png``), so no overlay overwrites another.
    """
    plain = {name: str(PurePosixPath(name).with_suffix(".png")) for name in names}
    taken = Counter(plain.values())
    return {name: overlay if taken[overlay] == 1 else f"{name}.png" for name, overlay in plain.items()}
