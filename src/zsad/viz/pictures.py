"""Save the pictures an evaluation kept: one figure per image (see :mod:`zsad.viz.panels`), grouped by category."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from zsad.data.transforms import ImageTransform
from zsad.metrics.results import Picture, category_threshold
from zsad.viz.overlay import save_image
from zsad.viz.panels import Binarisation, f1_optimal_threshold, pictured_rule, render_picture
from zsad.viz.scales import MapScale, ScaleRule, choose_scale, observed_range

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


def picture_scales(
    pictures: Iterable[Picture],
    rule: ScaleRule = "run",
    map_ranges: Mapping[str, Mapping[str, Any]] | None = None,
    documented: tuple[float, float] | None = None,
    fixed: tuple[float | None, float | None] = (None, None),
) -> dict[Group, MapScale]:
    """The colour scale of each category's pictures.

    Args:
        pictures: The pictures to draw.
        rule: ``"run"`` (one scale for every picture: the lowest and highest map value of the run), ``"category"``
            (the same per category) or ``"range"`` (the head's documented range).
        map_ranges: ``Results.map_ranges`` (every test image's maps); without it, the pictured maps' values.
        documented: The head's documented range (:func:`zsad.viz.scales.module_range`).
        fixed: User-given ``(low, high)``; each replaces the chosen end when not ``None``.
    """
    groups = by_category(pictures)
    ranges: dict[Group, tuple[float, float]] = {}
    for group, members in groups.items():
        stored = (map_ranges or {}).get(group[0], {}).get(group[1])
        if stored is not None:
            ranges[group] = (float(stored[0]), float(stored[1]))
        else:
            ranges[group] = observed_range((float(p.anomaly_map.min()), float(p.anomaly_map.max())) for p in members)
    if map_ranges:
        run = observed_range((float(r[0]), float(r[1])) for cats in map_ranges.values() for r in cats.values())
    else:
        run = observed_range(ranges.values())
    return {group: choose_scale(rule, ranges[group], run, documented, fixed) for group in groups}


def binarisations(pictures: Iterable[Picture], thresholds: Mapping[str, Any] | None) -> dict[Group, Binarisation]:
    """The prediction threshold of each category's pictures: the run's, else the F1-optimal one of its pictures."""
    result = {}
    for group, members in by_category(pictures).items():
        dataset, category = group
        image_threshold = category_threshold(dict(thresholds or {}), dataset, category, "image")
        pixel = category_threshold(dict(thresholds or {}), dataset, category, "pixel")
        if pixel is not None and thresholds is not None:
            result[group] = Binarisation(pixel, str(thresholds.get("description", "")), image_threshold)
            continue
        maps = torch.stack([p.anomaly_map.float() for p in members])
        masks = torch.stack([p.mask.float() for p in members])
        fallback = pictured_rule(f1_optimal_threshold(maps, masks), len(members), category)
        result[group] = Binarisation(fallback.threshold, fallback.rule, image_threshold)
    return result


def save_pictures(
    pictures: list[Picture],
    folder: str | Path,
    transform: ImageTransform | None = None,
    per_dataset: bool = False,
    scales: Mapping[Group, MapScale] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write one figure per picture: image | ground truth | overlay | prediction (| defect type), with a colour bar.

    Args:
        pictures: Kept test images (``Results.pictures``).
        folder: Output folder.
        transform: The transform that normalised the images (OpenAI CLIP statistics by default).
        per_dataset: Put each category under a folder of its dataset (``<folder>/<dataset>/<category>/``).
        scales: Colour scale per ``(dataset, category)`` (:func:`picture_scales`); by default one scale for all,
            from the lowest to the highest pictured map value.
        thresholds: ``Results.thresholds``: the run's pixel thresholds binarise the prediction panels; without them,
            the F1-optimal threshold over each category's pictures does (see :mod:`zsad.viz.panels`).

    Returns:
        The written files, in the order of ``pictures`` grouped by category.
    """
    transform = transform or ImageTransform(size=1)
    scales = scales or picture_scales(pictures)
    chosen = binarisations(pictures, thresholds)
    written = []
    for group, members in by_category(pictures).items():
        for picture in members:
            figure = render_picture(picture, chosen[group], scales[group], transform)
            written.append(save_image(figure, picture_path(folder, picture, per_dataset)))
    return written
