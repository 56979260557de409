"""What anomaly-map values mean: each head's documented range, and the fixed colour scale of a run's pictures.

Maps are not probabilities in general. Per layer, every built-in head computes a probability of "not normal" in
[0, 1]; how the layers combine sets the range of the final map:

=====================  =========================================================  ==========================
head                   final map                                                  range
=====================  =========================================================  ==========================
``dual_branch``        ``1 - p_normal`` per layer, summed (AnomalyCLIP) or        [0, L] summed, [0, 1] mean
                       averaged over the L feature layers, then a Gaussian
``topk`` (ViP2)        the same, averaged over layers by default                  [0, 1] mean, [0, L] summed
``saga`` (CoPS)        ``(1 - p_normal) * w`` with the prototype weight           [0, 1] mean, [0, L] summed
                       ``w`` in [0, 1], averaged over layers, then a Gaussian
``multiclass`` (DAPO)  the sum of the defect-class probabilities (``1 -           [0, L] summed, [0, 1] mean
                       p_normal``) per layer, summed over layers
``winclip_windows``    harmonic means of window probabilities, across window      [0, 1]
                       sizes and with the image score
=====================  =========================================================  ==========================

The Gaussian smoothing is a weighted average with weights summing to 1, so it keeps the range. With the 4 layers
of ViT-L/14 (6, 12, 18, 24), AnomalyCLIP-style and DAPO maps run from 0 to 4.

Pictures never scale a map to its own maximum: one :class:`MapScale` holds for a whole run (or for each category,
by option), so a flat map looks flat and equal colours mean equal values across images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from zsad.errors import ConfigError

ScaleRule = Literal["run", "category", "range"]
"""``"run"``: the lowest and highest map value of the whole run; ``"category"``: the same per category;
``"range"``: the head's documented range (:func:`documented_range`)."""
SCALE_RULES: tuple[str, ...] = get_args(ScaleRule)
MEAN_LAYER_HEADS = {"topk", "saga"}
"""Heads whose ``aggregation`` default is the mean (the others sum or have no layers)."""


@dataclass(frozen=True)
class MapScale:
    """The map values drawn at the bottom and the top of the colour scale.

    Attributes:
        low: Value drawn with the lowest colour (values below are clipped to it).
        high: Value drawn with the highest colour (values above are clipped to it).
        rule: How the scale was chosen, for captions (``"run"``, ``"category"``, ``"range"``, ``"fixed"``).
    """

    low: float
    high: float
    rule: str = "fixed"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"Map scale {self.low}..{self.high}: give finite values.")
        if self.high <= self.low:  # a flat run: widen it, so the flat value draws as the lowest colour
            object.__setattr__(self, "high", self.low + max(abs(self.low) * 1e-3, 1e-6))

    def fractions(self, values: np.ndarray) -> np.ndarray:
        """``values`` as fractions of the scale, clipped to [0, 1] (float32)."""
        span = self.high - self.low
        return np.clip((np.asarray(values, dtype=np.float32) - self.low) / span, 0.0, 1.0)

    def rule_words(self) -> str:
        """How the scale was chosen, in words: ``"run"``, ``"category"``, ``"head range"`` or ``"fixed"``."""
        return {"range": "head range"}.get(self.rule, self.rule)

    def describe(self) -> str:
        """A caption fragment: ``"scale 0..4 (head range)"``."""
        return f"scale {self.low:.4g}..{self.high:.4g} ({self.rule_words()})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"low": self.low, "high": self.high, "rule": self.rule}


def check_scale_rule(rule: str) -> None:
    """Refuse an unknown scale rule.

    Raises:
        ConfigError: ``rule`` is not one of :data:`SCALE_RULES`.
    """
    if rule not in SCALE_RULES:
        raise ConfigError(f"scale='{rule}' is unknown; use one of {list(SCALE_RULES)}.")


def documented_range(head_spec: Mapping[str, Any], layer_count: int) -> tuple[float, float] | None:
    """The range a head's maps can take (see the module docstring), or ``None`` for heads zsad does not know.

    Args:
        head_spec: The head's spec (``{"class_path", "init_args"}``, as ``results.json`` records it).
        layer_count: Number of feature layers the head combines (``len(backbone.layers)``).
    """
    from zsad.registry import HEADS, class_path_of

    class_path = str(head_spec.get("class_path", ""))
    names = [name for name in HEADS.names() if class_path_of(HEADS.get(name)) == class_path or name == class_path]
    if not names:
        return None
    name = names[0]
    if name == "winclip_windows":
        return 0.0, 1.0
    default = "mean" if name in MEAN_LAYER_HEADS else "sum"
    aggregation = (head_spec.get("init_args") or {}).get("aggregation", default)
    return (0.0, float(max(layer_count, 1))) if aggregation == "sum" else (0.0, 1.0)


def module_range(module: Any) -> tuple[float, float] | None:
    """:func:`documented_range` of a :class:`~zsad.module.ZSADModule`'s head and backbone."""
    import zsad.heads  # noqa: F401  (registers the built-in heads)

    return documented_range(module.head.spec(), len(getattr(module.backbone, "layers", ()) or (1,)))


def range_scale(documented: tuple[float, float] | None, observed: tuple[float, float]) -> MapScale:
    """The head's documented range, or the observed one (rule ``"run"``) for a head without one."""
    if documented is None:
        return MapScale(*observed, rule="run")
    return MapScale(*documented, rule="range")


def observed_range(ranges: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The lowest low and highest high of ``(low, high)`` pairs; ``(0, 1)`` when there are none."""
    pairs = list(ranges)
    if not pairs:
        return 0.0, 1.0
    return min(low for low, _ in pairs), max(high for _, high in pairs)


def choose_scale(
    rule: ScaleRule,
    category_range: tuple[float, float],
    run_range: tuple[float, float],
    documented: tuple[float, float] | None,
    fixed: tuple[float | None, float | None] = (None, None),
) -> MapScale:
    """The scale of one category's pictures.

    Args:
        rule: ``"run"``, ``"category"`` or ``"range"``.
        category_range: Lowest and highest map value of the category.
        run_range: Lowest and highest map value of the whole run.
        documented: The head's documented range (``None`` if unknown; ``"range"`` then falls back to the run's).
        fixed: ``(low, high)`` given by the user; each replaces the chosen end when not ``None``.
    """
    check_scale_rule(rule)
    if rule == "range":
        scale = range_scale(documented, run_range)
    else:
        scale = MapScale(*(category_range if rule == "category" else run_range), rule=rule)
    low, high = fixed
    if low is None and high is None:
        return scale
    return MapScale(scale.low if low is None else low, scale.high if high is None else high, rule="fixed")
