"""Evaluation results: per dataset and category, macro means, and how to print them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

MEAN = "mean"
AUPRO_VARIANTS = {
    "pixel_aupro": "AUPRO@0.3 exact per-region curve, normalised by the limit (anomalib >= 2.3)",
    "pixel_aupro_cflow": "AUPRO@0.3 over 200 thresholds, FPRs min-max rescaled (AnomalyCLIP, APRIL-GAN, ViP2)",
}


@dataclass
class Picture:
    """What a picture of one test image needs: the image, its ground truth and the model's maps.

    Attributes:
        image: ``[3, H, W]`` normalised image, as the model saw it.
        mask: ``[H, W]`` ground-truth mask.
        anomaly_map: ``[H, W]`` anomaly map.
        score: Image anomaly score.
        path: Image file.
        category: Category of the image.
        defect_type: Defect folder of the image (``"good"`` for normal ones).
        dataset: Dataset of the image (empty when the batch names none).
        label: 0 normal, 1 anomalous.
        class_map: ``[H, W]`` predicted class per pixel (:attr:`zsad.structures.Scores.class_map`, DAPO's defect
            type; 0 is normal), or ``None`` for methods without defect classes.
        class_names: Names of the classes ``class_map`` indexes, class 0 first (empty without ``class_map``).
    """

    image: Tensor
    mask: Tensor
    anomaly_map: Tensor
    score: float
    path: str
    category: str
    defect_type: str
    dataset: str = ""
    label: int = 0
    class_map: Tensor | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageScore:
    """One test image's anomaly score and label (0 normal, 1 anomalous): what ROC and PR curves are drawn from."""

    dataset: str
    category: str
    path: str
    label: int
    score: float


