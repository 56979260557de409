"""What a gallery page shows of one run: its ``results.json``, every image score, and the figures it has on disk.

Figures are the PNGs that :func:`zsad.viz.pictures.save_pictures` writes (``AnomalyMapPictures``, or ``zsad test
--results.html true``); each carries ``zsad:*`` PNG text entries naming its image, which join it to that image's
row of ``scores.csv``.

Panels are ordered worst first. An image's **badness** needs no threshold: for a normal image, the fraction of the
category's anomalous images that score at or below it (how many defects it outranks); for an anomalous image, the
fraction of normal images that score at or above it. With the category's image threshold, images on the wrong side
(false positives and false negatives) come first, each kind ordered by badness, then the others.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zsad.errors import DataError
from zsad.metrics.results import ImageScore, category_threshold
from zsad.viz.panels import INFO_PREFIX
from zsad.workflow.report.runs import Run, run_from_results
from zsad.workflow.results import SCORE_COLUMNS

PICTURES_FOLDER = "pictures"
Group = tuple[str, str]


@dataclass
class GalleryImage:
    """One pictured test image.

    Attributes:
        dataset: Its dataset.
        category: Its category.
        path: Its file.
        defect_type: Its defect folder (``good`` for normal images).
        label: 0 normal, 1 anomalous.
        score: Its image score.
        figure: The figure's PNG file.
        threshold: The category's image threshold (``None`` without thresholds).
        badness: How wrong its score is within its category (see the module docstring), in [0, 1].
    """

    dataset: str
    category: str
    path: str
    defect_type: str
    label: int
    score: float
    figure: Path
    threshold: float | None = None
    badness: float = 0.0

    @property
    def outcome(self) -> str:
        """``FP``, ``FN``, ``TP`` or ``TN`` at the image threshold; empty without one."""
        if self.threshold is None:
            return ""
        # in float32, the scores' own precision: scores.csv keeps 9 digits, which round-trip float32 values only
        predicted = bool(np.float32(self.score) >= np.float32(self.threshold))
        if self.label:
            return "TP" if predicted else "FN"
        return "FP" if predicted else "TN"

    @property
    def group(self) -> str:
        """``dataset/category`` (the category alone without a dataset name)."""
        return f"{self.dataset}/{self.category}" if self.dataset else self.category


@dataclass
class GalleryRun:
    """A run as its gallery shows it.

    Attributes:
        run: The run (its ``results.json``, method and seed).
        images: Every scored image of ``scores.csv`` (empty when the run has none).
        pictured: The images with a figure, worst first.
    """

    run: Run
    images: list[ImageScore] = field(default_factory=list)
    pictured: list[GalleryImage] = field(default_factory=list)

    def scores_by_group(self) -> dict[Group, tuple[np.ndarray, np.ndarray]]:
        """``{(dataset, category): (scores, labels)}`` of every scored image."""
        grouped: dict[Group, list[ImageScore]] = defaultdict(list)
        for image in self.images:
            grouped[(image.dataset, image.category)].append(image)
        return {
            group: (np.array([i.score for i in items]), np.array([i.label for i in items]))
            for group, items in grouped.items()
        }


def read_image_scores(path: Path) -> list[ImageScore]:
    """Every row of a ``scores.csv`` written by ``zsad test``.

    Raises:
        DataError: The header is not :data:`~zsad.workflow.results.SCORE_COLUMNS` or a row is malformed.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != SCORE_COLUMNS:
            raise DataError(
                f"{path} has header {header}, expected {','.join(SCORE_COLUMNS)}; rewrite it with zsad test."
            )
        images = []
        for number, row in enumerate(reader, start=2):
            try:
                dataset, category, image_path, label, score = row
                images.append(ImageScore(dataset, category, image_path, int(label), float(score)))
            except ValueError as error:
                raise DataError(
                    f"{path}:{number}: {row} is not 'dataset,category,path,label,score' ({error})."
                ) from error
    return images


def figure_info(path: Path) -> dict[str, str] | None:
    """The ``zsad:*`` text entries of a figure (without the prefix), or ``None`` for other PNGs."""
    try:
        with Image.open(path) as picture:
            entries = {k[len(INFO_PREFIX) :]: str(v) for k, v in picture.info.items() if k.startswith(INFO_PREFIX)}
    except (OSError, SyntaxError, ValueError):
        return None
    return entries if "path" in entries else None


def find_figures(results_path: Path) -> list[Path]:
    """The figures of a run: PNGs under ``<results folder>/pictures/`` (where ``AnomalyMapPictures`` writes)."""
    folder = results_path.parent / PICTURES_FOLDER
    return sorted(folder.rglob("*.png")) if folder.is_dir() else []


def badness(score: float, label: int, scores: np.ndarray, labels: np.ndarray) -> float:
    """How wrong a score is within its category (see the module docstring); 0 when the other kind is absent."""
    others = scores[(labels > 0) != bool(label)]
    if not others.size:
        return 0.0
    beaten = others <= score if not label else others >= score
    return float(beaten.mean())


def load_gallery_run(
    results_path: str | Path, figures: Iterable[Path] | None = None, run: Run | None = None
) -> GalleryRun:
    """Read a run for its gallery: ``results.json``, its ``scores.csv`` and its figures, ordered worst first.

    Args:
        results_path: The run's ``results.json``.
        figures: Its figures; by default those under ``<results folder>/pictures/``.
        run: The run as ``zsad report`` read it (its grid run id and method); by default read from the file.

    Raises:
        DataError: A malformed ``results.json`` or ``scores.csv``.
    """
    results_path = Path(results_path)
    run = run or run_from_results(results_path, results_path.parent.name)
    scores_path = run.scores_path
    gallery = GalleryRun(run, read_image_scores(scores_path) if scores_path.is_file() else [])
    known = {(i.dataset, i.category, i.path): i for i in gallery.images}
    by_group = gallery.scores_by_group()
    thresholds = run.document.get("thresholds")
    for figure in figures if figures is not None else find_figures(results_path):
        info = figure_info(Path(figure))
        if info is None:
            continue
        key = (info.get("dataset", ""), info.get("category", ""), info["path"])
        row = known.get(key)
        label = row.label if row else int(info.get("label", "0") or 0)
        score = row.score if row else float(info.get("score", "nan"))
        scores, labels = by_group.get(key[:2], (np.array([score]), np.array([label])))
        gallery.pictured.append(
            GalleryImage(
                dataset=key[0],
                category=key[1],
                path=key[2],
                defect_type=info.get("defect_type", "good" if not label else "defect"),
                label=label,
                score=score,
                figure=Path(figure),
                threshold=category_threshold(thresholds, key[0], key[1], "image"),
                badness=badness(score, label, scores, labels),
            )
        )
    gallery.pictured.sort(key=panel_order)
    return gallery


def panel_order(image: GalleryImage) -> tuple[int, float, str]:
    """Errors at the threshold first, then worst first by badness, then by path."""
    wrong = image.outcome in ("FP", "FN")
    return (0 if wrong else 1, -image.badness, image.path)


def threshold_summary(document: dict[str, Any]) -> tuple[str, bool]:
    """The thresholds' description and whether they were tuned on the target set (``("", False)`` without)."""
    entry = document.get("thresholds")
    if not isinstance(entry, dict):
        return "", False
    return str(entry.get("description", entry.get("rule", ""))), bool(entry.get("tuned_on_target"))
