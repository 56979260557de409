"""One figure per test image: image | ground truth | anomaly-map overlay | binarised prediction [| defect type].

The overlay is drawn on a fixed :class:`~zsad.viz.scales.MapScale` (one per run, or per category), with a colour
bar labelled in map values. The prediction panel shows the map binarised at the category's pixel threshold:

* the **run's threshold** when ``zsad test`` chose thresholds (``--results.threshold_rule``; see
  :mod:`zsad.metrics.thresholds`): the title names the rule and says when it was tuned on the target set;
* otherwise the **F1-optimal pixel threshold of the pictured images of the category** (all the pixels the pictures
  show, not every test pixel of the category; the title says so, and that it uses the test labels).

For methods with defect classes (DAPO's ``Scores.class_map``), a fifth panel colours each predicted-anomalous pixel
by its predicted defect type, with a legend of the defect words; predicted-anomalous pixels that the head left
without a type (its own ``class_threshold`` not reached) are grey.

Each figure stores what it shows as PNG text entries (``zsad:path``, ``zsad:score``, ``zsad:scale_low``, ...),
which the result gallery (``zsad report --html``) reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from zsad.data.transforms import ImageTransform
from zsad.metrics.results import Picture
from zsad.metrics.thresholds import TARGET_NOTE
from zsad.metrics.thresholds import f1_optimal_threshold as _f1_optimal_threshold
from zsad.viz.overlay import (
    RGB,
    ColourBar,
    Figure,
    LegendEntry,
    Panel,
    compose_figure,
    heat_overlay,
    mask_image,
    to_uint8_image,
)
from zsad.viz.scales import MapScale

UNTYPED_COLOUR: RGB = (128, 128, 128)
UNTYPED = "no type (below the head's class threshold)"
PREDICTION_CAPTION = "prediction"
DEFECT_CAPTION = "defect type"
INFO_PREFIX = "zsad:"
"""Prefix of the PNG text entries a figure carries."""


@dataclass(frozen=True)
class Binarisation:
    """The pixel threshold of a figure's prediction panel and the words that say where it comes from.

    Attributes:
        threshold: The threshold (``None``: nothing is predicted).
        rule: How it was chosen, for the title.
        image_threshold: The category's image threshold, for the caption's predicted label (``None``: no label).
    """

    threshold: float | None
    rule: str
    image_threshold: float | None = None


def f1_optimal_threshold(maps: Tensor, masks: Tensor) -> float | None:
    """The map value ``t`` whose prediction ``map >= t`` has the highest pixel F1 against the masks.

    Ties in F1 go to the highest such threshold; the threshold behind ``pixel_f1max`` of the same pixels
    (:func:`zsad.metrics.thresholds.f1_optimal_threshold`).

    Args:
        maps: Anomaly maps of any shape.
        masks: Masks with as many elements (true or > 0.5 is anomalous).

    Returns:
        The threshold, or ``None`` when the masks hold no anomalous pixel or no normal one.
    """
    return _f1_optimal_threshold(maps, masks)


def pictured_rule(threshold: float | None, pictured: int, category: str) -> Binarisation:
    """The fallback binarisation: the F1-optimal threshold over a category's pictured images."""
    where = f"the {pictured} pictured image(s) of {category}"
    if threshold is None:
        return Binarisation(None, f"no threshold (no defect pixels, or only defect pixels, among {where})")
    return Binarisation(threshold, f"F1-optimal over {where} ({TARGET_NOTE})")


def class_colour(index: int) -> RGB:
    """Colour of defect class ``index`` (1..C-1): tab20, cycling after 20 classes."""
    red, green, blue, _ = colormaps["tab20"]((index - 1) % 20)
    return round(red * 255), round(green * 255), round(blue * 255)


def defect_type_panel(
    image: np.ndarray, class_map: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, list[LegendEntry]]:
    """Predicted-anomalous pixels coloured by defect class over the dimmed grey image, and the legend entries.

    Args:
        image: ``H x W x 3`` uint8 image.
        class_map: ``H x W`` class index per pixel (0 normal, 1.. defect classes).
        predicted: ``H x W`` bool, the binarised prediction.
        class_names: Class names, class 0 first; a missing name reads ``class <index>``.

    Returns:
        The panel and, for each class shown, its colour and name (grey for predicted pixels without a type).
    """
    grey = (image.mean(axis=2, keepdims=True) * 0.4).astype(np.uint8)
    panel = np.repeat(grey, 3, axis=2)
    legend: list[LegendEntry] = []
    for index in np.unique(class_map[predicted]).tolist():
        colour = UNTYPED_COLOUR if index == 0 else class_colour(index)
        panel[predicted & (class_map == index)] = colour
        name = UNTYPED if index == 0 else class_names[index] if index < len(class_names) else f"class {index}"
        legend.append((colour, name))
    legend.sort(key=lambda entry: entry[1] == UNTYPED)  # the defect words first
    return panel, legend


