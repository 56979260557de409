"""``runs.jsonl``: one line per finished run, appended atomically; the grid's memory of what is done.

The keys are a contract with ``zsad report`` (docs/grids.md, "Output folder").
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

RUNS_FILE = "runs.jsonl"
Status = Literal["done", "failed"]


@dataclass(frozen=True)
class RunRecord:
    """One line of ``runs.jsonl``.

    Attributes:
        run_id: Readable label plus the first 8 hex digits of the config hash (``static-seed0-1a2b3c4d``).
        config_hash: SHA-256 of the canonical JSON of the resolved run config minus its output paths.
        status: ``"done"`` or ``"failed"``.
        overrides: The grid leaves of this run: choice axis -> choice name, dotted key -> value.
        method: The choice name on the grid's ``method`` axis, else the prompt synthesizer's registry name.
        seed: ``seed_everything`` when it is a number.
        protocol: The protocol name from ``results.json`` (``None`` when the run wrote none).
        results: Path of ``results.json`` relative to the output folder, or ``None``.
        error: What went wrong, for a failed run.
        started: ISO 8601 UTC start time.
        finished: ISO 8601 UTC end time.
        duration_s: Wall time in seconds.
    """

    run_id: str
    config_hash: str
    status: Status
    overrides: dict[str, Any]
    method: str
    seed: int | None
    protocol: str | None
    results: str | None
    error: str | None
    started: str
    finished: str
    duration_s: float

    def to_line(self) -> str:
        """The record as one JSON line, newline included."""
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


def utc_now() -> str:
    """The current time in ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_record(path: Path, record: RunRecord) -> None:
    """Append one line in a single ``write`` on an ``O_APPEND`` descriptor, then fsync.

    A killed grid therefore never leaves half a line, and runs sharing the file (W&B agents) never interleave.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, record.to_line().encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every readable line of a ``runs.jsonl`` (an absent file has none; a hand-mangled line is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # never written by the grid (lines are atomic); a re-run simply redoes that run
        if isinstance(record, dict):
            records.append(record)
    return records


def latest_status(records: list[dict[str, Any]]) -> dict[str, str]:
    """Config hash -> status, where a ``"done"`` line wins over any ``"failed"`` one."""
    status: dict[str, str] = {}
    for record in records:
        key = record.get("config_hash")
        if isinstance(key, str) and status.get(key) != "done":
            status[key] = str(record.get("status"))
    return status
