"""``zsad report``: paper tables, significance and plots from finished runs, one report per protocol."""

from __future__ import annotations

import argparse
from pathlib import Path

from zsad.errors import ConfigError
from zsad.workflow.report.grouping import group_runs
from zsad.workflow.report.runs import load_runs
from zsad.workflow.report.significance import RESAMPLES
from zsad.workflow.report.writer import ReportOptions, slug, write_report

DEFAULT_OUT = "report"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad report``."""
    parser = argparse.ArgumentParser(
        prog="zsad report",
        description=(
            "Tables (markdown, LaTeX, CSV), significance tests and plots from finished runs. Runs of different "
            "protocols are never mixed: each protocol gets its own sub-folder of --out."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="a grid output folder (read through its runs.jsonl), a runs.jsonl, a folder of results.json files, "
        "or results.json files",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"output folder (default: <input>/{DEFAULT_OUT} for one folder, else ./{DEFAULT_OUT})",
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics to show, in order (default: all reported)")
    parser.add_argument(
        "--by",
        nargs="+",
        default=["method"],
        help="what tells table entries apart: 'method' and/or dotted override keys or results.json paths "
        "(e.g. --by method model.prompt.init_args.n_ctx); runs with equal values are seeds of one entry",
    )
    parser.add_argument("--digits", type=int, default=1, help="decimals of the percentages (default: 1)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default: {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--html",
        default=None,
        metavar="OUT",
        help="instead of the tables: write one self-contained HTML result gallery per run into the folder OUT "
        "(metrics, ROC/PR curves, the run's pictures worst first, filters) and an index.html",
    )
    return parser.parse_args(argv)


def default_out(inputs: list[str]) -> Path:
    """``<folder>/report`` for a single folder input, else ``./report``."""
    return Path(inputs[0]) / DEFAULT_OUT if len(inputs) == 1 and Path(inputs[0]).is_dir() else Path(DEFAULT_OUT)


def report_main(argv: list[str]) -> int:
    """Entry point of ``zsad report``; returns the exit status.

    Raises:
        ConfigError: An option value is out of range.
        DataError: The inputs hold no usable runs, or runs that must not be mixed.
    """
    args = parse_args(argv)
    if args.digits < 0 or args.resamples < 1:
        raise ConfigError(f"--digits {args.digits} / --resamples {args.resamples}: use digits >= 0 and resamples >= 1.")
    loaded = load_runs(args.inputs)
    if args.html:
        from zsad.workflow.gallery.page import write_galleries

        pages = write_galleries(loaded.runs, Path(args.html))
        print(f"{len(pages) - 1} gallery page(s) -> {pages[-1]}")
        return 0
    groups = group_runs(loaded.runs, args.by)
    out = Path(args.out) if args.out else default_out(args.inputs)
    options = ReportOptions(args.metrics, args.digits, args.resamples, args.seed, not args.no_plots)
    for group in groups:
        base = group.name.partition("@")[0]
        left_out = [text for protocol, text in loaded.left_out if protocol in (None, base)]
        path = write_report(out / slug(group.name), group, options, left_out)
        print(f"{group.name}: {len(group.runs)} run(s), {len(group.entries)} method(s) -> {path}")
    return 0
