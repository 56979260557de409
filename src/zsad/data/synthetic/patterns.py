"""Procedural textures and objects behind the synthetic MVTec-style dataset (defects: :mod:`.defects`).

Every renderer works on float32 images in ``[0, 1]`` and is fully vectorised, so a 256 px image costs a few
milliseconds. Randomness only ever comes from the ``np.random.Generator`` passed in, which keeps generation
reproducible from a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TEXTURE_CATEGORIES: tuple[str, ...] = ("stripes", "checker", "weave", "grain")
OBJECT_CATEGORIES: tuple[str, ...] = ("disc", "ring", "tile", "capsule")
SYNTHETIC_CATEGORIES: tuple[str, ...] = TEXTURE_CATEGORIES + OBJECT_CATEGORIES

FloatImage = np.ndarray  # H x W x 3 float32 in [0, 1]
BoolMask = np.ndarray  # H x W bool


@dataclass(frozen=True)
class _Palette:
    """Colours of one category.

    Textures blend ``primary`` (dark) into ``secondary`` (light). Objects put a ``secondary`` body with an
    ``accent`` detail on a plain ``primary`` background.
    """

    primary: tuple[float, float, float]
    secondary: tuple[float, float, float]
    accent: tuple[float, float, float] = (0.0, 0.0, 0.0)


# Chosen so that categories differ in mean colour, and object bodies stand far (> 0.3 RGB distance) from
# their background, which ``object_mask`` relies on to find the object again without extra metadata.
_PALETTES: dict[str, _Palette] = {
    "stripes": _Palette((0.16, 0.30, 0.62), (0.74, 0.82, 0.92)),
    "checker": _Palette((0.24, 0.22, 0.28), (0.80, 0.20, 0.22)),
    "weave": _Palette((0.36, 0.46, 0.18), (0.80, 0.82, 0.52)),
    "grain": _Palette((0.50, 0.28, 0.12), (0.86, 0.64, 0.38)),
    "disc": _Palette((0.52, 0.53, 0.56), (0.88, 0.70, 0.24)),
    "ring": _Palette((0.17, 0.23, 0.40), (0.82, 0.82, 0.85)),
    "tile": _Palette((0.28, 0.50, 0.32), (0.94, 0.92, 0.86), (0.62, 0.10, 0.12)),
    "capsule": _Palette((0.88, 0.88, 0.86), (0.82, 0.16, 0.16), (0.96, 0.80, 0.18)),
}


# --------------------------------------------------------------------------------------------- helpers


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` in pixels, float32."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return coords[:, None], coords[None, :]


def _value_noise(rng: np.random.Generator, size: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Smooth noise in ``[0, 1]``: a random lattice upsampled with smoothstep interpolation."""
    cells_x = cells_y if cells_x is None else cells_x
    lattice = rng.random((cells_y + 1, cells_x + 1), dtype=np.float32)
    ty = np.linspace(0.0, cells_y, size, endpoint=False, dtype=np.float32)
    tx = np.linspace(0.0, cells_x, size, endpoint=False, dtype=np.float32)
    iy, ix = ty.astype(np.int64), tx.astype(np.int64)
    fy, fx = ty - iy, tx - ix
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    top = lattice[iy][:, ix] * (1 - fx) + lattice[iy][:, ix + 1] * fx
    bottom = lattice[iy + 1][:, ix] * (1 - fx) + lattice[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _mix(a: tuple[float, float, float], b: tuple[float, float, float], t: np.ndarray) -> FloatImage:
    """Blend two colours per pixel by weight ``t`` (H x W) into an H x W x 3 image."""
    ca, cb = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return ca + (cb - ca) * t[..., None]


def _flat(colour: tuple[float, float, float], size: int) -> FloatImage:
    """A uniform ``size`` x ``size`` image of one colour."""
    return np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3))


def _jitter(rng: np.random.Generator, colour: tuple[float, float, float], amount: float = 0.03) -> tuple:
    """The same colour, shifted a little so that no two images of a category are identical."""
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0.0, 1.0)) for c in colour)


def _finish(rng: np.random.Generator, image: FloatImage) -> FloatImage:
    """Uneven lighting plus sensor noise, as on a real camera."""
    size = image.shape[0]
    light = 0.95 + 0.1 * _value_noise(rng, size, 2) + rng.uniform(-0.03, 0.03)
    noise = 0.012 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image * light[..., None] + noise, 0.0, 1.0)


