"""Drawing primitives for pictures of anomaly maps: colourings of maps and masks, and a captioned row of panels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch import Tensor

MIN_PANEL_HEIGHT = 192
"""Panels smaller than this are scaled up (nearest neighbour) so that small test images stay readable."""
TEXT_LINE_HEIGHT = 12
SWATCH_WIDTH = 10

RGB = tuple[int, int, int]
Panel = tuple[str, np.ndarray]
"""A caption and an ``H x W x 3`` uint8 array."""
LegendEntry = tuple[RGB, str]
"""A colour and what it means."""


def to_uint8_image(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` tensor in [0, 1] to an ``H x W x 3`` uint8 array."""
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def heat_overlay(
    image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5, vmax: float | None = None
) -> np.ndarray:
    """Blend a jet-coloured anomaly map over an RGB image; the map is scaled to [0, vmax]."""
    top = vmax if vmax is not None else float(anomaly_map.max())
    scaled = anomaly_map / top if top > 0 else anomaly_map
    colours = colormaps["jet"](np.clip(scaled, 0, 1))[..., :3] * 255
    return ((1 - alpha) * image + alpha * colours).round().astype(np.uint8)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A binary mask (true or > 0.5 is foreground) as white on black RGB."""
    return np.repeat((mask > 0.5)[..., None] * 255, 3, axis=2).astype(np.uint8)


def panel_row(panels: Sequence[Panel], title: Sequence[str] = (), legend: Sequence[LegendEntry] = ()) -> Image.Image:
    """Panels side by side, each captioned, with title lines above and a colour legend below.

    Args:
        panels: Captions and equally tall ``H x W x 3`` uint8 arrays.
        title: Lines written above the row.
        legend: Colour swatches and their meanings, written below the row (wrapped to its width).

    Returns:
        The composed RGB image.
    """
    row = Image.fromarray(np.concatenate([array for _, array in panels], axis=1))
    scale = max(1, MIN_PANEL_HEIGHT // row.height)
    row = row.resize((row.width * scale, row.height * scale), Image.NEAREST)
    legend_lines = _wrap_legend(legend, row.width)
    top = TEXT_LINE_HEIGHT * (len(title) + 1)  # the title lines, then the captions
    canvas = Image.new("RGB", (row.width, top + row.height + TEXT_LINE_HEIGHT * len(legend_lines)), "white")
    canvas.paste(row, (0, top))
    draw = ImageDraw.Draw(canvas)
    for line, text in enumerate(title):
        draw.text((2, 1 + line * TEXT_LINE_HEIGHT), text, fill="black")
    x = 0
    for caption, array in panels:
        draw.text((x + 2, top - TEXT_LINE_HEIGHT + 1), caption, fill="black")
        x += array.shape[1] * scale
    for line, entries in enumerate(legend_lines):
        y = top + row.height + line * TEXT_LINE_HEIGHT
        x = 2
        for colour, text in entries:
            draw.rectangle((x, y + 2, x + SWATCH_WIDTH - 2, y + TEXT_LINE_HEIGHT - 2), fill=colour, outline="black")
            draw.text((x + SWATCH_WIDTH + 2, y + 1), text, fill="black")
            x += _legend_entry_width(draw, text)
    return canvas


def picture_panel(image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, title: str = "") -> Image.Image:
    """Image | ground-truth mask | heat-map overlay, with ``title`` above."""
    panels = [("image", image), ("ground truth", mask_image(mask)), ("anomaly map", heat_overlay(image, anomaly_map))]
    return panel_row(panels, [title] if title else [])


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write an image as PNG, creating folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_panel(path: str | Path, image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, title: str = "") -> Path:
    """Write :func:`picture_panel` as PNG, creating folders as needed."""
    return save_image(picture_panel(image, mask, anomaly_map, title), path)


def _legend_entry_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    return SWATCH_WIDTH + 4 + int(draw.textlength(text)) + 10


def _wrap_legend(legend: Sequence[LegendEntry], width: int) -> list[list[LegendEntry]]:
    """Legend entries in lines no wider than ``width``."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[list[LegendEntry]] = []
    used = width
    for entry in legend:
        needed = _legend_entry_width(measure, entry[1])
        if used + needed > width and (not lines or lines[-1]):
            lines.append([])
            used = 2
        lines[-1].append(entry)
        used += needed
    return lines
