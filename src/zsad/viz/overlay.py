"""Drawing primitives for pictures of anomaly maps: fixed-scale colourings, a colour bar, and captioned figures.

Every heat map is drawn on a :class:`~zsad.viz.scales.MapScale` given by the caller (one per run, or per category),
never stretched to its own maximum: a constant map is one colour, and the same value is the same colour in every
picture of a run. Every figure carries a colour bar labelled with the real map values (and the pixel threshold,
when there is one), and its text is sized from the panel height so that it reads without zooming.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from torch import Tensor

from zsad.viz.scales import MapScale

MIN_PANEL_HEIGHT = 192
"""Panels smaller than this are scaled up (nearest neighbour) so that small test images stay readable."""
COLORMAP = "jet"
"""Colour map of anomaly maps: blue is the bottom of the scale, dark red the top."""
OVERLAY_ALPHA = 0.5
TICKS = 5
"""Labelled values on the colour bar, from the bottom of the scale to its top."""
PNG_COMPRESSION = 1
"""zlib level of written figures: level 1 writes 3x faster than Pillow's default 6 for files about 20 % larger."""
THRESHOLD_COLOUR = (255, 255, 255)
PANEL_RULE = (160, 160, 160)

RGB = tuple[int, int, int]
Panel = tuple[str, np.ndarray]
"""A caption and an ``H x W x 3`` uint8 array."""
LegendEntry = tuple[RGB, str]
"""A colour and what it means."""


@dataclass(frozen=True)
class ColourBar:
    """The colour bar of a figure: its scale and, optionally, the threshold marked on it.

    Attributes:
        scale: Map values at the bottom and top of the colours.
        threshold: Pixel threshold drawn as a line across the bar (``None``: no line).
        label: Title above the bar.
    """

    scale: MapScale
    threshold: float | None = None
    label: str = "map value"


@dataclass
class Figure:
    """Everything :func:`compose_figure` draws: panels side by side, title lines, a colour bar and a legend.

    Attributes:
        panels: Captions and equally tall ``H x W x 3`` uint8 arrays.
        title: Lines written above the panels.
        bar: The colour bar at the right (``None``: none).
        legend: Colour swatches and their meanings, written below the panels (wrapped to the width).
        info: Text entries stored in the PNG (``zsad:*`` keys: what the figure shows, for tools that read it).
    """

    panels: list[Panel]
    title: list[str] = field(default_factory=list)
    bar: ColourBar | None = None
    legend: list[LegendEntry] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)


