"""Synthetic defects: scratches, holes, stains, cracks and missing pieces painted onto defect-free images.

A defect function returns ``(region, target, alpha)``: the image becomes ``target`` blended in with weight
``alpha`` inside ``region`` and stays bit-identical outside it. ``alpha >= 0.5`` everywhere inside the region,
so the region is exactly the set of materially changed pixels and doubles as the ground-truth mask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from .patterns import (
    OBJECT_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    BoolMask,
    FloatImage,
    _flat,
    _grid,
    _value_noise,
    background_colour,
    object_mask,
)

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "crack", "missing")

DEFECT_LOOKS: tuple[str, ...] = ("natural", "marked")
"""How defects look: ``natural`` (drawn from the product's own colours) or ``marked`` (see :func:`mark_defect`)."""

# Far from every category palette: the reds of checker and capsule have almost no blue.
MARK_COLOUR = (0.90, 0.12, 0.78)

# Largest fraction of the image a defect mask may cover; real MVTec defects are far smaller than this.
MAX_DEFECT_FRACTION = 0.25

DefectResult = tuple[BoolMask, FloatImage, np.ndarray]

_DARK = (0.06, 0.05, 0.05)
_BRIGHT = (0.96, 0.95, 0.92)


def _luminance(colour: np.ndarray) -> np.ndarray:
    return colour @ np.asarray([0.299, 0.587, 0.114], np.float32)


def _erode(mask: BoolMask, steps: int) -> BoolMask:
    """Binary erosion with a 4-neighbourhood, ``steps`` times; keeps defect centres off object edges."""
    out = mask.copy()
    for _ in range(steps):
        shrunk = out.copy()
        shrunk[1:] &= out[:-1]
        shrunk[:-1] &= out[1:]
        shrunk[:, 1:] &= out[:, :-1]
        shrunk[:, :-1] &= out[:, 1:]
        out = shrunk
    return out


def _dilate(mask: BoolMask, steps: int) -> BoolMask:
    return ~_erode(~mask, steps)


def _pick_centre(rng: np.random.Generator, support: BoolMask) -> tuple[float, float]:
    """A random pixel well inside the product and away from the image border, as ``(y, x)``."""
    size = support.shape[0]
    inner = _erode(support, max(1, round(0.05 * size)))
    margin = round(0.15 * size)
    inner[:margin], inner[-margin:], inner[:, :margin], inner[:, -margin:] = False, False, False, False
    ys, xs = np.nonzero(inner if inner.any() else support)
    k = rng.integers(len(ys))
    return float(ys[k]) + 0.5, float(xs[k]) + 0.5


def _blob(rng: np.random.Generator, size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Depth inside an irregular round blob: 1 at the centre, 0 on the outline, negative outside."""
    y, x = _grid(size)
    dy, dx = y - centre[0], x - centre[1]
    theta = np.arctan2(dy, dx)
    outline = np.ones_like(theta)
    for k in (2, 3, 5):  # a few low harmonics make the outline lumpy but still roughly round
        outline = outline + rng.uniform(0.0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return 1.0 - np.hypot(dy, dx) / (radius * outline)


def _draw(size: int, draw: Callable[[ImageDraw.ImageDraw], None]) -> BoolMask:
    canvas = Image.new("L", (size, size), 0)
    draw(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 127


def _stroke_width(rng: np.random.Generator, size: int, low: float, high: float) -> int:
    """Line width that scales with the image, never below one pixel."""
    return max(1, round(size / 64 * rng.uniform(low, high)))


def _scratch(rng: np.random.Generator, base: FloatImage, support: BoolMask) -> DefectResult:
    size = base.shape[0]
    cy, cx = _pick_centre(rng, support)
    angle, length = rng.uniform(0, np.pi), size * rng.uniform(0.3, 0.55)
    direction, normal = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    centre = np.array([cx, cy])
    start, end = centre - direction * length / 2, centre + direction * length / 2
    bend = centre + normal * length * rng.uniform(-0.15, 0.15)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier: a gentle curve
    width = _stroke_width(rng, size, 1.0, 2.0)
    region = _draw(size, lambda d: d.line([tuple(p) for p in points], fill=255, width=width, joint="curve"))
    region &= support
    colour = np.asarray(_BRIGHT if rng.random() < 0.5 else _DARK, np.float32)
    # a scratch must contrast with what it crosses, so flip to the other polarity when it would not
    if region.any() and abs(_luminance(colour) - _luminance(base[region].mean(axis=0))) < 0.35:
        colour = np.asarray(_DARK if colour[0] > 0.5 else _BRIGHT, np.float32)
    return region, _flat(tuple(colour), size), np.full((size, size), 0.9, np.float32)


def _hole(rng: np.random.Generator, base: FloatImage, support: BoolMask) -> DefectResult:
    size = base.shape[0]
    depth = _blob(rng, size, _pick_centre(rng, support), size * rng.uniform(0.05, 0.1))
    rim = np.clip(depth / 0.35, 0.0, 1.0)  # the lit inner wall fades into the dark bottom
    return depth > 0, _flat(_DARK, size), (0.65 + 0.35 * rim).astype(np.float32)


def _stain(rng: np.random.Generator, base: FloatImage, support: BoolMask) -> DefectResult:
    size = base.shape[0]
    depth = _blob(rng, size, _pick_centre(rng, support), size * rng.uniform(0.08, 0.15))
    region = (depth > 0) & support
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.3, 0.45) / np.linalg.norm(shift)
    mean = base[region].mean(axis=0) if region.any() else base.reshape(-1, 3).mean(axis=0)
    shift = np.where((mean + shift > 0.95) | (mean + shift < 0.05), -shift, shift)  # keep the shift unclipped
    soft = np.clip(depth / 0.6, 0.0, 1.0)
    alpha = (0.5 + 0.5 * soft * soft * (3 - 2 * soft)) * (0.9 + 0.1 * _value_noise(rng, size, 4))
    return region, np.clip(base + shift.astype(np.float32), 0.0, 1.0), np.maximum(alpha, 0.5)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float) -> list[tuple]:
    points, point = [tuple(start)], start.copy()
    for _ in range(steps):
        heading += rng.normal(0.0, 0.55)  # sharp random turns make the line jagged
        point = point + step * np.array([np.cos(heading), np.sin(heading)])
        points.append(tuple(point))
    return points


def _crack(rng: np.random.Generator, base: FloatImage, support: BoolMask) -> DefectResult:
    size = base.shape[0]
    cy, cx = _pick_centre(rng, support)
    heading, step = rng.uniform(0, 2 * np.pi), size * rng.uniform(0.025, 0.035)
    steps = int(rng.integers(5, 9))
    # grow both ways from the centre so the crack passes through the chosen point on the product
    forward = _walk(rng, np.array([cx, cy]), heading, steps, step)
    backward = _walk(rng, np.array([cx, cy]), heading + np.pi, steps, step)
    path = backward[::-1] + forward[1:]
    branch_at = np.asarray(path[int(rng.integers(len(path)))])
    branch = _walk(rng, branch_at, heading + rng.choice([-1.0, 1.0]) * 1.1, steps // 2, step * 0.8)
    width = _stroke_width(rng, size, 0.7, 1.3)

    def paint(d: ImageDraw.ImageDraw) -> None:
        d.line(path, fill=255, width=width)
        d.line(branch, fill=255, width=width)

    return _draw(size, paint), np.clip(base * 0.15, 0.0, 1.0), np.ones((size, size), np.float32)


def _missing(rng: np.random.Generator, base: FloatImage, support: BoolMask, is_object: bool) -> DefectResult:
    size = base.shape[0]
    noise = 0.012 * rng.standard_normal(base.shape, dtype=np.float32)  # so the gap looks photographed, not painted
    alpha = np.ones((size, size), np.float32)
    if is_object:
        # cut a chunk off one side of the object along a ragged line and show the background through it
        y, x = _grid(size)
        angle = rng.uniform(0, 2 * np.pi)
        along = y * np.sin(angle) + x * np.cos(angle) + 0.05 * size * (_value_noise(rng, size, 4) - 0.5)
        cut = np.quantile(along[support], rng.uniform(0.78, 0.9))
        background = np.asarray(background_colour(np.round(base * 255).astype(np.uint8)), np.float32)
        return along > cut, np.clip(background + noise, 0.0, 1.0), alpha
    cy, cx = _pick_centre(rng, support)
    radius = size * rng.uniform(0.1, 0.16)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(6, 10))))
    radii = radius * rng.uniform(0.6, 1.0, len(angles))
    polygon = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
    region = _draw(size, lambda d: d.polygon(polygon, fill=255))
    # a torn-out patch shows the backing, which must contrast with the material around it
    backing = _DARK if _luminance(base[region].mean(axis=0) if region.any() else base.mean((0, 1))) > 0.4 else _BRIGHT
    return region, np.clip(np.asarray(backing, np.float32) + noise, 0.0, 1.0), alpha


def apply_defect(
    image: np.ndarray, defect: str, rng: np.random.Generator, category: str
) -> tuple[np.ndarray, np.ndarray]:
    """Add one synthetic defect to a defect-free image.

    Pixels outside the returned mask are left bit-identical, and every pixel inside it is blended at least
    halfway towards the defect's appearance, so the mask is exactly the set of materially changed pixels.
    For object categories the defect is confined to the object.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image from :func:`render_category_image` (square).
        defect: One of :data:`DEFECT_TYPES`.
        rng: Source of the defect's randomness.
        category: The image's category; decides what counts as the product and as background.

    Returns:
        The defective uint8 image and its ``(H, W)`` bool mask, non-empty and covering at most
        :data:`MAX_DEFECT_FRACTION` of the image.

    Raises:
        ValueError: If ``defect`` or ``category`` is unknown, or the image is not ``(H, W, 3)`` uint8.
        RuntimeError: If no valid defect could be placed (the object is too small to be found).
    """
    if defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {defect!r}; valid: {', '.join(DEFECT_TYPES)}")
    if category not in SYNTHETIC_CATEGORIES:
        raise ValueError(f"unknown synthetic category {category!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    base = image.astype(np.float32) / 255.0
    support = object_mask(image, category)
    if not support.any():
        raise RuntimeError(f"no {category!r} object found in the image to put a {defect!r} defect on")
    allowed = support
    if defect == "missing" and category in OBJECT_CATEGORIES:
        # also take the antialiased outline next to the chunk, or a ghost of the lost edge would stay behind
        allowed = _dilate(support, 2) & object_mask(image, category, threshold=0.06)
    limit = MAX_DEFECT_FRACTION * support.size
    for _ in range(32):  # rare geometric misses (e.g. a crack clipped to nothing) are simply redrawn
        if defect == "missing":
            region, target, alpha = _missing(rng, base, support, category in OBJECT_CATEGORIES)
        else:
            region, target, alpha = _DEFECTS[defect](rng, base, support)
        kept = region & allowed
        # a stroke or blob that mostly falls off the object would leave a barely visible sliver; redraw it
        mostly_on = defect == "missing" or kept.sum() >= 0.5 * region.sum()
        region = kept
        if mostly_on and 0 < region.sum() <= limit:
            break
    else:
        raise RuntimeError(f"could not place a {defect!r} defect on a {category!r} image of shape {image.shape}")
    weight = alpha[..., None]
    blended = np.round(np.clip(base * (1 - weight) + target * weight, 0.0, 1.0) * 255).astype(np.uint8)
    return np.where(region[..., None], blended, image), region


def mark_defect(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Repaint a defect's pixels in one noisy colour, magenta, that every category shares.

    Natural defects take their colours from the product (dark on light, light on dark), so what they share across
    categories is semantic, which a randomly initialised backbone cannot see: a linear probe on the tiny random
    CLIP's normalised patch tokens, fitted on four categories, ranks the other four's defect patches at chance
    (AUROC 0.49), and so do the methods. Marked defects give it a cue that carries over (the same probe: 0.76).
    High-frequency patterns probed higher but resemble the striped and checkered categories, and the methods
    transferred them less reliably than the colour.

    Args:
        image: ``(H, W, 3)`` uint8 image with a defect.
        mask: ``(H, W)`` bool mask of the defect; pixels outside it stay bit-identical.
        rng: Source of the colour noise.

    Returns:
        The marked uint8 image.
    """
    noise = 0.05 * rng.standard_normal(image.shape, dtype=np.float32)
    painted = np.clip(np.asarray(MARK_COLOUR, np.float32) + noise, 0.0, 1.0)
    return np.where(mask[..., None], np.round(painted * 255).astype(np.uint8), image)


_DEFECTS: dict[str, Callable[[np.random.Generator, FloatImage, BoolMask], DefectResult]] = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "crack": _crack,
}