def _rotated(rng: np.random.Generator, size: int, degrees: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in image units (0..1) rotated by ``degrees`` plus a Gaussian ``spread``."""
    y, x = _grid(size)
    y, x = y / size, x / size
    angle = np.deg2rad(degrees + rng.normal(0.0, spread))
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


# -------------------------------------------------------------------------------------------- textures


def _stripes(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    u, _ = _rotated(rng, size, 30.0, 3.0)
    freq = 6.0 * rng.uniform(0.95, 1.05)
    wobble = 0.4 * _value_noise(rng, size, 3)  # slight waviness, like printed fabric
    s = np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi) + wobble)
    fibres = _value_noise(rng, size, 3, max(4, size // 3)) - 0.5
    t = np.clip(0.5 + 0.5 * np.tanh(3.0 * s) + 0.15 * fibres, 0.0, 1.0)
    return _mix(_jitter(rng, pal.primary), _jitter(rng, pal.secondary), t)


def _checker(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    u, v = _rotated(rng, size, 0.0, 2.0)
    cells = 5.0 * rng.uniform(0.97, 1.03)
    u, v = cells * u + rng.uniform(0, 2), cells * v + rng.uniform(0, 2)
    # tanh of the sine product gives square cells with slightly soft edges
    t = 0.5 + 0.5 * np.tanh(8.0 * np.sin(np.pi * u) * np.sin(np.pi * v))
    grit = 0.12 * (_value_noise(rng, size, max(4, size // 4)) - 0.5)
    return _mix(_jitter(rng, pal.primary), _jitter(rng, pal.secondary), np.clip(t + grit, 0.0, 1.0))


def _weave(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    u, v = _rotated(rng, size, 0.0, 1.5)
    cells = 8.0 * rng.uniform(0.97, 1.03)
    u, v = cells * u + rng.uniform(0, 2), cells * v + rng.uniform(0, 2)
    horizontal = (np.floor(u) + np.floor(v)) % 2 == 0
    across = np.where(horizontal, v, u)  # position across the threads of this basket cell
    threads = 0.5 + 0.5 * np.cos(2 * np.pi * 3 * across)
    groove = np.minimum(np.abs(u - np.round(u)), np.abs(v - np.round(v)))  # gaps between cells
    t = 0.3 + 0.6 * threads - 0.35 * (groove < 0.06) + 0.1 * horizontal
    return _mix(_jitter(rng, pal.primary), _jitter(rng, pal.secondary), np.clip(t, 0.0, 1.0))


def _grain(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    u, _ = _rotated(rng, size, 90.0, 4.0)
    warp = _value_noise(rng, size, 3)
    rings = np.sin(2 * np.pi * 7.0 * rng.uniform(0.95, 1.05) * (u + 0.25 * warp) + rng.uniform(0, 2 * np.pi))
    t = (0.5 + 0.5 * rings) ** 1.6  # narrow dark latewood bands, wide light earlywood
    fibre = _value_noise(rng, size, max(4, size // 3), 3)  # streaks along the grain (the rows)
    return _mix(_jitter(rng, pal.primary), _jitter(rng, pal.secondary), np.clip(0.85 * t + 0.2 * fibre, 0.0, 1.0))


# --------------------------------------------------------------------------------------------- objects


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Antialiased inside-ness from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _place(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """Object centre ``(y, x)`` in pixels: near the middle, jittered like parts on a conveyor."""
    cy, cx = size / 2 + rng.normal(0.0, 0.03 * size, 2)
    return float(cy), float(cx)


def _shade(body: FloatImage, y: np.ndarray, x: np.ndarray, size: int) -> FloatImage:
    """Top-left key light, so objects look 3D rather than flat."""
    light = 1.06 - 0.14 * (y + x) / (2 * size)
    return body * light[..., None]


def _composite(background: FloatImage, body: FloatImage, alpha: np.ndarray) -> FloatImage:
    return background * (1 - alpha[..., None]) + body * alpha[..., None]


def _disc(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    y, x = _grid(size)
    cy, cx = _place(rng, size)
    radius = 0.28 * size * rng.uniform(0.95, 1.05)
    dist = np.hypot(y - cy, x - cx)
    rim = 0.08 * np.clip(1 - np.abs(dist - 0.85 * radius) / (0.05 * size), 0, 1)  # embossed rim
    body = _shade(_mix(_jitter(rng, pal.secondary), (1.0, 1.0, 1.0), rim), y, x, size)
    background = _flat(_jitter(rng, pal.primary), size)
    return _composite(background, body, _coverage(dist - radius))


def _ring(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    y, x = _grid(size)
    cy, cx = _place(rng, size)
    outer = 0.34 * size * rng.uniform(0.96, 1.04)
    inner = outer * rng.uniform(0.50, 0.56)
    dist = np.hypot(y - cy, x - cx)
    sheen = 0.5 + 0.5 * np.cos(2 * np.pi * (dist - inner) / (outer - inner))  # brushed metal band
    body = _shade(_mix(_jitter(rng, pal.secondary), (1.0, 1.0, 1.0), 0.15 * sheen), y, x, size)
    background = _flat(_jitter(rng, pal.primary), size)
    return _composite(background, body, _coverage(np.maximum(dist - outer, inner - dist)))


def _tile(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    y, x = _grid(size)
    cy, cx = _place(rng, size)
    angle = np.deg2rad(rng.uniform(-25.0, 25.0))
    half, corner = 0.25 * size * rng.uniform(0.95, 1.05), 0.06 * size
    # rotate into the tile frame; the rounded box signed distance follows
    py = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    px = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    qx, qy = np.abs(px) - (half - corner), np.abs(py) - (half - corner)
    sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - corner
    # a printed dot in one corner breaks the symmetry, so rotation is visible
    dot = _coverage(np.hypot(px - 0.55 * half, py + 0.55 * half) - 0.16 * half)
    body = _shade(_mix(_jitter(rng, pal.secondary), _jitter(rng, pal.accent), dot), y, x, size)
    background = _flat(_jitter(rng, pal.primary), size)
    return _composite(background, body, _coverage(sdf))


def _capsule(rng: np.random.Generator, size: int, pal: _Palette) -> FloatImage:
    y, x = _grid(size)
    cy, cx = _place(rng, size)
    angle = rng.uniform(0.0, 2 * np.pi)
    half_len, radius = 0.2 * size * rng.uniform(0.95, 1.05), 0.13 * size * rng.uniform(0.95, 1.05)
    along = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    across = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    sdf = np.hypot(np.maximum(np.abs(along) - half_len, 0), across) - radius
    halves = np.clip(0.5 + along, 0.0, 1.0)  # hard seam between the two coloured halves
    gloss = 0.18 * np.clip(1 - np.abs(across + 0.45 * radius) / (0.2 * radius), 0, 1)  # specular streak
    body = _mix(_jitter(rng, pal.secondary), _jitter(rng, pal.accent), halves)
    body = _shade(_mix_image(body, (1.0, 1.0, 1.0), gloss), y, x, size)
    background = _flat(_jitter(rng, pal.primary), size)
    return _composite(background, body, _coverage(sdf))


def _mix_image(image: FloatImage, colour: tuple[float, float, float], t: np.ndarray) -> FloatImage:
    return image + (np.asarray(colour, np.float32) - image) * t[..., None]


_RENDERERS: dict[str, Callable[[np.random.Generator, int, _Palette], FloatImage]] = {
    "stripes": _stripes,
    "checker": _checker,
    "weave": _weave,
    "grain": _grain,
    "disc": _disc,
    "ring": _ring,
    "tile": _tile,
    "capsule": _capsule,
}


def render_category_image(category: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Render one defect-free image of a synthetic category.

    Args:
        category: One of :data:`SYNTHETIC_CATEGORIES`.
        rng: Source of all randomness (phase, jitter, noise); the same generator state gives the same image.
        size: Height and width in pixels.

    Returns:
        An ``(size, size, 3)`` uint8 RGB image.

    Raises:
        ValueError: If ``category`` is unknown.
    """
    if category not in _RENDERERS:
        raise ValueError(f"unknown synthetic category {category!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}")
    image = _finish(rng, _RENDERERS[category](rng, size, _PALETTES[category]).astype(np.float32))
    return np.round(image * 255).astype(np.uint8)


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the 2 px frame of an object image (objects never reach the border), float in [0, 1]."""
    frame = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3)])
    frame = np.concatenate([frame, image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    return np.median(frame.astype(np.float32) / 255.0, axis=0)


def object_mask(image: np.ndarray, category: str, threshold: float = 0.15) -> BoolMask:
    """Pixels that belong to the product: everything for textures, the foreground shape for objects.

    Objects are segmented by colour distance to the background, which the palettes keep large, so defects can be
    placed on the object without the renderer having to hand out its geometry.
    """
    if category in TEXTURE_CATEGORIES:
        return np.ones(image.shape[:2], dtype=bool)
    distance = np.linalg.norm(image.astype(np.float32) / 255.0 - background_colour(image), axis=-1)
    return distance > threshold
