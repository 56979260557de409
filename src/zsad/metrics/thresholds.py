"""Decision thresholds for image labels and pixel masks, chosen by a named rule, and the F1, precision, recall.

A score (or map value) at or above the threshold is predicted anomalous. Rules:

* ``"f1"``: the threshold with the best F1 on a labelled set (every distinct score is tried, ties grouped, the
  highest of equally good thresholds wins: the one behind ``image_f1max`` / ``pixel_f1max``);
* ``"normal_quantile"``: the ``quantile`` of the scores of normal images (for pixels: every pixel of the images
  without a defect pixel), so that about ``1 - quantile`` of normal images (pixels) are flagged;
* ``"fixed"``: given values;
* ``"from_run"``: the per-category thresholds that another run (``results.json``) chose.

**Zero-shot honesty.** ``"f1"`` and ``"normal_quantile"`` read the labels of the images they are computed on; in
``zsad test`` those are the target (test) images, so the thresholds, and the F1 they give, are tuned on the target
set: an upper bound for what a zero-shot user could set without labels. Every place that shows them says so
(:attr:`ThresholdRule.tuned_on_target`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.metrics.curves import threshold_sweep

ThresholdKind = Literal["f1", "normal_quantile", "fixed", "from_run", "none"]
THRESHOLD_KINDS: tuple[str, ...] = get_args(ThresholdKind)
TARGET_NOTE = "tuned on the target set"
"""What every table, caption and file says of thresholds chosen with the test images' labels."""

Given = dict[str, dict[str, dict[str, float | None]]]
"""``{dataset: {category: {"image": t or None, "pixel": t or None}}}``."""


@dataclass(frozen=True)
class ThresholdRule:
    """How the thresholds of a test are chosen.

    Attributes:
        kind: ``"f1"``, ``"normal_quantile"``, ``"fixed"``, ``"from_run"`` or ``"none"``.
        quantile: Quantile of ``"normal_quantile"``, in (0, 1).
        image: Image threshold of ``"fixed"`` (``None``: no image threshold).
        pixel: Pixel threshold of ``"fixed"`` (``None``: no pixel threshold).
        given: Per-category thresholds of ``"from_run"``.
        source: Where ``given`` comes from (a ``results.json``), for the description.
        source_on_target: Whether ``given`` was itself tuned on the images this run tests.
    """

    kind: ThresholdKind = "f1"
    quantile: float = 0.99
    image: float | None = None
    pixel: float | None = None
    given: Given = field(default_factory=dict)
    source: str = ""
    source_on_target: bool = False

    def __post_init__(self) -> None:
        if self.kind not in THRESHOLD_KINDS:
            raise ConfigError(f"threshold rule '{self.kind}' is unknown; use one of {list(THRESHOLD_KINDS)}.")
        if self.kind == "normal_quantile" and not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"threshold quantile {self.quantile} must lie strictly between 0 and 1, e.g. 0.99.")
        if self.kind == "fixed" and self.image is None and self.pixel is None:
            raise ConfigError("The 'fixed' threshold rule needs an image threshold, a pixel threshold, or both.")
        for name, value in (("image", self.image), ("pixel", self.pixel)):
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} threshold {value} must be a finite number.")

    @property
    def tuned_on_target(self) -> bool:
        """Whether the thresholds read the labels of the test images (see the module docstring)."""
        return self.kind in ("f1", "normal_quantile") or (self.kind == "from_run" and self.source_on_target)

    def describe(self) -> str:
        """One line: the rule and, where it applies, that it was tuned on the target set."""
        text = {
            "f1": "F1-optimal per category on the test images",
            "normal_quantile": f"{self.quantile:g} quantile of the normal test images' scores, per category",
            "fixed": f"fixed: image {_shown(self.image)}, pixel {_shown(self.pixel)}",
            "from_run": f"per category from {self.source}",
            "none": "none",
        }[self.kind]
        return f"{text} ({TARGET_NOTE})" if self.tuned_on_target else text


