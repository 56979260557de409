"""The report's tables: per dataset (methods x metrics), per category (categories x methods), significance; CSV."""

from __future__ import annotations

import csv
import io

from zsad.checkpoints.provenance import UNTRAINED
from zsad.metrics.results import AUPRO_VARIANTS, MEAN, percent
from zsad.workflow.report.aggregate import Summary
from zsad.workflow.report.render import PLUS_MINUS, Table, cell, rank_marks
from zsad.workflow.report.runs import Run
from zsad.workflow.report.significance import CONFIDENCE, TEST_NAME, Comparison

CSV_COLUMNS = (
    "protocol",
    "level",
    "dataset",
    "category",
    "metric",
    "metric_definition",
    "method",
    "n_seeds",
    "seeds",
    "mean",
    "std",
    "mark",
)
"""Columns of ``tables.csv``: one row per (level, dataset, category, metric, method); values are fractions."""


def metric_definitions(summary: Summary) -> dict[str, str]:
    """The AUPRO variant of each AUPRO metric shown, as ``results.json`` names it (docs/metrics.md)."""
    named = {k: v for run in summary.group.runs for k, v in (run.document.get("aupro_variants") or {}).items()}
    return {m: named.get(m, AUPRO_VARIANTS.get(m, "")) for m in summary.metrics if m in named or m in AUPRO_VARIANTS}


def data_description(sources: list[dict] | None) -> str:
    """``mvtec (15 categories), visa (all categories)``: the data sources of a protocol or a checkpoint."""
    parts = []
    for source in sources or []:
        categories = source.get("categories")
        if categories is None:
            count = "all categories"
        else:
            count = f"{len(categories)} {'category' if len(categories) == 1 else 'categories'}"
        parts.append(f"{source.get('dataset', '?')} ({count})")
    return ", ".join(parts) or "no data"


def training_description(run: Run) -> str:
    """What a run's model was trained on, from the ``checkpoint`` entry of its ``results.json``.

    A checkpoint: its provenance's auxiliary data. ``"untrained"``: a trainable method evaluated without one
    (``--untrained true``). ``null``: training-free when the model has no trainable parameters. Results files
    older than these entries fall back to the protocol's auxiliary data, and say so.
    """
    document = run.document
    checkpoint = document.get("checkpoint")
    if checkpoint == UNTRAINED:
        return "untrained (initial prompts, no checkpoint)"
    if isinstance(checkpoint, dict):
        provenance = checkpoint.get("provenance") or {}
        imported = "released weights " if provenance.get("kind") == "import" else ""
        if not provenance.get("aux"):
            return f"{imported}trained (its checkpoint records no training data)"
        return f"{imported}trained on {data_description(provenance['aux'])}"
    if checkpoint is None and document.get("trainable_parameters") == 0:
        return "training-free"
    aux = (document.get("protocol") or {}).get("aux")
    if "checkpoint" not in document and aux:
        return f"trained on {data_description(aux)} (by its protocol; the file records no checkpoint)"
    return "training not recorded"


def protocol_description(summary: Summary) -> str:
    """One sentence: the protocol's name, what each entry was trained on, what is tested, the metric resolution."""
    protocol = summary.group.protocol
    trainings: dict[str, list[str]] = {}
    for label in summary.labels:
        described = dict.fromkeys(training_description(run) for run in summary.group.entries[label])
        trainings.setdefault("; ".join(described), []).append(label)
    if len(trainings) == 1:
        trained = next(iter(trainings))
    else:
        trained = "; ".join(f"{', '.join(labels)} {training}" for training, labels in trainings.items())
    resolution = summary.group.name.partition("@")[2] or "eval"
    tested = data_description(protocol.get("targets"))
    return f"Protocol {protocol['name']}: {trained}; tested on {tested}; metrics at {resolution} resolution."


def seeds_description(summary: Summary) -> str:
    """How many seeds (and which) each entry has."""
    parts = []
    for label in summary.labels:
        seeds = summary.seeds(label)
        parts.append(f"{label} n={len(seeds)} ({', '.join('unseeded' if s is None else str(s) for s in seeds)})")
    return "Seeds: " + "; ".join(parts) + "."


def common_caption(summary: Summary) -> str:
    """What every table of the protocol shares: protocol, units, seeds, marks."""
    return (
        f"{protocol_description(summary)} Values in %, mean {PLUS_MINUS} sample std (ddof=1) over seeds, no "
        f"{PLUS_MINUS} for one seed; n/a: undefined. Best in bold, second best underlined. {seeds_description(summary)}"
    )


def dataset_tables(summary: Summary, digits: int = 1) -> list[Table]:
    """One table per dataset (and one over datasets when there are several): methods x metrics, best per column."""
    definitions = metric_definitions(summary)
    tables = []
    for scope in summary.scopes:
        stats = [[summary.value(label, scope, MEAN, m) for m in summary.metrics] for label in summary.labels]
        columns = [rank_marks([row[j] for row in stats], digits) for j in range(len(summary.metrics))]
        count = len(summary.datasets) if scope == MEAN else len(summary.datasets[scope])
        title = f"all datasets (mean over {count})" if scope == MEAN else f"{scope} (mean over {count} categories)"
        tables.append(
            Table(
                title=title,
                caption=f"{title}: metrics per method{_variants_note(summary.metrics, definitions)}.",
                header=["method", *summary.metrics],
                rows=[
                    [label, *(cell(s, digits) for s in row)] for label, row in zip(summary.labels, stats, strict=True)
                ],
                marks=[[columns[j][i] for j in range(len(summary.metrics))] for i in range(len(summary.labels))],
                label=f"{summary.group.name}-{scope}",
            )
        )
    return tables


