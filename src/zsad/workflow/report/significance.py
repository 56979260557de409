"""Is a method really behind the best one? A paired test over categories and a bootstrap interval.

Each method is compared with the best one of its dataset (the highest seed-averaged mean, as in the tables), paired
over the categories where both are defined, each category's value averaged over seeds first:

* the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped as scipy's default
  ``zero_method="wilcox"`` does), and
* a percentile bootstrap 95% interval of the mean difference, resampling categories with a fixed seed.

With several methods, each scope and metric is a family of tests (every method against the best), and the family's
p-values are also given Holm-adjusted (:func:`holm_adjust`): the adjusted value controls the chance of any false
"worse than the best" in that family at the stated level.

Where the test cannot say anything the p-value is ``None`` with the reason, never 0: fewer than
:data:`MIN_PAIRS` non-zero differences (the smallest two-sided exact p-value of n pairs is 2 / 2**n, so below 6
pairs no difference can reach p < 0.05), or no difference at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import wilcoxon

from zsad.metrics.results import MEAN
from zsad.workflow.report.aggregate import Summary

TEST_NAME = "Wilcoxon signed-rank test (two-sided, scipy.stats.wilcoxon) over categories, seed-averaged"
MIN_PAIRS = 6
"""Fewest non-zero paired differences for a p-value: 2 / 2**5 = 0.0625 cannot reach 0.05, 2 / 2**6 can."""
RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    """One method against the reference (best) method on one metric and scope.

    Attributes:
        scope: A dataset, or ``mean`` for the categories of all datasets together.
        metric: Metric name.
        method: The compared entry.
        reference: The best entry of the scope.
        pairs: Categories where both are defined.
        difference: Mean over those categories of method minus reference (fraction), ``None`` without pairs.
        interval: Bootstrap ``(low, high)`` of the mean difference, ``None`` with fewer than 2 pairs.
        p_value: Wilcoxon p-value, ``None`` where the test is not applicable (see ``note``).
        note: Why a value is missing; empty otherwise.
        p_holm: ``p_value`` Holm-adjusted over the comparisons of the same scope and metric that have one.
    """

    scope: str
    metric: str
    method: str
    reference: str
    pairs: int
    difference: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    note: str = ""
    p_holm: float | None = None


def bootstrap_interval(
    differences: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``, resampling them with replacement.

    Deterministic for a given ``seed`` (numpy's ``default_rng``).
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_test(differences: np.ndarray) -> tuple[float | None, str]:
    """Wilcoxon signed-rank p-value of paired differences, or ``None`` and the reason it is not applicable."""
    nonzero = int(np.count_nonzero(differences))
    if nonzero == 0:
        return None, "no difference in any category"
    if nonzero < MIN_PAIRS:
        return None, f"{nonzero} non-zero paired difference(s), fewer than {MIN_PAIRS}: p < 0.05 is unreachable"
    return float(wilcoxon(differences).pvalue), ""


def holm_adjust(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values; ``None`` entries are not tests and stay ``None``.

    Sorted ascending, the i-th smallest of m p-values becomes ``(m - i) * p`` (i from 0), made non-decreasing
    along the order and capped at 1.
    """
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p_value, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p_value))
        adjusted[index] = running
    return adjusted


def compare(summary: Summary, metric: str, scope: str, resamples: int = RESAMPLES, seed: int = 0) -> list[Comparison]:
    """Every entry against the best entry of ``scope`` (a dataset, or ``mean`` for all categories pooled).

    The returned comparisons are one family for :func:`holm_adjust`.
    """
    dataset = None if scope == MEAN else scope
    means = {label: summary.value(label, scope, MEAN, metric) for label in summary.labels}
    ranked = [label for label in summary.labels if means[label] is not None]
    if not ranked:
        return []
    reference = max(ranked, key=lambda label: means[label].mean)  # type: ignore[union-attr]
    base = summary.seed_averaged_categories(reference, metric, dataset)
    comparisons = []
    for label in summary.labels:
        if label == reference:
            continue
        values = summary.seed_averaged_categories(label, metric, dataset)
        shared = [key for key in base if key in values]
        differences = np.array([values[key] - base[key] for key in shared], dtype=np.float64)
        if differences.size == 0:
            comparisons.append(Comparison(scope, metric, label, reference, 0, None, None, None, "no shared category"))
            continue
        p_value, note = paired_test(differences)
        interval = bootstrap_interval(differences, resamples, seed) if differences.size > 1 else None
        if interval is None:
            note = "one shared category: no interval, no test"
        comparisons.append(
            Comparison(
                scope, metric, label, reference, differences.size, float(differences.mean()), interval, p_value, note
            )
        )
    adjusted = holm_adjust([c.p_value for c in comparisons])
    return [replace(c, p_holm=p_holm) for c, p_holm in zip(comparisons, adjusted, strict=True)]


def compare_all(summary: Summary, resamples: int = RESAMPLES, seed: int = 0) -> list[Comparison]:
    """:func:`compare` for every metric, per dataset and (with several datasets) over all categories."""
    return [
        c
        for scope in summary.scopes
        for metric in summary.metrics
        for c in compare(summary, metric, scope, resamples, seed)
    ]
