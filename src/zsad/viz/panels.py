"""One figure per test image: image | ground truth | anomaly-map overlay | binarised prediction [| defect type].

The prediction panel shows the map binarised at the **F1-optimal pixel threshold of the pictured images of the
image's category**: the threshold is searched over the maps and masks of the pictures kept for that category (all
the pixels the pictures show), not over every test pixel of the category. The evaluator keeps only a sample of
maps, so the threshold of the full category would need a second pass over its stored maps; the kept sample mixes
normal and anomalous images (see :mod:`zsad.viz.selection`), and every figure names the rule in its title.

For methods with defect classes (DAPO's ``Scores.class_map``), a fifth panel colours each predicted-anomalous pixel
by its predicted defect type, with a legend of the defect words; predicted-anomalous pixels that the head left
without a type (its own ``class_threshold`` not reached) are grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from zsad.data.transforms import ImageTransform
from zsad.metrics.curves import threshold_sweep
from zsad.metrics.results import Picture
from zsad.viz.overlay import RGB, LegendEntry, Panel, heat_overlay, mask_image, panel_row, to_uint8_image

UNTYPED_COLOUR: RGB = (128, 128, 128)
UNTYPED = "no type (below the head's class threshold)"
PREDICTION_CAPTION = "prediction"
DEFECT_CAPTION = "defect type"


def f1_optimal_threshold(maps: Tensor, masks: Tensor) -> float | None:
    """The map value ``t`` whose prediction ``map >= t`` has the highest pixel F1 against the masks.

    Ties in F1 go to the highest such threshold. Uses the exact sweep of :mod:`zsad.metrics.curves`, so the
    threshold is the one behind the ``pixel_f1max`` of the same pixels.

    Args:
        maps: Anomaly maps of any shape.
        masks: Masks with as many elements (true or > 0.5 is anomalous).

    Returns:
        The threshold, or ``None`` when the masks hold no anomalous pixel or no normal one.
    """
    scores = maps.detach().float().cpu().reshape(-1)
    positive = _foreground(masks).reshape(-1)
    num_positive = int(positive.sum())
    if num_positive in (0, positive.numel()):
        return None
    best_f1, best_rank, rank = -1.0, 0, 0
    for groups in threshold_sweep(scores, positive):  # distinct scores, highest first
        true_positive = groups.positive_above + groups.positive
        predicted = true_positive + groups.negative_above + groups.negative
        f1 = 2 * true_positive / (predicted + num_positive)
        top = int(np.argmax(f1))
        if f1[top] > best_f1:
            best_f1, best_rank = float(f1[top]), rank + top
        rank += f1.size
    distinct = torch.unique(scores).flip(0)  # the sweep's thresholds, highest first
    return float(distinct[best_rank])


def threshold_rule(threshold: float | None, pictured: int, category: str) -> str:
    """The title line that says how the prediction panel was binarised."""
    where = f"the {pictured} pictured image(s) of {category}"
    if threshold is None:
        return f"prediction: no threshold (no defect pixels, or only defect pixels, among {where})"
    return f"prediction: map >= {threshold:.4g}, the F1-optimal pixel threshold over {where}"


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
    picture: Picture, threshold: float | None, vmax: float, transform: ImageTransform
) -> tuple[list[Panel], list[LegendEntry]]:
    """The captioned panels of one picture (four, or five with a class map) and the defect legend.

    Args:
        picture: A kept test image with its maps.
        threshold: Binarisation threshold of the prediction panel (``None``: nothing is predicted).
        vmax: Map value drawn at the top of the colour scale (shared within a category).
        transform: The transform that normalised the image (to undo it).
    """
    image = to_uint8_image(transform.denormalize(picture.image))
    anomaly_map = picture.anomaly_map.float().numpy()
    predicted = anomaly_map >= threshold if threshold is not None else np.zeros(anomaly_map.shape, dtype=bool)
    panels = [
        ("image", image),
        ("ground truth", mask_image(picture.mask.float().numpy())),
        ("anomaly map", heat_overlay(image, anomaly_map, vmax=vmax)),
        (PREDICTION_CAPTION, mask_image(predicted)),
    ]
    legend: list[LegendEntry] = []
    if picture.class_map is not None:
        panel, legend = defect_type_panel(image, picture.class_map.numpy(), predicted, picture.class_names)
        panels.append((DEFECT_CAPTION, panel))
    return panels, legend


def render_picture(
    picture: Picture, threshold: float | None, vmax: float, transform: ImageTransform, pictured: int
) -> Image.Image:
    """The figure of one picture: its panels, a title naming the image and the threshold rule, the legend.

    Args:
        picture: A kept test image with its maps.
        threshold: F1-optimal threshold of its category's pictures (see :func:`f1_optimal_threshold`).
        vmax: Top of the category's colour scale.
        transform: The transform that normalised the image.
        pictured: How many pictures of the category the threshold was searched over (for the title).
    """
    panels, legend = picture_panels(picture, threshold, vmax, transform)
    name = Path(picture.path)
    where = f"{picture.dataset}/{picture.category}" if picture.dataset else picture.category
    title = [
        f"{where}  {name.parent.name}/{name.name}  image score {picture.score:.3f}",
        threshold_rule(threshold, pictured, picture.category),
    ]
    return panel_row(panels, title, legend)


def _foreground(masks: Tensor) -> Tensor:
    masks = masks.detach().cpu()
    return masks if masks.dtype == torch.bool else masks.float() > 0.5
