"""``zsad grid <grid.yaml>``: expand an ablation grid, check every run's config, then fit and test each run.

Runs already done (same config hash in ``runs.jsonl``) are skipped, failed ones are retried, and interrupted ones
resume from their last checkpoint unless ``--restart``; see docs/grids.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from zsad.metrics.results import format_table
from zsad.workflow.atomic import atomic_write_text
from zsad.workflow.grid.expand import expand_grid, select_runs
from zsad.workflow.grid.records import RUNS_FILE, latest_status, read_records
from zsad.workflow.grid.runner import PreparedRun, prepare_runs, resume_point, run_grid
from zsad.workflow.grid.spec import load_grid
from zsad.workflow.grid.sweep import sweep_yaml
from zsad.workflow.lock import FolderLock

INTERRUPTED = 130  # the shell's status for a run ended by Ctrl-C


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad grid``."""
    parser = argparse.ArgumentParser(prog="zsad grid", description=__doc__)
    parser.add_argument("grid", help="the grid file (docs/grids.md), or a shipped one by name: grids/synthetic_smoke")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: runs/<grid file stem>)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their status, run nothing")
    parser.add_argument(
        "--wandb-sweep",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="write the equivalent W&B sweep YAML to FILE (stdout without FILE) instead of running",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start interrupted runs from scratch instead of from the last checkpoint they left",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="run only the runs whose axis KEY has VALUE (a choice name or a value; repeat a key for any of several)",
    )
    return parser.parse_args(argv)


def grid_main(argv: list[str]) -> int:
    """Run ``zsad grid``; returns the exit status (1 when a run failed).

    Raises:
        ConfigError: A bad grid file or run config, or an output folder that another ``zsad grid`` is using
            (:class:`~zsad.workflow.lock.FolderLock`).
    """
    args = parse_args(argv)
    spec = load_grid(args.grid)
    out: Path = args.out if args.out is not None else Path("runs") / Path(args.grid).stem
    plans = expand_grid(spec)
    if args.only:
        plans = select_runs(plans, spec, args.only)
    runs = prepare_runs(spec, plans, out)  # every config is checked before anything runs or is written
    if args.wandb_sweep is not None:
        return write_sweep(sweep_yaml(spec, args.grid, out), args.wandb_sweep)
    if args.dry_run:
        print(run_table(runs, out))
        return 0
    lock = FolderLock(out, "zsad grid").acquire()  # a second grid on this folder would empty its live run folder
    print(f"grid {spec.name}: {len(runs)} runs into {out}", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        records = run_grid(runs, out, resume=not args.restart, keep_fds=(lock.fileno(),))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the unfinished run has no line in {out / RUNS_FILE}; the same command resumes it from "
            "its last checkpoint (--restart: from scratch)."
        )
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        lock.release()
    failed = [record.run_id for record in records if record.status == "failed"]
    print(
        f"grid {spec.name}: {len(records) - len(failed)} done, {len(runs) - len(records)} skipped, "
        f"{len(failed)} failed; runs listed in {out / RUNS_FILE}"
        + (f"; re-run the same command to retry {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a cancelled batch job) stops the grid like Ctrl-C: the running worker is killed, no line written."""
    raise KeyboardInterrupt


def write_sweep(text: str, target: str) -> int:
    """Print the sweep YAML (``-``) or write it atomically to a file."""
    if target == "-":
        sys.stdout.write(text)
    else:
        print(f"wrote {atomic_write_text(target, text)}; start it with `wandb sweep {target}`")
    return 0


def run_table(runs: list[PreparedRun], out: Path) -> str:
    """The runs with their status and grid values.

    The status is the run's latest in ``runs.jsonl`` (done or failed), else ``pending``; a pending run whose folder
    holds a checkpoint that the next invocation resumes (an interrupted one) says so.
    """
    status = latest_status(read_records(out / RUNS_FILE))

    def described(run: PreparedRun) -> str:
        state = status.get(run.config_hash, "pending")
        return f"{state}, resumes from last.ckpt" if resume_point(run, status) is not None else state

    rows = [
        [
            str(number),
            run.run_id,
            described(run),
            ", ".join(f"{key}={value}" for key, value in run.plan.overrides.items()),
        ]
        for number, run in enumerate(runs, start=1)
    ]
    return f"{len(runs)} runs into {out}:\n" + format_table(["#", "run_id", "status", "grid values"], rows)
