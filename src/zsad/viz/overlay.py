"""Pictures of anomaly maps: image | ground truth | heat-map overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch import Tensor

MIN_PANEL_HEIGHT = 192


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


def picture_panel(image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, title: str = "") -> Image.Image:
    """Side-by-side panel: image, ground-truth mask, overlay; ``title`` is written above."""
    mask_rgb = np.repeat((mask > 0.5)[..., None] * 255, 3, axis=2).astype(np.uint8)
    panel = Image.fromarray(np.concatenate([image, mask_rgb, heat_overlay(image, anomaly_map)], axis=1))
    scale = max(1, MIN_PANEL_HEIGHT // panel.height)  # small test images stay readable
    panel = panel.resize((panel.width * scale, panel.height * scale), Image.NEAREST)
    banner = 14 if title else 0
    canvas = Image.new("RGB", (panel.width, panel.height + banner), "white")
    canvas.paste(panel, (0, banner))
    if title:
        ImageDraw.Draw(canvas).text((2, 1), title, fill="black")
    return canvas


def save_panel(path: str | Path, image: np.ndarray, mask: np.ndarray, anomaly_map: np.ndarray, title: str = "") -> Path:
    """Write :func:`picture_panel` as PNG, creating folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture_panel(image, mask, anomaly_map, title).save(path)
    return path