@dataclass
class Results:
    """Metrics per dataset and category, and their macro means.

    Attributes:
        per_category: ``{dataset: {category: {metric: value}}}``; an undefined metric is absent, never 0 or -1.
        per_dataset: ``{dataset: {metric: mean over the categories where it is defined}}``.
        mean: ``{metric: mean over datasets of per_dataset}`` (equal to per_dataset for one dataset).
        undefined: ``{metric: {"dataset/category": reason}}`` where the metric was undefined, with the reason (only
            normal images, no anomalous pixel, constant maps, ...; see :mod:`zsad.metrics.undefined`).
        counts: ``{dataset: {category: {"normal": n, "anomalous": n}}}``.
        skipped: ``[{"path", "problem"}]`` files that were not used: images the loader could not read
            (``on_bad_image: skip``) and files of image folders that are not read (other formats, hidden files).
        pictures: Kept test images with maps, for overlays.
        images: Every scored test image once (dataset, category, path, label, score), for ``scores.csv``.
        thresholds: The chosen image and pixel thresholds per category and their F1, precision and recall, with the
            rule and whether it was tuned on the target set (:func:`zsad.metrics.thresholds.thresholds_document`);
            ``None`` when no threshold rule was set.
        map_ranges: ``{dataset: {category: [lowest, highest]}}`` anomaly-map value, for fixed picture scales.
    """

    per_category: dict[str, dict[str, dict[str, float]]]
    per_dataset: dict[str, dict[str, float]]
    mean: dict[str, float]
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    images: list[ImageScore] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None
    map_ranges: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """``{"<dataset>/<category>/<metric>"}``, ``{"<dataset>/mean/<metric>"}`` and ``{"mean/<metric>"}``."""
        flat = {
            f"{d}/{c}/{m}": v for d, cats in self.per_category.items() for c, ms in cats.items() for m, v in ms.items()
        }
        flat.update({f"{d}/{MEAN}/{m}": v for d, ms in self.per_dataset.items() for m, v in ms.items()})
        flat.update({f"{MEAN}/{m}": v for m, v in self.mean.items()})
        return flat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without pictures), with the AUPRO definitions used."""
        metrics = {m for ms in self.per_dataset.values() for m in ms}
        return {
            "per_category": self.per_category,
            "per_dataset": self.per_dataset,
            "mean": self.mean,
            "undefined": self.undefined,
            "counts": self.counts,
            "skipped": self.skipped,
            "aupro_variants": {k: v for k, v in AUPRO_VARIANTS.items() if k in metrics},
            "map_ranges": self.map_ranges,
            **({"thresholds": self.thresholds} if self.thresholds is not None else {}),
        }

    def pixel_threshold(self, dataset: str, category: str) -> float | None:
        """The chosen pixel threshold of a category (``None`` without thresholds or pixel maps)."""
        return category_threshold(self.thresholds, dataset, category, "pixel")

    def image_threshold(self, dataset: str, category: str) -> float | None:
        """The chosen image threshold of a category (``None`` without thresholds)."""
        return category_threshold(self.thresholds, dataset, category, "image")

    def table(self, digits: int = 1) -> str:
        """Plain-text tables in percent: per dataset, one row per category and a mean row."""
        blocks = []
        for dataset, categories in self.per_category.items():
            metrics = list(self.per_dataset.get(dataset, {})) or sorted({m for v in categories.values() for m in v})
            rows = [[c, *(percent(values.get(m), digits) for m in metrics)] for c, values in categories.items()]
            rows.append([MEAN, *(percent(self.per_dataset.get(dataset, {}).get(m), digits) for m in metrics)])
            blocks.append(f"{dataset}\n{format_table(['category', *metrics], rows)}")
        if len(self.per_category) > 1:
            metrics = list(self.mean)
            rows = [[d, *(percent(self.per_dataset[d].get(m), digits) for m in metrics)] for d in self.per_dataset]
            rows.append([MEAN, *(percent(self.mean.get(m), digits) for m in metrics)])
            blocks.append(f"datasets\n{format_table(['dataset', *metrics], rows)}")
        if self.thresholds is not None:
            blocks.append(thresholds_table(self.thresholds, digits))
        legend = [f"{k}: {v}" for k, v in AUPRO_VARIANTS.items() if any(k in ms for ms in self.per_dataset.values())]
        if self.skipped:
            legend.append(f"skipped {len(self.skipped)} unreadable image(s); see results.json")
        return "\n\n".join(blocks + (["\n".join(legend)] if legend else []))


def category_threshold(thresholds: dict[str, Any] | None, dataset: str, category: str, level: str) -> float | None:
    """A category's ``level`` (``"image"`` or ``"pixel"``) threshold from a ``thresholds`` document, or ``None``."""
    if not thresholds:
        return None
    entry = thresholds.get("per_category", {}).get(dataset, {}).get(category, {}).get(level)
    return entry.get("threshold") if isinstance(entry, dict) else None


def thresholds_table(thresholds: dict[str, Any], digits: int = 1) -> str:
    """Plain-text table of the chosen thresholds with their F1, precision and recall (percent), per category."""
    header = ["category", "image_t", "image_F1", "image_P", "image_R", "pixel_t", "pixel_F1", "pixel_P", "pixel_R"]
    rows = []
    for dataset, categories in thresholds.get("per_category", {}).items():
        for category, levels in categories.items():
            cells = [f"{dataset}/{category}" if dataset else category]
            for level in ("image", "pixel"):
                point = levels.get(level) or {}
                value = point.get("threshold")
                cells.append("n/a" if value is None else f"{value:.4g}")
                cells.extend(percent(point.get(name), digits) for name in ("f1", "precision", "recall"))
            rows.append(cells)
    title = f"thresholds: {thresholds.get('description', thresholds.get('rule', ''))}"
    return f"{title}\n{format_table(header, rows)}"


def percent(value: float | None, digits: int = 1) -> str:
    """A metric in percent, or ``n/a`` when undefined."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Right-aligned plain-text columns with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def macro_mean(tables: list[dict[str, float]], names: list[str]) -> dict[str, float]:
    """Mean of each metric over the tables that define it (absent metrics are left out, not counted as 0).

    The sum is exact (``math.fsum``), so the mean does not depend on the order of the tables.
    """
    mean = {}
    for name in names:
        defined = [table[name] for table in tables if name in table]
        if defined:
            mean[name] = math.fsum(defined) / len(defined)
    return mean
