"""Preparing and executing a grid's runs: one subprocess each, resumable through ``runs.jsonl``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zsad.components import import_class
from zsad.errors import ConfigError
from zsad.registry import PROMPTS
from zsad.workflow.atomic import atomic_write_text
from zsad.workflow.grid.expand import RunPlan
from zsad.workflow.grid.records import RUNS_FILE, RunRecord, append_record, latest_status, read_records, utc_now
from zsad.workflow.grid.resolve import resolve_run
from zsad.workflow.grid.run_config import (
    CHECKPOINT_FOLDER,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    RESULTS_FILE,
    SCORES_FILE,
    config_hash,
    seed_of,
    with_output_paths,
)
from zsad.workflow.grid.spec import GridSpec

WORKER = "zsad.workflow.grid.worker"
LOG_FILE = "log.txt"
ATTEMPT_HEADER = "=== zsad grid: attempt started"
"""First line of each attempt in ``log.txt``: a resumed attempt appends to the log of the one it continues."""
ATTEMPT_FILE = "attempt.json"
"""Written into the run folder before the worker starts: the config hash that its checkpoints belong to."""


@dataclass(frozen=True)
class PreparedRun:
    """A run with its resolved config, ready to execute.

    Attributes:
        plan: The grid point it comes from.
        run_id: ``<label>-<first 8 hex digits of config_hash>``.
        config_hash: :func:`~zsad.workflow.grid.run_config.config_hash` of ``config``.
        config: The resolved config, every output path inside ``run_dir``.
        run_dir: ``<output folder>/<run_id>``.
    """

    plan: RunPlan
    run_id: str
    config_hash: str
    config: dict[str, Any]
    run_dir: Path

    @property
    def method(self) -> str:
        """The grid's method label, else the prompt synthesizer's registry name (its class name if unregistered)."""
        if self.plan.method is not None:
            return self.plan.method
        class_path = str(((self.config.get("model") or {}).get("prompt") or {}).get("class_path"))
        return PROMPTS.find_by_class(import_class(class_path)) or class_path.rsplit(".", 1)[-1]


def prepare_runs(spec: GridSpec, plans: list[RunPlan], out: Path) -> list[PreparedRun]:
    """Resolve every run's config with the CLI's parser, before any run starts.

    Raises:
        ConfigError: A run's config is refused (naming the run and the grid key at fault), or two runs resolve to
            the same config.
    """
    out = out.resolve()
    prepared: list[PreparedRun] = []
    by_hash: dict[str, str] = {}
    for plan in plans:
        resolved = resolve_run(plan, spec)
        digest = config_hash(with_output_paths(resolved, out))  # the hash leaves output paths out: any folder will do
        if digest in by_hash:
            raise ConfigError(
                f"Grid file '{spec.path}': runs '{by_hash[digest]}' and '{plan.label}' resolve to the same config; "
                "remove the duplicate value or choice."
            )
        by_hash[digest] = plan.label
        run_id = f"{plan.label}-{digest[:8]}"
        prepared.append(PreparedRun(plan, run_id, digest, with_output_paths(resolved, out / run_id), out / run_id))
    return prepared


def run_grid(
    runs: list[PreparedRun],
    out: Path,
    echo: Callable[..., None] = print,
    resume: bool = True,
    keep_fds: tuple[int, ...] = (),
) -> list[RunRecord]:
    """Execute the runs in order, skipping those already done; one progress line per run.

    Args:
        runs: The prepared runs.
        out: The output folder (``runs.jsonl`` and one folder per run).
        echo: Where progress lines go.
        resume: Continue an interrupted run (one without a line in ``runs.jsonl``) from the last checkpoint it left
            (:func:`resumable_checkpoint`); ``False`` starts it from scratch. Failed runs always start from scratch.
        keep_fds: Descriptors each run's process inherits: the output folder's lock
            (:class:`~zsad.workflow.lock.FolderLock`), so the folder stays locked until the run's process ends too.

    Returns:
        The records of the runs executed now (skipped runs have none).
    """
    runs_file = out / RUNS_FILE
    status = latest_status(read_records(runs_file))
    executed = []
    for number, run in enumerate(runs, start=1):
        echo(f"[{number}/{len(runs)}] {run.plan.label} ... ", end="", flush=True)
        if status.get(run.config_hash) == "done":
            echo(f"skipped (done in {RUNS_FILE} as {run.run_id})", flush=True)
            continue
        resume_from = resume_point(run, status) if resume else None
        if resume_from is not None:
            echo(f"resuming from {resume_from.relative_to(out.resolve())} ... ", end="", flush=True)
        record = execute(run, out, resume_from, keep_fds)
        append_record(runs_file, record)
        executed.append(record)
        detail = "" if record.status == "done" else f": {record.error}"
        echo(f"{record.status} in {record.duration_s:.0f} s{detail}", flush=True)
    return executed


def resume_point(run: PreparedRun, status: dict[str, str]) -> Path | None:
    """Where an interrupted run continues: its :func:`resumable_checkpoint`, if it has no line in ``runs.jsonl``.

    Args:
        run: The run.
        status: Latest status per config hash in ``runs.jsonl`` (:func:`~zsad.workflow.grid.records.latest_status`).

    Returns:
        The checkpoint, or ``None``: a done run is skipped, and a failed one starts from scratch, since its
        checkpoint may carry what made it fail.
    """
    return resumable_checkpoint(run) if run.config_hash not in status else None


def resumable_checkpoint(run: PreparedRun) -> Path | None:
    """The ``last.ckpt`` that an unfinished attempt at this very config left in the run folder, if any.

    The run folder's name carries only 8 hex digits of the hash, so the attempt file's full hash decides; a folder
    without one (written before it existed, or by hand) is never resumed.
    """
    checkpoint = run.run_dir / CHECKPOINT_FOLDER / LAST_CHECKPOINT
    attempt = run.run_dir / ATTEMPT_FILE
    if not (checkpoint.is_file() and attempt.is_file()):
        return None
    try:
        recorded = json.loads(attempt.read_text()).get("config_hash")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return None
    return checkpoint if recorded == run.config_hash else None


def execute(run: PreparedRun, out: Path, resume_from: Path | None = None, keep_fds: tuple[int, ...] = ()) -> RunRecord:
    """Run fit and test in a subprocess (a crash or leak ends with it); its output goes to ``run_dir/log.txt``.

    Args:
        run: The run.
        out: The grid's output folder.
        resume_from: A checkpoint from :func:`resumable_checkpoint`: the fit continues from it (``--ckpt_path``)
            and the folder is kept; ``None`` empties the folder and starts from scratch.
        keep_fds: Descriptors the run's process inherits (the output folder's lock).
    """
    if resume_from is None:
        shutil.rmtree(run.run_dir, ignore_errors=True)
    else:
        for stale in (RESULTS_FILE, SCORES_FILE):  # only this attempt's test may leave them
            (run.run_dir / stale).unlink(missing_ok=True)
    started, clock = utc_now(), time.monotonic()
    attempt = {"run_id": run.run_id, "config_hash": run.config_hash, "started": started}
    atomic_write_text(run.run_dir / ATTEMPT_FILE, json.dumps(attempt, indent=2) + "\n")
    config_text = yaml.safe_dump(run.config, sort_keys=False)
    config_path = atomic_write_text(run.run_dir / CONFIG_FILE, config_text)
    checkpoint = run.run_dir / CHECKPOINT_FOLDER / LAST_CHECKPOINT
    command = [sys.executable, "-m", WORKER, str(config_path), "--checkpoint", str(checkpoint)]
    if resume_from is not None:
        command.append("--resume")
    log_path = run.run_dir / LOG_FILE
    with log_path.open("a" if resume_from is not None else "w") as log:
        resuming = f", resuming from {resume_from}" if resume_from is not None else ""
        log.write(f"{ATTEMPT_HEADER} {started}{resuming}\n")
        log.flush()
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, pass_fds=keep_fds)
        returncode = finished.returncode
    duration = time.monotonic() - clock
    # A trainer without a logger saves LightningCLI's config.yaml (fit's, then test's) into default_root_dir, which
    # is run_dir: put the run's own config back, the one `zsad fit -c` accepts and config_hash was taken from.
    atomic_write_text(config_path, config_text)
    results = run.run_dir / RESULTS_FILE
    done = returncode == 0 and results.is_file()
    return RunRecord(
        run_id=run.run_id,
        config_hash=run.config_hash,
        status="done" if done else "failed",
        overrides=run.plan.overrides,
        method=run.method,
        seed=seed_of(run.config),
        protocol=_protocol_name(results),
        results=str(results.relative_to(out.resolve())) if done else None,
        error=None if done else _failure(returncode, log_path),
        started=started,
        finished=utc_now(),
        duration_s=round(duration, 3),
    )


def _protocol_name(results: Path) -> str | None:
    """``protocol.name`` of a ``results.json``, if the run wrote one."""
    if not results.is_file():
        return None
    protocol = json.loads(results.read_text()).get("protocol")
    return protocol.get("name") if isinstance(protocol, dict) else None


def _failure(returncode: int, log_path: Path) -> str:
    """Why a run failed: its ``zsad: error:`` line, else the last line it printed (a traceback's exception)."""
    if returncode < 0:
        return f"killed by signal {-returncode} (log: {log_path})"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("zsad: error:")]
    if returncode == 0:
        detail = f"it wrote no {RESULTS_FILE}"
    else:
        detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit status {returncode}: {detail} (log: {log_path})"
