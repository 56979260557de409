"""Seeded synthetic anomaly-detection data written to disk in the MVTec AD layout.

The layout is the one MVTec AD uses, so the ordinary MVTec loader reads it unchanged::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png   (L mode, 0 or 255)

Every image is drawn from its own generator seeded by ``(seed, category, split, index)``, so adding a category or
changing one count leaves every other file unchanged, and the same spec always gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zsad.errors import ConfigError

from .defects import DEFECT_LOOKS, DEFECT_TYPES, MAX_DEFECT_FRACTION, apply_defect, mark_defect
from .patterns import OBJECT_CATEGORIES, SYNTHETIC_CATEGORIES, TEXTURE_CATEGORIES, render_category_image

__all__ = [
    "DEFECT_LOOKS",
    "DEFECT_TYPES",
    "MARKER_NAME",
    "MAX_DEFECT_FRACTION",
    "OBJECT_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "TEXTURE_CATEGORIES",
    "SyntheticSpec",
    "apply_defect",
    "generate_synthetic_dataset",
    "render_category_image",
    "sample_rng",
]

MARKER_NAME = ".zsad_synthetic.json"
# Bump whenever rendering changes, so that datasets cached on disk by an older version are regenerated.
GENERATOR_VERSION = 1
MIN_IMAGE_SIZE = 16  # below this the shapes and defects degenerate to a few pixels
_SPLIT_DIRS = ("train", "test", "ground_truth")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        categories: Category names, a subset of :data:`SYNTHETIC_CATEGORIES`.
        defects: Defect types in every category's test split, a subset of :data:`DEFECT_TYPES`.
        image_size: Height and width of every image in pixels (at least 16).
        n_train_good: Defect-free training images per category.
        n_test_good: Defect-free test images per category.
        n_test_per_defect: Test images per defect type per category.
        seed: Non-negative base seed.
        defect_look: ``"natural"`` (default) or ``"marked"``: every defect repainted in one colour that all
            categories share (:func:`~zsad.data.synthetic.defects.mark_defect`), a cue that a random backbone
            can carry over to held-out categories.
    """

    categories: tuple[str, ...] = SYNTHETIC_CATEGORIES
    defects: tuple[str, ...] = DEFECT_TYPES
    image_size: int = 64
    n_train_good: int = 4
    n_test_good: int = 6
    n_test_per_defect: int = 2
    seed: int = 0
    defect_look: str = "natural"

    def __post_init__(self) -> None:
        # configs hand over lists; tuples keep the spec hashable and its JSON record canonical
        object.__setattr__(self, "categories", _names("categories", self.categories, SYNTHETIC_CATEGORIES))
        object.__setattr__(self, "defects", _names("defects", self.defects, DEFECT_TYPES))
        for field in ("image_size", "n_train_good", "n_test_good", "n_test_per_defect"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"SyntheticSpec.{field} must be a positive integer, got {value!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"SyntheticSpec.image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"SyntheticSpec.seed must be a non-negative integer, got {self.seed!r}")
        if self.defect_look not in DEFECT_LOOKS:
            looks = list(DEFECT_LOOKS)
            raise ConfigError(f"SyntheticSpec.defect_look must be one of {looks}, got {self.defect_look!r}")

    def to_record(self) -> dict[str, object]:
        """JSON-ready description of the spec and generator version, as stored in the marker file."""
        return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}


def _names(field: str, names: object, valid: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise ConfigError(f"SyntheticSpec.{field} must be a tuple of names, got {names!r}")
    if not names:
        raise ConfigError(f"SyntheticSpec.{field} must not be empty; valid: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise ConfigError(f"SyntheticSpec.{field}: unknown name {name!r}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"SyntheticSpec.{field} lists a name twice: {list(names)!r}")
    return tuple(names)


def sample_rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    """The generator that draws one sample, so tests and tools can re-render exactly what was written.

    Names enter through CRC-32 rather than their position, so the stream of one category does not depend on
    which other categories are generated.

    Args:
        seed: The spec's base seed.
        category: Category name.
        split: ``"train/good"``, ``"test/good"`` or ``"test/<defect>"``.
        index: Index of the image within its split folder.

    Returns:
        A fresh generator; the sample is ``render_category_image`` and then, for defect splits, ``apply_defect``
        drawn from it in that order.
    """
    return np.random.default_rng([seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index])


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # fast zlib level: noisy images barely compress anyway, and encoding dominated the run time at level 6
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _clear_category(folder: Path) -> None:
    """Remove images a previous run left in a category, so a smaller spec leaves no extra files behind."""
    for split in _SPLIT_DIRS:
        for png in sorted((folder / split).glob("*/*.png")):
            png.unlink()
        for sub in sorted((folder / split).glob("*"), reverse=True):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        if (folder / split).is_dir() and not any((folder / split).iterdir()):
            (folder / split).rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _write_category(root: Path, category: str, spec: SyntheticSpec) -> None:
    size, folder = spec.image_size, root / category
    width = max(3, len(str(max(spec.n_train_good, spec.n_test_good, spec.n_test_per_defect) - 1)))
    for split, count in (("train/good", spec.n_train_good), ("test/good", spec.n_test_good)):
        for i in range(count):
            image = render_category_image(category, sample_rng(spec.seed, category, split, i), size)
            _save(image, folder / split / f"{i:0{width}d}.png")
    for defect in spec.defects:
        split = f"test/{defect}"
        for i in range(spec.n_test_per_defect):
            rng = sample_rng(spec.seed, category, split, i)
            image, mask = apply_defect(render_category_image(category, rng, size), defect, rng, category)
            if spec.defect_look == "marked":
                image = mark_defect(image, mask, rng)
            _save(image, folder / split / f"{i:0{width}d}.png")
            _save(mask.astype(np.uint8) * 255, folder / "ground_truth" / defect / f"{i:0{width}d}_mask.png")


def _read_marker(marker: Path) -> dict[str, object] | None:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def generate_synthetic_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write a synthetic MVTec-style dataset under ``root``, or reuse the one already there.

    ``<root>/.zsad_synthetic.json`` records the spec of a finished run. When it matches ``spec`` nothing is
    touched. Otherwise the marker is removed first, the spec's categories (and those of the previous run) are
    cleared and rewritten, and the marker is written last through an atomic rename, so an interrupted run is
    regenerated next time instead of trusted.

    Args:
        root: Dataset root; created if missing.
        spec: What to generate.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    marker = root / MARKER_NAME
    # a JSON round trip turns the record's tuples into lists, as they come back from disk
    record = json.loads(json.dumps(spec.to_record()))
    previous = _read_marker(marker)
    if previous == record:
        return root
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    stale = previous.get("categories", []) if previous else []
    for category in dict.fromkeys([*spec.categories, *stale]):
        if isinstance(category, str) and category in SYNTHETIC_CATEGORIES:
            _clear_category(root / category)
    for category in spec.categories:
        _write_category(root, category, spec)
    temporary = marker.with_name(f"{MARKER_NAME}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, marker)
    return root
