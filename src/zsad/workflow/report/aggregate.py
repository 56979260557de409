"""Seeds to numbers: mean and sample standard deviation of each metric per entry, dataset and category.

An undefined metric is absent from ``results.json`` (see docs/metrics.md); it stays out of every mean here too,
never counted as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zsad.errors import ConfigError
from zsad.metrics.results import MEAN
from zsad.workflow.report.grouping import ProtocolGroup
from zsad.workflow.report.runs import Run


@dataclass(frozen=True)
class Stat:
    """One metric's values over seeds.

    Attributes:
        values: The defined values, one per seed.
    """

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of seeds with a defined value."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1) over seeds; ``None`` for a single seed."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (self.n - 1))


def stat(values: list[Any]) -> Stat | None:
    """The :class:`Stat` of the defined (non-``None``, non-NaN) values, or ``None`` when there is none."""
    defined = tuple(float(v) for v in values if v is not None and not math.isnan(float(v)))
    return Stat(defined) if defined else None


@dataclass
class Summary:
    """What the tables of one protocol show.

    Attributes:
        group: The protocol's runs by entry.
        metrics: Metric names, in table order.
        datasets: ``{dataset: [categories]}`` in the order ``results.json`` lists them.
    """

    group: ProtocolGroup
    metrics: list[str]
    datasets: dict[str, list[str]]

    @property
    def labels(self) -> list[str]:
        """Entries (methods), in the order they first appear."""
        return list(self.group.entries)

    @property
    def scopes(self) -> list[str]:
        """The datasets, then ``mean`` (over datasets) when there are several."""
        return list(self.datasets) + ([MEAN] if len(self.datasets) > 1 else [])

    def seeds(self, label: str) -> list[int | None]:
        """Seeds of an entry."""
        return [run.seed for run in self.group.entries[label]]

    def category(self, label: str, dataset: str, category: str, metric: str) -> Stat | None:
        """An entry's metric for one category, over seeds."""
        return stat([_get(run.document["per_category"], dataset, category, metric) for run in self._runs(label)])

    def dataset(self, label: str, dataset: str, metric: str) -> Stat | None:
        """An entry's macro mean over the categories of one dataset, over seeds (the ``mean`` row)."""
        return stat([_get(run.document["per_dataset"], dataset, metric) for run in self._runs(label)])

    def overall(self, label: str, metric: str) -> Stat | None:
        """An entry's mean over datasets, over seeds."""
        return stat([run.document["mean"].get(metric) for run in self._runs(label)])

    def value(self, label: str, dataset: str, category: str, metric: str) -> Stat | None:
        """One table cell: :meth:`category`, or :meth:`dataset` for the category ``mean``.

        With the dataset and the category both ``mean``, the mean over datasets (:meth:`overall`).
        """
        if category != MEAN:
            return self.category(label, dataset, category, metric)
        return self.overall(label, metric) if dataset == MEAN else self.dataset(label, dataset, metric)

    def seed_averaged_categories(self, label: str, metric: str, dataset: str | None = None) -> dict[str, float]:
        """``{"dataset/category": mean over seeds}`` of one entry, where defined; all datasets when ``None``."""
        averaged = {}
        for name, categories in self.datasets.items():
            if dataset is not None and name != dataset:
                continue
            for category in categories:
                value = self.category(label, name, category, metric)
                if value is not None:
                    averaged[f"{name}/{category}"] = value.mean
        return averaged

    def _runs(self, label: str) -> list[Run]:
        return self.group.entries[label]


def summarise(group: ProtocolGroup, metrics: list[str] | None = None) -> Summary:
    """Collect the datasets, categories and metrics of a protocol's runs.

    Args:
        group: The protocol's runs.
        metrics: Metric names to show, in this order; all that the runs report when ``None``.

    Raises:
        ConfigError: A requested metric is reported by no run.
    """
    available: dict[str, None] = {}
    datasets: dict[str, dict[str, None]] = {}
    for run in group.runs:
        for values in run.document["per_dataset"].values():
            available.update(dict.fromkeys(values))
        for name, categories in run.document["per_category"].items():
            datasets.setdefault(name, {}).update(dict.fromkeys(categories))
    unknown = [m for m in metrics or [] if m not in available]
    if unknown:
        raise ConfigError(
            f"--metrics {' '.join(unknown)}: not reported by the runs of protocol '{group.name}'; "
            f"available: {', '.join(available)}."
        )
    return Summary(group, list(metrics or available), {d: list(c) for d, c in datasets.items()})


def _get(table: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table