def category_tables(summary: Summary, digits: int = 1) -> list[Table]:
    """One table per dataset and metric: categories (then the mean) x methods, best per row."""
    definitions = metric_definitions(summary)
    tables = []
    for dataset, categories in summary.datasets.items():
        for metric in summary.metrics:
            stats = [[summary.category(label, dataset, c, metric) for label in summary.labels] for c in categories]
            stats.append([summary.dataset(label, dataset, metric) for label in summary.labels])
            tables.append(
                Table(
                    title=f"{dataset}: {metric}",
                    caption=f"{dataset}: {metric} per category{_variants_note([metric], definitions)}.",
                    header=["category", *summary.labels],
                    rows=[
                        [name, *(cell(s, digits) for s in row)]
                        for name, row in zip([*categories, MEAN], stats, strict=True)
                    ],
                    marks=[rank_marks(row, digits) for row in stats],
                    rules={len(categories)},
                    label=f"{summary.group.name}-{dataset}-{metric}",
                )
            )
    return tables


def _variants_note(metrics: list[str], definitions: dict[str, str]) -> str:
    notes = [f"{m}: {definitions[m]}" for m in metrics if m in definitions]
    return f" ({'; '.join(notes)})" if notes else ""


def tables_csv(summary: Summary, digits: int = 1) -> str:
    """Every number of the tables in long form (one row per cell), with its mark; means and stds as fractions."""
    definitions = metric_definitions(summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    places = [
        ("dataset" if c == MEAN else "category", d, c) for d, cats in summary.datasets.items() for c in [*cats, MEAN]
    ]
    if len(summary.datasets) > 1:
        places.append(("overall", MEAN, MEAN))
    for level, dataset, category in places:
        for metric in summary.metrics:
            stats = [summary.value(label, dataset, category, metric) for label in summary.labels]
            for label, value, mark in zip(summary.labels, stats, rank_marks(stats, digits), strict=True):
                seeds = " ".join(str(s) for s in summary.seeds(label))
                mean = "" if value is None else repr(value.mean)
                std = "" if value is None or value.std is None else repr(value.std)
                row = [summary.group.name, level, dataset, category, metric, definitions.get(metric, ""), label]
                writer.writerow([*row, 0 if value is None else value.n, seeds, mean, std, mark])
    return buffer.getvalue()


SIGNIFICANCE_COLUMNS = (
    "protocol",
    "scope",
    "metric",
    "method",
    "reference",
    "test",
    "pairs",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "note",
)
"""Columns of ``significance.csv``; differences are fractions (method minus reference), empty where n/a."""


SIGNIFICANCE_HEADER = ["metric", "method", "best", "categories", "difference", "95% CI", "p", "p (Holm)", "note"]


def significance_caption(resamples: int, seed: int) -> str:
    """How the comparisons were made: the test's name and the bootstrap settings."""
    return (
        f"Each method against the best of its scope (method - best, in percentage points). Test: {TEST_NAME}. "
        f"Interval: {100 * CONFIDENCE:.0f}% percentile bootstrap of the mean difference, resampling categories "
        f"({resamples} resamples, seed {seed}). p (Holm): p Holm-adjusted over the methods compared on the same "
        "metric and scope. n/a: not applicable (reason in the note)."
    )


def significance_tables(comparisons: list[Comparison], digits: int = 1) -> list[Table]:
    """One table per scope (dataset, or ``mean`` for all categories): one row per metric and method."""
    tables = []
    for scope in dict.fromkeys(c.scope for c in comparisons):
        rows = []
        for c in (c for c in comparisons if c.scope == scope):
            interval = (
                percent(None)
                if c.interval is None
                else f"[{percent(c.interval[0], digits)}, {percent(c.interval[1], digits)}]"
            )
            p_value, p_holm = (percent(None) if p is None else f"{p:.3g}" for p in (c.p_value, c.p_holm))
            rows.append(
                [
                    c.metric,
                    c.method,
                    c.reference,
                    str(c.pairs),
                    percent(c.difference, digits),
                    interval,
                    p_value,
                    p_holm,
                    c.note,
                ]
            )
        name = "all datasets (categories pooled)" if scope == MEAN else scope
        tables.append(
            Table(
                title=f"{name}: against the best method",
                caption=f"{name}: paired comparison over categories.",
                header=SIGNIFICANCE_HEADER,
                rows=rows,
                label=f"significance-{scope}",
                notes_column=SIGNIFICANCE_HEADER.index("note"),
            )
        )
    return tables


def significance_csv(protocol: str, comparisons: list[Comparison]) -> str:
    """Every comparison in long form, with the test's name; n/a values are empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SIGNIFICANCE_COLUMNS)
    for c in comparisons:
        low, high = ("", "") if c.interval is None else (repr(c.interval[0]), repr(c.interval[1]))
        difference = "" if c.difference is None else repr(c.difference)
        p_value, p_holm = ("" if p is None else repr(p) for p in (c.p_value, c.p_holm))
        writer.writerow(
            [
                protocol,
                c.scope,
                c.metric,
                c.method,
                c.reference,
                TEST_NAME,
                c.pairs,
                difference,
                low,
                high,
                p_value,
                p_holm,
                c.note,
            ]
        )
    return buffer.getvalue()