def picture_panels(
    picture: Picture, threshold: float | None, scale: MapScale, transform: ImageTransform
) -> tuple[list[Panel], list[LegendEntry]]:
    """The captioned panels of one picture (four, or five with a class map) and the defect legend.

    Args:
        picture: A kept test image with its maps.
        threshold: Binarisation threshold of the prediction panel (``None``: nothing is predicted).
        scale: Colour scale of the overlay (shared by a run, or a category).
        transform: The transform that normalised the image (to undo it).
    """
    image = to_uint8_image(transform.denormalize(picture.image))
    anomaly_map = picture.anomaly_map.float().numpy()
    predicted = anomaly_map >= threshold if threshold is not None else np.zeros(anomaly_map.shape, dtype=bool)
    panels = [
        ("image", image),
        ("ground truth", mask_image(picture.mask.float().numpy())),
        ("anomaly map", heat_overlay(image, anomaly_map, scale)),
        (PREDICTION_CAPTION, mask_image(predicted)),
    ]
    legend: list[LegendEntry] = []
    if picture.class_map is not None:
        panel, legend = defect_type_panel(image, picture.class_map.numpy(), predicted, picture.class_names)
        panels.append((DEFECT_CAPTION, panel))
    return panels, legend


def label_words(label: int) -> str:
    """``"anomalous"`` or ``"normal"``."""
    return "anomalous" if label else "normal"


def caption(picture: Picture, binarisation: Binarisation) -> list[str]:
    """The title lines: image, ground truth, score (and predicted label), then the binarisation rule."""
    name = Path(picture.path)
    where = f"{picture.dataset}/{picture.category}" if picture.dataset else picture.category
    first = f"{where}  {name.parent.name}/{name.name}  {label_words(picture.label)}  score {picture.score:.4g}"
    if binarisation.image_threshold is not None:
        predicted = label_words(int(picture.score >= binarisation.image_threshold))
        first += f"  predicted {predicted} (image t {binarisation.image_threshold:.4g})"
    if binarisation.threshold is None:
        return [first, f"prediction: {binarisation.rule}"]
    return [first, f"prediction: map >= {binarisation.threshold:.4g}, {binarisation.rule}"]


def picture_info(picture: Picture, binarisation: Binarisation, scale: MapScale) -> dict[str, str]:
    """The PNG text entries of a figure: what it shows, for tools that read figures back (the gallery)."""
    values = {
        "path": picture.path,
        "dataset": picture.dataset,
        "category": picture.category,
        "defect_type": picture.defect_type,
        "label": str(picture.label),
        "score": repr(float(picture.score)),
        "scale_low": repr(scale.low),
        "scale_high": repr(scale.high),
        "scale_rule": scale.rule,
        "pixel_threshold": "" if binarisation.threshold is None else repr(binarisation.threshold),
        "image_threshold": "" if binarisation.image_threshold is None else repr(binarisation.image_threshold),
        "threshold_rule": binarisation.rule,
    }
    return {f"{INFO_PREFIX}{key}": value for key, value in values.items()}


def render_picture(
    picture: Picture, binarisation: Binarisation, scale: MapScale, transform: ImageTransform
) -> Image.Image:
    """The figure of one picture: its panels, a caption, the colour bar (threshold marked) and the legend.

    Args:
        picture: A kept test image with its maps.
        binarisation: The pixel threshold of the prediction panel, its rule, and the image threshold.
        scale: Colour scale of the overlay.
        transform: The transform that normalised the image.
    """
    panels, legend = picture_panels(picture, binarisation.threshold, scale, transform)
    bar = ColourBar(scale, binarisation.threshold, f"map value ({scale.rule_words()})")
    info = picture_info(picture, binarisation, scale)
    return compose_figure(Figure(panels, caption(picture, binarisation), bar, legend, info))
