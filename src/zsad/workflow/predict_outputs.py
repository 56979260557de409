"""The files of an earlier ``zsad predict`` in ``--out``: found, refused, or with ``--overwrite`` removed.

They would sit beside this run's ``scores.csv`` as if they belonged to it. Only files that zsad predict wrote are
ever removed: ``scores.csv`` and ``skipped.txt`` with its headers, PNGs that carry its text mark (overlays, masks,
16-bit maps, class maps), and the files an earlier ``scores.csv`` names (``.npy`` maps, which cannot carry a mark;
outputs of versions before the marks); anything else where those go makes ``zsad predict`` refuse instead.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from PIL import Image

from zsad.errors import ConfigError
from zsad.inference.files import overlay_names
from zsad.workflow.predict_drawing import OVERLAY_MARK
from zsad.workflow.raw_maps import CLASS_SUFFIX, MANIFEST
from zsad.workflow.raw_maps import MARK as MAP_MARK

SCORES_FILE = "scores.csv"
SKIPPED_FILE = "skipped.txt"
OVERLAY_FOLDER = "overlays"
MASK_FOLDER = "masks"
MAP_FOLDER = "maps"
OUTPUT_FOLDERS = (OVERLAY_FOLDER, MASK_FOLDER, MAP_FOLDER)
SCORE_HEADERS = {"path,score", "path,score,defect_type", "path,score,pred_label", "path,score,defect_type,pred_label"}


def output_stems(names: list[str]) -> dict[str, str]:
    """The relative output stem of each input name, from which overlays, masks and maps take their names.

    ``sub/b.jpg`` -> ``sub/b``; ``a.png`` beside ``a.jpg`` keeps its suffix: ``a.png``.
    """
    return {name: str(PurePosixPath(overlay).with_suffix("")) for name, overlay in overlay_names(names).items()}


def is_own_png(path: Path) -> bool:
    """Whether a file is a PNG that zsad predict (or zsad's raw-map writer) marked as its own."""
    try:
        with Image.open(path) as picture:
            mark = picture.info.get(OVERLAY_MARK[0])
            return picture.format == "PNG" and mark in (OVERLAY_MARK[1], MAP_MARK[1])
    except (OSError, SyntaxError, ValueError):
        return False


def is_own_table(path: Path) -> bool:
    """Whether ``scores.csv`` or ``skipped.txt`` looks like zsad predict's: its header, or tab-separated reasons."""
    if not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline().rstrip("\n")
    if path.name == SCORES_FILE:
        return first in SCORE_HEADERS
    return first == "" or "\t" in first


def listed_outputs(out: Path) -> set[Path]:
    """The outputs that an earlier run's ``scores.csv`` and ``skipped.txt`` name."""
    names = []
    scores = out / SCORES_FILE
    if scores.is_file():
        with scores.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle))[1:]
        names += [row[0] for row in rows if row]
    skipped = out / SKIPPED_FILE
    if skipped.is_file():
        names += [line.split("\t", 1)[0] for line in skipped.read_text(errors="replace").splitlines() if line]
    listed = {out / MAP_FOLDER / MANIFEST}
    for stem in output_stems(names).values():
        listed |= {out / OVERLAY_FOLDER / f"{stem}.png", out / MASK_FOLDER / f"{stem}.png"}
        listed |= {out / MAP_FOLDER / f"{stem}{suffix}" for suffix in (".npy", ".png", CLASS_SUFFIX)}
    return listed


def earlier_outputs(out: Path) -> tuple[list[Path], list[Path]]:
    """The files of an earlier zsad predict in ``out``, and the other files in its output folders.

    Returns:
        ``(own, foreign)``: ``scores.csv``, ``skipped.txt`` and the outputs zsad predict wrote (marked, or named by
        the earlier ``scores.csv``); and the other files where those go, which zsad never removes.
    """
    own: list[Path] = []
    foreign: list[Path] = []
    for name in (SCORES_FILE, SKIPPED_FILE):
        if (out / name).exists():
            (own if is_own_table(out / name) else foreign).append(out / name)
    listed = listed_outputs(out)
    for folder in OUTPUT_FOLDERS:
        if not (out / folder).is_dir():
            continue
        for file in sorted(path for path in (out / folder).rglob("*") if not path.is_dir()):
            (own if file in listed or is_own_png(file) else foreign).append(file)
    return own, foreign


def clear_earlier_outputs(out: Path, overwrite: bool) -> None:
    """Refuse, or with ``overwrite`` remove, an earlier zsad predict's outputs in ``out``; never touch other files.

    Raises:
        ConfigError: ``out`` holds an earlier run's outputs and ``overwrite`` is false, or one of its output folders
            holds files that zsad predict did not write (they would mix with this run's outputs).
    """
    own, foreign = earlier_outputs(out)
    if foreign:
        shown = ", ".join(str(path.relative_to(out)) for path in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"--out '{out}' holds {len(foreign)} file(s) that zsad predict did not write where its outputs go "
            f"({shown}); they would be replaced or mixed with this run's. Move them, or give another --out."
        )
    if not own:
        return
    if not overwrite:
        nested = sum(path.parent != out for path in own)
        files = [path.name for path in own if path.parent == out] + (
            [f"{nested} overlays, masks or maps"] if nested else []
        )
        raise ConfigError(
            f"--out '{out}' holds the outputs of an earlier zsad predict ({', '.join(files)}), which would mix with "
            "this run's. Give another --out, or add --overwrite to replace them (only files zsad predict wrote are "
            "removed)."
        )
    for path in own:
        path.unlink()
    for folder in OUTPUT_FOLDERS:
        if not (out / folder).is_dir():
            continue
        for empty in [*sorted((p for p in (out / folder).rglob("*") if p.is_dir()), reverse=True), out / folder]:
            if not any(empty.iterdir()):
                empty.rmdir()
