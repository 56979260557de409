"""Save the pictures an evaluation kept: one figure per image (see :mod:`zsad.viz.panels`), grouped by category."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import torch

from zsad.data.transforms import ImageTransform
from zsad.metrics.results import Picture
from zsad.viz.overlay import save_image
from zsad.viz.panels import f1_optimal_threshold, render_picture

Group = tuple[str, str]


def by_category(pictures: Iterable[Picture]) -> dict[Group, list[Picture]]:
    """Pictures per ``(dataset, category)``, in the order given."""
    groups: dict[Group, list[Picture]] = defaultdict(list)
    for picture in pictures:
        groups[(picture.dataset, picture.category)].append(picture)
    return dict(groups)


def picture_path(folder: str | Path, picture: Picture, per_dataset: bool = False) -> Path:
    """``<folder>[/<dataset>]/<category>/<defect folder>_<image stem>.png`` (stems repeat across defect folders)."""
    name = Path(picture.path)
    category = Path(picture.dataset, picture.category) if per_dataset and picture.dataset else Path(picture.category)
    return Path(folder) / category / f"{name.parent.name}_{name.stem}.png"


def save_pictures(
    pictures: list[Picture],
    folder: str | Path,
    transform: ImageTransform | None = None,
    per_dataset: bool = False,
) -> list[Path]:
    """Write one figure per picture: image | ground truth | overlay | prediction (| defect type).

    Maps of one category share a colour scale, so that a brighter map means a higher score, and one binarisation
    threshold: the F1-optimal pixel threshold over that category's pictures
    (:func:`~zsad.viz.panels.f1_optimal_threshold`).

    Args:
        pictures: Kept test images (``Results.pictures``).
        folder: Output folder.
        transform: The transform that normalised the images (OpenAI CLIP statistics by default).
        per_dataset: Put each category under a folder of its dataset (``<folder>/<dataset>/<category>/``).

    Returns:
        The written files, in the order of ``pictures`` grouped by category.
    """
    transform = transform or ImageTransform(size=1)
    written = []
    for group in by_category(pictures).values():
        vmax = max(float(p.anomaly_map.max()) for p in group) or 1.0
        threshold = f1_optimal_threshold(
            torch.stack([p.anomaly_map.float() for p in group]), torch.stack([p.mask.float() for p in group])
        )
        for picture in group:
            figure = render_picture(picture, threshold, vmax, transform, pictured=len(group))
            written.append(save_image(figure, picture_path(folder, picture, per_dataset)))
    return written
