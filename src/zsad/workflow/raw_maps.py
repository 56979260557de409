"""Raw anomaly maps on disk: float32 ``.npy`` or 16-bit PNG with its scale recorded, and DAPO's defect-type maps.

``zsad predict --maps npy|png16`` and ``zsad test --results.maps npy|png16`` write one file per image, named after
it, so that researchers can compute their own metrics and draw their own figures:

* ``.npy``: the map as float32, exactly as the model gave it (``numpy.load``);
* ``.png``: 16-bit greyscale; pixel ``p`` stands for ``low + (high - low) * p / 65535``, with ``low`` and ``high``
  (the map's own lowest and highest value) stored as PNG text entries ``zsad:map_low`` and ``zsad:map_high``.
  The rounding error is at most ``(high - low) / 131070``. :func:`read_map` decodes both formats;
* ``<name>.classes.png``: for heads with defect classes (DAPO), the per-pixel class index as an 8-bit PNG (16-bit
  beyond 255 classes), 0 normal, with the class names as JSON in the text entry ``zsad:class_names``.

Files are replaced atomically but not flushed to disk one by one (they are cheap to recompute). A ``maps.json``
beside them records the format, the resolution, how to decode, and the class names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image, PngImagePlugin

from zsad.errors import ConfigError, DataError
from zsad.workflow.atomic import atomic_write, atomic_write_text

MapFormat = Literal["none", "npy", "png16"]
MAP_FORMATS: tuple[str, ...] = get_args(MapFormat)
MANIFEST = "maps.json"
CLASS_SUFFIX = ".classes.png"
LOW_KEY, HIGH_KEY, NAMES_KEY = "zsad:map_low", "zsad:map_high", "zsad:class_names"
MARK = ("Software", "zsad")
PNG16_MAX = 65535


def check_map_format(value: str, option: str = "maps") -> None:
    """Refuse an unknown map format.

    Raises:
        ConfigError: ``value`` is not one of :data:`MAP_FORMATS`.
    """
    if value not in MAP_FORMATS:
        raise ConfigError(f"{option}='{value}' is unknown; use one of {list(MAP_FORMATS)}.")


def map_suffix(map_format: MapFormat) -> str:
    """The file suffix of a map format."""
    return ".npy" if map_format == "npy" else ".png"


def write_map(stem: Path, anomaly_map: np.ndarray, map_format: MapFormat) -> Path:
    """Write one map as ``<stem>.npy`` (float32) or ``<stem>.png`` (16-bit, scale in its text), atomically.

    Returns:
        The written file.
    """
    values = np.asarray(anomaly_map, dtype=np.float32)
    path = stem.with_name(stem.name + map_suffix(map_format))
    path.parent.mkdir(parents=True, exist_ok=True)
    if map_format == "npy":
        return atomic_write(path, lambda handle: np.save(handle, values, allow_pickle=False), durable=False)
    low, high = float(values.min()), float(values.max())
    span = high - low
    levels = np.zeros(values.shape, np.uint16) if span <= 0 else ((values - low) / span * PNG16_MAX + 0.5)
    picture = Image.fromarray(np.asarray(levels, dtype=np.uint16))
    info = _png_info({LOW_KEY: repr(low), HIGH_KEY: repr(high)})
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG", pnginfo=info, compress_level=1), False)


def write_class_map(stem: Path, class_map: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write a per-pixel class index map as ``<stem>.classes.png`` with the class names in its text."""
    values = np.asarray(class_map)
    dtype = np.uint8 if len(class_names) <= 256 and values.max(initial=0) < 256 else np.uint16
    picture = Image.fromarray(values.astype(dtype))
    path = stem.with_name(stem.name + CLASS_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _png_info({NAMES_KEY: json.dumps(list(class_names))})
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG", pnginfo=info, compress_level=1), False)


def read_map(path: str | Path) -> np.ndarray:
    """A map written by :func:`write_map`, as float32 values (a 16-bit PNG decoded with its recorded scale).

    Raises:
        DataError: Not a map file zsad wrote.
    """
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    with Image.open(path) as picture:
        if LOW_KEY not in picture.info or HIGH_KEY not in picture.info:
            raise DataError(f"{path} has no {LOW_KEY}/{HIGH_KEY} entries: it is not a 16-bit map zsad wrote.")
        low, high = float(picture.info[LOW_KEY]), float(picture.info[HIGH_KEY])
        levels = np.asarray(picture, dtype=np.float64)
    return (low + (high - low) * levels / PNG16_MAX).astype(np.float32)


def read_class_map(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A class map written by :func:`write_class_map` and its class names."""
    with Image.open(path) as picture:
        names = json.loads(picture.info.get(NAMES_KEY, "[]"))
        return np.asarray(picture).astype(np.int64), names


def write_manifest(folder: Path, map_format: MapFormat, resolution: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``maps.json``: the format, resolution and decoding rule of a folder of maps."""
    decoding = (
        "numpy.load(file): float32 map values"
        if map_format == "npy"
        else f"value = low + (high - low) * pixel / {PNG16_MAX}, with low and high the PNG text entries "
        f"{LOW_KEY} and {HIGH_KEY}"
    )
    document = {
        "format": map_format,
        "resolution": resolution,
        "decoding": decoding,
        "class_maps": f"<name>{CLASS_SUFFIX}: class index per pixel (0 normal), names in its {NAMES_KEY} entry",
        **(extra or {}),
    }
    return atomic_write_text(folder / MANIFEST, json.dumps(document, indent=2) + "\n")


def _png_info(entries: dict[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(*MARK)
    for key, value in entries.items():
        info.add_text(key, value)
    return info
