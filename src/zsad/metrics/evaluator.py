"""Per-category evaluation: accumulate scores, compute metrics, macro-average the defined ones."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zsad.metrics.functional import IMAGE_METRICS, PIXEL_METRICS
from zsad.structures import Scores

MEAN = "mean"


@dataclass
class Picture:
    """What a picture of one test image needs."""

    image: Tensor
    mask: Tensor
    anomaly_map: Tensor
    score: float
    path: str
    category: str
    defect_type: str


@dataclass
class Results:
    """Metrics per category and their macro mean.

    Attributes:
        per_category: ``{category: {metric: value}}``; an undefined metric is absent, never 0 or -1.
        mean: ``{metric: macro mean over the categories where it is defined}``.
        undefined: ``{metric: [categories where it was undefined]}``.
        counts: ``{category: {"normal": n, "anomalous": n}}``.
        pictures: Kept test images with maps, for overlays.
    """

    per_category: dict[str, dict[str, float]]
    mean: dict[str, float]
    undefined: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    pictures: list[Picture] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """``{"<category>/<metric>": value}`` including ``"mean/<metric>"``."""
        flat = {f"{c}/{m}": v for c, metrics in self.per_category.items() for m, v in metrics.items()}
        flat.update({f"{MEAN}/{m}": v for m, v in self.mean.items()})
        return flat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without pictures)."""
        return {
            "per_category": self.per_category,
            "mean": self.mean,
            "undefined": self.undefined,
            "counts": self.counts,
        }

    def table(self, digits: int = 1) -> str:
        """A plain-text table in percent, one row per category and a mean row."""
        metrics = list(self.mean) or sorted({m for v in self.per_category.values() for m in v})
        header = ["category", *metrics]
        rows = [[c, *(_percent(self.per_category[c].get(m), digits) for m in metrics)] for c in self.per_category]
        rows.append([MEAN, *(_percent(self.mean.get(m), digits) for m in metrics)])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


def _percent(value: float | None, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


class Evaluator:
    """Collects image scores and pixel maps per category during a test loop.

    Memory grows with the number of pixels evaluated; bounded-memory states come with the metrics issue.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything collected."""
        self._image: dict[str, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        self._pixel: dict[str, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        self._pictures: dict[str, list[Picture]] = defaultdict(list)

    def update(self, scores: Scores, batch: dict[str, Any], keep_pictures: int = 0) -> None:
        """Add one scored batch."""
        maps = scores.anomaly_map.detach().float().cpu()
        masks = batch["mask"].detach().cpu()
        masks = masks.squeeze(1) if masks.dim() == 4 else masks
        image_scores = scores.image_score.detach().float().cpu()
        labels = batch["label"].detach().cpu()
        for i, category in enumerate(batch["category"]):
            self._image[category].append((image_scores[i : i + 1], labels[i : i + 1]))
            self._pixel[category].append((maps[i].flatten(), masks[i].flatten().bool()))
            kept = self._pictures[category]
            defect = batch["defect_type"][i]
            # one picture per defect type first, so that a few pictures show the variety of a category
            if len(kept) < keep_pictures and all(p.defect_type != defect for p in kept):
                self._pictures[category].append(
                    Picture(
                        batch["image"][i].detach().cpu(),
                        masks[i],
                        maps[i],
                        float(image_scores[i]),
                        batch["path"][i],
                        category,
                        defect,
                    )
                )

    def compute(self) -> Results:
        """Metrics per category and their macro mean, leaving undefined values out with a warning."""
        per_category: dict[str, dict[str, float]] = {}
        undefined: dict[str, list[str]] = defaultdict(list)
        counts = {}
        for category in sorted(self._image):
            scores, labels = (torch.cat(t) for t in zip(*self._image[category], strict=True))
            maps, masks = (torch.cat(t) for t in zip(*self._pixel[category], strict=True))
            counts[category] = {"normal": int((labels == 0).sum()), "anomalous": int((labels == 1).sum())}
            values: dict[str, float] = {}
            for name, metric in IMAGE_METRICS.items():
                _store(values, undefined, category, name, metric(scores, labels))
            for name, metric in PIXEL_METRICS.items():
                _store(values, undefined, category, name, metric(maps.float(), masks))
            per_category[category] = values
        for name, categories in undefined.items():
            warnings.warn(
                f"{name} is undefined (only one class present) for {categories}; left out of the mean.",
                stacklevel=2,
            )
        names = list(IMAGE_METRICS) + list(PIXEL_METRICS)
        mean = {}
        for name in names:
            defined = [v[name] for v in per_category.values() if name in v]
            if defined:
                mean[name] = sum(defined) / len(defined)
        pictures = [p for c in sorted(self._pictures) for p in self._pictures[c]]
        return Results(per_category, mean, dict(undefined), counts, pictures)


def _store(
    values: dict[str, float], undefined: dict[str, list[str]], category: str, name: str, value: float | None
) -> None:
    if value is None:
        undefined[name].append(category)
    else:
        values[name] = value
