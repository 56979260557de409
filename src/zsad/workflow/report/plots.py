"""PNG figures: bar charts with error bars per dataset, ROC and PR curves per category.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (the Agg canvas, no pyplot), so making a
report never touches matplotlib's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from zsad.workflow.report.aggregate import Stat
from zsad.workflow.report.curves import Curves

DPI = 120


def bar_chart(path: Path, title: str, metrics: list[str], stats: dict[str, list[Stat | None]]) -> Path:
    """Grouped bars: one group per metric, one bar per entry, error bars of one std where there are 2+ seeds.

    Args:
        path: PNG file to write.
        title: Figure title.
        metrics: Group names along the x axis.
        stats: ``{entry label: one Stat (or None for n/a) per metric}``.
    """
    figure = Figure(figsize=(max(6.0, 1.1 * len(metrics) * max(1, len(stats)) / 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(stats))
    groups = np.arange(len(metrics))
    for i, (label, values) in enumerate(stats.items()):
        x = groups - 0.4 + width * (i + 0.5)
        heights = np.array([100 * v.mean if v is not None else 0.0 for v in values])
        seeds = max((v.n for v in values if v is not None), default=0)
        bars = axes.bar(x, heights, width, label=f"{label} (n={seeds})")
        spread = [
            (xi, h, 100 * v.std)
            for xi, h, v in zip(x, heights, values, strict=True)
            if v is not None and v.std is not None
        ]
        if spread:
            xs, hs, errors = zip(*spread, strict=True)
            axes.errorbar(xs, hs, yerr=errors, fmt="none", ecolor="black", capsize=3, linewidth=1)
        for xi, v in zip(x, values, strict=True):
            if v is None:
                axes.text(
                    xi,
                    1,
                    "n/a",
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=7,
                    color=bars.patches[0].get_facecolor(),
                )
    axes.set_xticks(groups, metrics, rotation=30, ha="right")
    axes.set_ylabel("%")
    axes.set_ylim(0, 118)  # room for the legend above 100 %
    axes.set_yticks(range(0, 101, 20))
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper right", ncols=min(4, max(1, len(stats))))
    return _save(figure, path)


def curve_figure(path: Path, title: str, curves: dict[str, Curves]) -> Path:
    """ROC (left) and precision-recall (right) curves, one line per entry, areas in the legend."""
    figure = Figure(figsize=(10.0, 4.5), layout="constrained")
    roc, pr = figure.subplots(1, 2)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for label, curve in curves.items():
        roc.plot(curve.fpr, curve.tpr, label=f"{label} (AUROC {100 * curve.auroc:.1f})")
        pr.plot(
            curve.recall,
            curve.precision,
            drawstyle="steps-pre",
            label=f"{label} (AP {100 * curve.average_precision:.1f})",
        )
    for axes, (x, y) in ((roc, ("false-positive rate", "true-positive rate")), (pr, ("recall", "precision"))):
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        axes.set_xlim(-0.01, 1.01)
        axes.set_ylim(-0.01, 1.01)
        axes.legend(fontsize=8, loc="lower right" if axes is roc else "lower left")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