def _shown(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def f1_optimal_threshold(scores: Tensor, positive: Tensor) -> float | None:
    """The score ``t`` whose prediction ``score >= t`` has the highest F1; ties in F1 go to the highest ``t``.

    Uses the exact sweep of :mod:`zsad.metrics.curves`, so it is the threshold behind ``f1_max`` of the same data.

    Args:
        scores: Scores or maps of any shape.
        positive: As many elements, true (or > 0.5) where anomalous.

    Returns:
        The threshold, or ``None`` when the labels hold no positive or no negative.
    """
    scores = scores.detach().float().cpu().reshape(-1)
    positive = _as_bool(positive).reshape(-1)
    num_positive = int(positive.sum())
    if num_positive in (0, positive.numel()):
        return None
    best_f1, best_count = -1.0, 0
    for groups in threshold_sweep(scores, positive):  # distinct scores, highest first
        true_positive = groups.positive_above + groups.positive
        predicted = true_positive + groups.negative_above + groups.negative
        f1 = 2 * true_positive / (predicted + num_positive)
        top = int(np.argmax(f1))
        if f1[top] > best_f1:
            best_f1, best_count = float(f1[top]), int(predicted[top])
    # the threshold predicting exactly best_count samples (its ties included) is the best_count-th largest score:
    # a selection in linear time rather than a second sort
    values = scores.numpy()
    return float(np.partition(values, values.size - best_count)[values.size - best_count])


def normal_quantile(scores: Tensor, quantile: float) -> float | None:
    """The ``quantile`` of ``scores`` (linear interpolation, as :func:`numpy.quantile`), ``None`` if empty."""
    values = scores.detach().float().cpu().reshape(-1).numpy()
    return float(np.quantile(values, quantile)) if values.size else None


def operating_point(scores: Tensor, positive: Tensor, threshold: float | None) -> dict[str, float | None]:
    """Precision, recall and F1 of ``score >= threshold`` (``None`` where undefined: nothing predicted, no positive).

    Returns:
        ``{"threshold", "precision", "recall", "f1"}``; all but the threshold ``None`` without a threshold.
    """
    if threshold is None:
        return {"threshold": None, "precision": None, "recall": None, "f1": None}
    predicted = scores.detach().float().cpu().reshape(-1) >= threshold
    positive = _as_bool(positive).reshape(-1)
    true_positive = int((predicted & positive).sum())
    num_predicted, num_positive = int(predicted.sum()), int(positive.sum())
    precision = true_positive / num_predicted if num_predicted else None
    recall = true_positive / num_positive if num_positive else None
    both = num_predicted + num_positive
    return {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": 2 * true_positive / both if both else None,
    }


def choose(
    rule: ThresholdRule, level: str, scores: Tensor, positive: Tensor, normal: Tensor, where: Any
) -> float | None:
    """One threshold by ``rule``.

    Args:
        rule: The rule.
        level: ``"image"`` or ``"pixel"``.
        scores: The labelled scores (image scores, or every pixel of the category).
        positive: Their labels.
        normal: The scores of normal images (``normal_quantile``).
        where: ``(dataset, category)``, for ``from_run``.
    """
    if rule.kind == "f1":
        return f1_optimal_threshold(scores, positive)
    if rule.kind == "normal_quantile":
        return normal_quantile(normal, rule.quantile)
    if rule.kind == "fixed":
        return rule.image if level == "image" else rule.pixel
    if rule.kind == "from_run":
        dataset, category = where
        return rule.given.get(dataset, {}).get(category, {}).get(level)
    return None


def category_thresholds(
    rule: ThresholdRule,
    where: tuple[str, str],
    image_scores: Tensor,
    image_labels: Tensor,
    maps: Tensor | Sequence[Tensor] | None = None,
    masks: Tensor | Sequence[Tensor] | None = None,
) -> dict[str, dict[str, float | None] | None]:
    """The image (and pixel) threshold of one category and the precision, recall and F1 they give on it.

    Args:
        rule: The rule.
        where: ``(dataset, category)``.
        image_scores: ``[N]`` image scores.
        image_labels: ``[N]`` labels (nonzero: anomalous).
        maps: ``[N, H, W]`` maps, or a list of ``[H_i, W_i]`` maps (native resolution); ``None`` without pixel
            metrics.
        masks: Their masks, laid out like ``maps``.

    Returns:
        ``{"image": operating point, "pixel": operating point or None}`` (:func:`operating_point`).
    """
    labels = _as_bool(image_labels).reshape(-1)
    image_threshold = choose(rule, "image", image_scores, labels, image_scores.reshape(-1)[~labels], where)
    result: dict[str, dict[str, float | None] | None] = {
        "image": operating_point(image_scores, labels, image_threshold),
        "pixel": None,
    }
    if maps is None or masks is None or not len(maps):
        return result
    quantile = rule.kind == "normal_quantile"  # only this rule needs the normal images' pixels (a copy)
    if isinstance(maps, Tensor) and isinstance(masks, Tensor):  # one [N, H, W] block: no copies
        pixels, positive = maps.detach().float().cpu(), _as_bool(masks)
        normal = pixels[~positive.reshape(positive.shape[0], -1).any(dim=1)] if quantile else pixels.new_zeros(0)
    else:  # images of different sizes
        map_list = [m.detach().float().cpu().reshape(-1) for m in maps]
        mask_list = [_as_bool(mask).reshape(-1) for mask in masks]
        pixels, positive = torch.cat(map_list), torch.cat(mask_list)
        normal_maps = [m for m, mask in zip(map_list, mask_list, strict=True) if quantile and not bool(mask.any())]
        normal = torch.cat(normal_maps) if normal_maps else pixels.new_zeros(0)
    pixel_threshold = choose(rule, "pixel", pixels, positive, normal, where)
    result["pixel"] = operating_point(pixels, positive, pixel_threshold)
    return result


def thresholds_document(rule: ThresholdRule, per_category: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What ``results.json`` records under ``thresholds``: the rule, whether it was tuned on the target set, values."""
    return {
        "rule": rule.kind,
        "description": rule.describe(),
        "tuned_on_target": rule.tuned_on_target,
        **({"quantile": rule.quantile} if rule.kind == "normal_quantile" else {}),
        **({"source": rule.source} if rule.kind == "from_run" else {}),
        "per_category": per_category,
    }


def given_thresholds(document: dict[str, Any]) -> Given:
    """The per-category thresholds a ``results.json``'s ``thresholds`` entry records (empty when it has none)."""
    entry = document.get("thresholds")
    if not isinstance(entry, dict) or not isinstance(entry.get("per_category"), dict):
        return {}
    given: Given = {}
    for dataset, categories in entry["per_category"].items():
        for category, levels in (categories or {}).items():
            values = {
                level: (levels.get(level) or {}).get("threshold") if isinstance(levels, dict) else None
                for level in ("image", "pixel")
            }
            given.setdefault(dataset, {})[category] = values
    return given


def _as_bool(labels: Tensor) -> Tensor:
    labels = labels.detach().cpu()
    return labels if labels.dtype == torch.bool else labels.float() > 0.5