def to_uint8_image(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` tensor in [0, 1] to an ``H x W x 3`` uint8 array."""
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=8)
def colour_table(name: str = COLORMAP) -> np.ndarray:
    """``[256, 3]`` uint8 colours of a matplotlib colour map, bottom to top."""
    from matplotlib import colormaps  # imported on first use: matplotlib is slow to import

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colourise(anomaly_map: np.ndarray, scale: MapScale, colormap: str = COLORMAP) -> np.ndarray:
    """An ``H x W`` map as ``H x W x 3`` uint8 colours on ``scale`` (a constant map gives one colour)."""
    levels = (scale.fractions(anomaly_map) * 255 + 0.5).astype(np.uint8)
    return colour_table(colormap)[levels]


def heat_overlay(
    image: np.ndarray, anomaly_map: np.ndarray, scale: MapScale, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """Blend the map's colours on ``scale`` over an ``H x W x 3`` uint8 image."""
    colours = colourise(anomaly_map, scale).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha + 0.5).astype(np.uint8)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A binary mask (true or > 0.5 is foreground) as white on black RGB."""
    return np.repeat((np.asarray(mask) > 0.5)[..., None] * 255, 3, axis=2).astype(np.uint8)


def text_size(panel_height: int) -> int:
    """Font size in pixels for figures whose panels are ``panel_height`` tall: about 1/24 of it, at least 13."""
    return max(13, round(panel_height / 24))


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font at ``size`` pixels (no font file needed)."""
    return ImageFont.load_default(size=size)


def compose_figure(figure: Figure) -> Image.Image:
    """Draw a :class:`Figure`: title lines, captioned panels, the colour bar at the right, the legend below.

    Panels lower than :data:`MIN_PANEL_HEIGHT` are enlarged (nearest neighbour); text is sized from the panel height
    (:func:`text_size`).
    """
    row = np.concatenate([array for _, array in figure.panels], axis=1)
    scale = max(1, MIN_PANEL_HEIGHT // row.shape[0])
    if scale > 1:
        row = row.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = row.shape[:2]
    size = text_size(height)
    face = font(size)
    line = round(size * 1.35)
    bar_width = _bar_width(figure.bar, face, size) if figure.bar is not None else 0
    legend_lines = _wrap_legend(figure.legend, width + bar_width, face, size)
    title = [part for text in figure.title for part in _wrap_text(text, width + bar_width - size, face)]
    top = line * (len(title) + 1)  # the title lines, then the captions
    canvas = Image.new("RGB", (width + bar_width, top + height + line * len(legend_lines) + size // 3), "white")
    canvas.paste(Image.fromarray(row), (0, top))
    draw = ImageDraw.Draw(canvas)
    for index, text in enumerate(title):
        draw.text((size // 3, index * line + size // 6), text, fill="black", font=face)
    x = 0
    for caption, array in figure.panels:
        draw.text((x + size // 3, top - line + size // 6), caption, fill="black", font=face)
        right = x + array.shape[1] * scale - 1  # a thin grey frame: a white panel does not melt into the page
        draw.rectangle((x, top, right, top + height - 1), outline=PANEL_RULE)
        x = right + 1
    if figure.bar is not None:
        _draw_bar(canvas, draw, figure.bar, (width, top, height), face, size)
    for index, entries in enumerate(legend_lines):
        _draw_legend_line(draw, entries, top + height + index * line + size // 6, face, size)
    canvas.info.update(figure.info)
    return canvas


def _wrap_text(text: str, width: int, face: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken at spaces (a single long word stays whole)."""
    if face.getlength(text) <= width:
        return [text]
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and face.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


def _bar_width(bar: ColourBar, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, size: int) -> int:
    """Room for the bar, its tick labels and its title."""
    labels = [_tick_label(value) for value in _ticks(bar.scale)]
    if bar.threshold is not None:
        labels.append(_threshold_label(bar))
    text = max(max(face.getlength(label) for label in labels), face.getlength(bar.label) - size)
    return int(size * 2.5 + text + size)


def _ticks(scale: MapScale) -> np.ndarray:
    return np.linspace(scale.low, scale.high, TICKS)


def _tick_label(value: float) -> str:
    return f"{value:.3g}"


def _draw_bar(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    bar: ColourBar,
    box: tuple[int, int, int],
    face: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: int,
) -> None:
    """The gradient (bottom: low), tick labels of real values, the threshold line, and the bar's title."""
    left, top, height = box
    x0, stripe = left + size, size
    y0, y1 = top + size // 2, top + height - size // 2
    canvas.paste(Image.fromarray(_gradient(y1 - y0, stripe)), (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + stripe, y1), outline="black")  # around the gradient, not on it
    draw.text((left + size // 3, top - round(size * 1.35) + size // 6), bar.label, fill="black", font=face)

    def y_of(value: float) -> int:
        return round(y1 - 1 - float(bar.scale.fractions(np.array(value))) * (y1 - y0 - 1))

    marked = y_of(bar.threshold) if bar.threshold is not None else None
    for value in _ticks(bar.scale):
        y = y_of(value)
        draw.line((x0 + stripe, y, x0 + stripe + size // 3, y), fill="black")
        if marked is None or abs(y - marked) >= size:  # the threshold's label wins where they would overlap
            draw.text((x0 + stripe + size // 2, y), _tick_label(value), fill="black", font=face, anchor="lm")
    if bar.threshold is not None:
        y = y_of(bar.threshold)
        draw.line((x0 - size // 3, y, x0 + stripe + size // 3, y), fill="black", width=max(3, size // 5))
        draw.line((x0, y, x0 + stripe - 1, y), fill=THRESHOLD_COLOUR, width=max(1, size // 10))
        draw.text((x0 + stripe + size // 2, y), _threshold_label(bar), fill="black", font=face, anchor="lm")


def _threshold_label(bar: ColourBar) -> str:
    """``t 1.5``, saying so when the threshold lies outside the scale (its mark then sits at the end)."""
    threshold = float(bar.threshold or 0.0)
    where = " (below)" if threshold < bar.scale.low else " (above)" if threshold > bar.scale.high else ""
    return f"t {_tick_label(threshold)}{where}"


@functools.lru_cache(maxsize=32)
def _gradient(height: int, width: int, colormap: str = COLORMAP) -> np.ndarray:
    """A vertical strip of the colour map, the top colour at the top."""
    levels = np.linspace(255, 0, max(height, 1)).round().astype(np.uint8)
    return np.repeat(colour_table(colormap)[levels][:, None, :], width, axis=1)


def _legend_entry_width(face: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, size: int) -> int:
    return size + size // 2 + int(face.getlength(text)) + size


def _wrap_legend(
    legend: Sequence[LegendEntry], width: int, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, size: int
) -> list[list[LegendEntry]]:
    """Legend entries in lines no wider than ``width``."""
    lines: list[list[LegendEntry]] = []
    used = width
    for entry in legend:
        needed = _legend_entry_width(face, entry[1], size)
        if used + needed > width and (not lines or lines[-1]):
            lines.append([])
            used = size // 3
        lines[-1].append(entry)
        used += needed
    return lines


def _draw_legend_line(
    draw: ImageDraw.ImageDraw,
    entries: Sequence[LegendEntry],
    y: int,
    face: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: int,
) -> None:
    x = size // 3
    for colour, text in entries:
        draw.rectangle((x, y + size // 8, x + size - 1, y + size), fill=colour, outline="black")
        draw.text((x + size + size // 2, y), text, fill="black", font=face)
        x += _legend_entry_width(face, text, size)


def panel_row(
    panels: Sequence[Panel],
    title: Sequence[str] = (),
    legend: Sequence[LegendEntry] = (),
    bar: ColourBar | None = None,
) -> Image.Image:
    """Panels side by side, each captioned, with title lines above, a colour bar at the right and a legend below.

    Args:
        panels: Captions and equally tall ``H x W x 3`` uint8 arrays.
        title: Lines written above the row.
        legend: Colour swatches and their meanings, written below the row (wrapped to its width).
        bar: The colour bar of the heat-map panels (``None``: no bar).

    Returns:
        The composed RGB image.
    """
    return compose_figure(Figure(list(panels), list(title), bar, list(legend)))


def picture_panel(
    image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, scale: MapScale, title: str = ""
) -> Image.Image:
    """Image | ground-truth mask | heat-map overlay on ``scale``, with ``title`` above and the colour bar."""
    panels = [
        ("image", image),
        ("ground truth", mask_image(mask)),
        ("anomaly map", heat_overlay(image, anomaly_map, scale)),
    ]
    return panel_row(panels, [title] if title else [], bar=ColourBar(scale))


def png_bytes(image: Image.Image, info: Mapping[str, str] | None = None) -> bytes:
    """The image as PNG bytes, with ``info`` (and ``image.info``'s text) as PNG text entries.

    RGB images go through :func:`encode_rgb_png`, other modes through Pillow.
    """
    texts = {key: value for key, value in image.info.items() if isinstance(value, str)}
    texts.update(info or {})
    if image.mode == "RGB":
        return encode_rgb_png(np.asarray(image), texts)
    entries = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        entries.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=entries, compress_level=PNG_COMPRESSION)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_rgb_png(pixels: np.ndarray, texts: Mapping[str, str] | None = None) -> bytes:
    """An ``H x W x 3`` uint8 array as PNG bytes: every row with the "up" filter, zlib level :data:`PNG_COMPRESSION`.

    Pillow picks a filter per row by trying all five, which costs more than the compression itself on figures;
    one fixed filter (the difference to the row above, small on smooth maps and flat backgrounds) writes about a
    third faster for files of about the same size. Text entries go into ``iTXt`` chunks (UTF-8, any key text).
    """
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(height, width * 3)
    raw = np.empty((height, width * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter "up"
    raw[:, 1:] = rows
    raw[1:, 1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    text = b"".join(
        _chunk(b"iTXt", key.encode("latin-1", "replace")[:79] + b"\0\0\0\0\0" + value.encode("utf-8"))
        for key, value in (texts or {}).items()
    )
    data = zlib.compress(raw.tobytes(), PNG_COMPRESSION)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + text + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def save_image(image: Image.Image, path: str | Path, info: Mapping[str, str] | None = None) -> Path:
    """Write an image as PNG (with ``info`` and ``image.info``'s text entries), creating folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image, info))
    return path


def save_panel(
    path: str | Path, image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, scale: MapScale, title: str = ""
) -> Path:
    """Write :func:`picture_panel` as PNG, creating folders as needed."""
    return save_image(picture_panel(image, mask, anomaly_map, scale, title), path)
