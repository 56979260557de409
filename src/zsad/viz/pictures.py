"""Save the pictures an evaluation kept: one panel per image, grouped by category."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from zsad.data.transforms import ImageTransform
from zsad.metrics.results import Picture
from zsad.viz.overlay import save_panel, to_uint8_image


def save_pictures(pictures: list[Picture], folder: str | Path, transform: ImageTransform | None = None) -> list[Path]:
    """Write ``<folder>/<category>/<image stem>.png`` panels (image | mask | overlay).

    Maps of one category share a colour scale, so that a brighter map means a higher score.
    """
    transform = transform or ImageTransform(size=1)
    by_category: dict[str, list[Picture]] = defaultdict(list)
    for picture in pictures:
        by_category[picture.category].append(picture)
    written = []
    for category, group in by_category.items():
        vmax = max(float(p.anomaly_map.max()) for p in group) or 1.0
        for picture in group:
            image = to_uint8_image(transform.denormalize(picture.image))
            name = Path(picture.path)
            title = f"{name.parent.name}/{name.name} score {picture.score:.3f}"
            target = Path(folder) / category / f"{name.parent.name}_{name.stem}.png"
            written.append(save_panel(target, image, picture.mask.numpy(), (picture.anomaly_map / vmax).numpy(), title))
    return written
