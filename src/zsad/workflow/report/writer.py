"""One protocol's report folder: ``report.md``, ``tables.tex``, ``tables.csv``, ``significance.csv``, ``plots/``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from zsad.metrics.results import MEAN
from zsad.workflow.atomic import atomic_write_text
from zsad.workflow.report.aggregate import Summary, summarise
from zsad.workflow.report.curves import CategoryScores, Curves, curves, read_scores
from zsad.workflow.report.grouping import ProtocolGroup
from zsad.workflow.report.plots import bar_chart, curve_figure
from zsad.workflow.report.render import LATEX_PREAMBLE, to_latex, to_markdown
from zsad.workflow.report.runs import Run
from zsad.workflow.report.significance import RESAMPLES, compare_all
from zsad.workflow.report.tables import (
    category_tables,
    common_caption,
    dataset_tables,
    metric_definitions,
    protocol_description,
    seeds_description,
    significance_caption,
    significance_csv,
    significance_tables,
    tables_csv,
)

PLOTS = "plots"


@dataclass(frozen=True)
class ReportOptions:
    """Settings of a report.

    Attributes:
        metrics: Metrics to show, in order; all reported ones when ``None``.
        digits: Decimals of the percentages.
        resamples: Bootstrap resamples of the confidence intervals.
        seed: Bootstrap seed.
        plots: Write the PNG figures.
    """

    metrics: list[str] | None = None
    digits: int = 1
    resamples: int = RESAMPLES
    seed: int = 0
    plots: bool = True


def slug(text: str) -> str:
    """A file-name-safe version of a protocol, dataset or category name."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "-", text).strip("-") or "unnamed"


def write_report(folder: Path, group: ProtocolGroup, options: ReportOptions, left_out: list[str]) -> Path:
    """Write one protocol's report into ``folder``; returns the path of ``report.md``.

    Args:
        folder: Output folder (created).
        group: The protocol's runs by entry.
        options: What to show and how.
        left_out: Lines about runs of this protocol that were not used (failed runs), stated in the report.
    """
    summary = summarise(group, options.metrics)
    comparisons = compare_all(summary, options.resamples, options.seed)
    per_dataset, per_category = dataset_tables(summary, options.digits), category_tables(summary, options.digits)
    test_tables = significance_tables(comparisons, options.digits)
    caption = common_caption(summary)
    test_caption = significance_caption(options.resamples, options.seed)
    latex = [to_latex(t, caption) for t in per_dataset + per_category] + [
        to_latex(t, test_caption) for t in test_tables
    ]
    atomic_write_text(folder / "tables.tex", LATEX_PREAMBLE + "\n".join(latex))
    atomic_write_text(folder / "tables.csv", tables_csv(summary, options.digits))
    atomic_write_text(folder / "significance.csv", significance_csv(group.name, comparisons))
    figures = write_plots(folder / PLOTS, summary) if options.plots else []
    lines = [f"# zsad report: {group.name}", "", *_header(summary, left_out), "", "## Per dataset", ""]
    lines += [to_markdown(t) for t in per_dataset]
    lines += ["## Per category", ""] + [to_markdown(t) for t in per_category]
    lines += ["## Significance", "", test_caption, ""]
    lines += [to_markdown(t) for t in test_tables] or ["Only one method: nothing to compare.", ""]
    if options.plots:
        lines += ["## Plots", ""] + [
            f"![{name}]({PLOTS}/{path.name})" if path else f"- {name}" for name, path in figures
        ]
    return atomic_write_text(folder / "report.md", "\n".join(lines).rstrip() + "\n")


def _header(summary: Summary, left_out: list[str]) -> list[str]:
    definitions = metric_definitions(summary)
    lines = [
        f"- {protocol_description(summary)}",
        "- Values in %, mean ± sample std (ddof=1) over seeds; one seed shows no ±; n/a: undefined, never 0.",
        "- Best per comparison in **bold**, second best <u>underlined</u> (ranked as shown; second only among 3+).",
        f"- {seeds_description(summary)}",
    ]
    lines += [f"- AUPRO variant of `{m}`: {d}." for m, d in definitions.items()]
    lines += [f"- Left out: {line}" for line in left_out]
    return lines


def write_plots(folder: Path, summary: Summary) -> list[tuple[str, Path | None]]:
    """Bar charts per dataset (and over datasets) and ROC/PR curves per category.

    Returns:
        ``(description, path)`` per figure; the path is ``None`` where a figure could not be drawn (the
        description then says why).
    """
    written: list[tuple[str, Path | None]] = []
    for scope in summary.scopes:
        stats = {label: [summary.value(label, scope, MEAN, m) for m in summary.metrics] for label in summary.labels}
        name = "all datasets" if scope == MEAN else scope
        title = f"{summary.group.name}: {name}, mean over seeds, error bars ±1 std (ddof=1)"
        written.append((f"{name}: bars", bar_chart(folder / f"bars_{slug(scope)}.png", title, summary.metrics, stats)))
    chosen = {label: _curve_run(runs) for label, runs in summary.group.entries.items()}
    scores = {label: read_scores(run.scores_path) for label, run in chosen.items() if run is not None}
    written += [(f"{label}: no scores.csv in any run, no curves", None) for label, run in chosen.items() if run is None]
    if not scores:
        return written
    seeds = {label: chosen[label].seed for label in scores}  # type: ignore[union-attr]
    which = f"seed {next(iter(seeds.values()))}" if len(set(seeds.values())) == 1 else "lowest seed per method"
    for dataset, categories in summary.datasets.items():
        for category in categories:
            drawn = _category_curves(scores, seeds, dataset, category)
            name = f"{dataset}/{category}"
            if not drawn:
                written.append((f"{name}: curves undefined (one class only, or no scores)", None))
                continue
            path = folder / f"curves_{slug(dataset)}_{slug(category)}.png"
            title = f"{summary.group.name}: {name}, image-level ROC and PR, {which}"
            written.append((f"{name}: curves", curve_figure(path, title, drawn)))
    return written


def _curve_run(runs: list[Run]) -> Run | None:
    """The run whose scores an entry's curves show: its lowest seed that has a ``scores.csv``."""
    return next((run for run in runs if run.scores_path.is_file()), None)


def _category_curves(
    scores: dict[str, CategoryScores], seeds: dict[str, int | None], dataset: str, category: str
) -> dict[str, Curves]:
    drawn = {}
    for label, by_category in scores.items():
        found = by_category.get((dataset, category))
        curve = curves(*found) if found is not None else None
        if curve is not None:
            drawn[f"{label}, seed {seeds[label]}"] = curve
    return drawn
