"""Finding the runs a report covers: a grid's ``runs.jsonl``, or a plain tree of ``results.json`` files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsad.errors import DataError
from zsad.registry import PROMPTS, class_path_of
from zsad.workflow.report.schema import check_results_document, check_scores_pair, scores_file

RUNS_FILE = "runs.jsonl"
RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv"
RUN_KEYS = ("run_id", "status", "method", "seed", "results")
"""Keys of a ``runs.jsonl`` line that the report needs (the grid writes more; see docs/reports.md)."""


@dataclass(frozen=True)
class Run:
    """One finished test run.

    Attributes:
        run_id: Readable name: the grid's run id, or the results file's folder for a plain tree.
        method: The grid's method label, or the prompt synthesizer's registry name.
        seed: The run's seed (``None`` when unseeded).
        results_path: Its ``results.json``.
        document: The parsed ``results.json``.
        overrides: The grid leaves of this run (dotted key -> value); empty for a plain tree.
    """

    run_id: str
    method: str
    seed: int | None
    results_path: Path
    document: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def scores_path(self) -> Path:
        """The per-image ``scores.csv`` written next to ``results.json`` (it may be absent in older runs)."""
        return scores_file(self.results_path, self.document)


@dataclass
class LoadedRuns:
    """Finished runs plus what was left out and why (failed grid runs), for the report to state.

    Attributes:
        runs: The finished runs.
        left_out: ``(protocol name or None, description)`` of each run that was not used.
    """

    runs: list[Run] = field(default_factory=list)
    left_out: list[tuple[str | None, str]] = field(default_factory=list)


def load_runs(inputs: list[str | Path]) -> LoadedRuns:
    """Read every run named by ``inputs``: folders, ``runs.jsonl`` files and ``results.json`` files.

    A folder with a ``runs.jsonl`` is read through it (the grid contract); any other folder is searched for
    ``results.json`` files. The same results file named twice is read once.

    Raises:
        DataError: An input does not exist, holds no runs, or a file in it is malformed.
    """
    loaded = LoadedRuns()
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / RUNS_FILE).is_file():
            _extend(loaded, read_runs_file(path / RUNS_FILE))
        elif path.is_dir():
            found = sorted(path.rglob(RESULTS_FILE))
            if not found:
                raise DataError(f"{path} holds neither {RUNS_FILE} nor any {RESULTS_FILE}: give a grid output folder.")
            _extend(loaded, LoadedRuns([run_from_results(p, _relative_name(p, path)) for p in found]))
        elif path.is_file() and path.suffix == ".jsonl":
            _extend(loaded, read_runs_file(path))
        elif path.is_file() and path.suffix == ".json":
            _extend(loaded, LoadedRuns([run_from_results(path, str(path.parent))]))
        else:
            raise DataError(f"{path} is not a runs folder, a {RUNS_FILE} or a {RESULTS_FILE}: check the path.")
    if not loaded.runs:
        reasons = "; ".join(text for _, text in loaded.left_out) or "nothing was listed"
        raise DataError(f"No finished run to report on in {', '.join(map(str, inputs))} ({reasons}).")
    return loaded


def _extend(loaded: LoadedRuns, more: LoadedRuns) -> None:
    seen = {run.results_path.resolve() for run in loaded.runs}
    loaded.runs.extend(run for run in more.runs if run.results_path.resolve() not in seen)
    loaded.left_out.extend(more.left_out)


def _relative_name(results_path: Path, root: Path) -> str:
    folder = results_path.parent.relative_to(root)
    return str(folder) if str(folder) != "." else root.name


def read_runs_file(path: Path) -> LoadedRuns:
    """The finished runs of a grid's ``runs.jsonl``; a run listed again later (a re-run) replaces its earlier line.

    Raises:
        DataError: A line is not JSON, lacks a key, or names a results file that is missing.
    """
    lines: dict[str, dict[str, Any]] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number} is not valid JSON ({error.msg}); fix or delete that line.") from error
        missing = [key for key in RUN_KEYS if not isinstance(line, dict) or key not in line]
        if missing:
            raise DataError(f"{path}:{number} lacks {missing}; every line needs {list(RUN_KEYS)} (docs/reports.md).")
        check_run_line(line, f"{path}:{number}")
        lines.pop(line["run_id"], None)  # keep the latest line of a run, in the order runs last ended
        lines[line["run_id"]] = line
    loaded = LoadedRuns()
    for run_id, line in lines.items():
        if line["status"] != "done" or line["results"] is None:
            description = f"{run_id}: {line['status']} ({line.get('error') or 'no results'})"
            loaded.left_out.append((line.get("protocol"), description))
            continue
        results_path = path.parent / line["results"]
        if not results_path.is_file():
            raise DataError(f"{path}: run {run_id} is done but its results file {results_path} is missing.")
        document = read_results(results_path)
        seed = line["seed"] if line["seed"] is not None else normalise_seed(document.get("seed"), results_path)
        overrides = line.get("overrides") or {}
        loaded.runs.append(Run(run_id, str(line["method"]), seed, results_path, document, overrides))
    return loaded


RUN_LINE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "run_id": ((str,), "a run id"),
    "status": ((str,), "'done' or 'failed'"),
    "method": ((str,), "a method label"),
    "seed": ((int, type(None)), "null or an integer"),
    "results": ((str, type(None)), "null or a results file path"),
    "overrides": ((dict, type(None)), "a mapping of grid keys"),
    "protocol": ((str, type(None)), "a protocol name"),
}
"""Types of the ``runs.jsonl`` values a report reads."""


def check_run_line(line: dict[str, Any], where: str) -> None:
    """Refuse a ``runs.jsonl`` line with a value of the wrong type.

    Raises:
        DataError: Naming the line and the key.
    """
    for key, (types, expected) in RUN_LINE_TYPES.items():
        value = line.get(key)
        if key in line and (not isinstance(value, types) or isinstance(value, bool)):
            raise DataError(
                f"{where}: '{key}' is {value!r} ({type(value).__name__}), expected {expected}; fix or delete that line."
            )


def run_from_results(path: Path, run_id: str) -> Run:
    """A run known only by its ``results.json``: method and seed come from its ``model`` and ``seed``."""
    document = read_results(path)
    return Run(run_id, prompt_name(document, path), normalise_seed(document.get("seed"), path), path, document)


def read_results(path: Path) -> dict[str, Any]:
    """Parse a ``results.json``, checking the keys and value types a report reads, and its ``scores.csv``.

    Raises:
        DataError: The file is not JSON, lacks ``per_category``, ``per_dataset``, ``mean`` or ``model``, holds a
            value of the wrong type (:func:`~zsad.workflow.report.schema.check_results_document`), or its
            ``scores.csv`` is another run's (:func:`~zsad.workflow.report.schema.check_scores_pair`).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
        raise DataError(f"{path} is not valid JSON ({reason}); re-run `zsad test` to rewrite it.") from error
    check_results_document(document, path)
    check_scores_pair(path, document)
    return document


def normalise_seed(value: Any, source: Path) -> int | None:
    """An integer seed from ``results.json`` (older files store it as a string), or ``None``.

    Raises:
        DataError: The seed is neither empty nor an integer.
    """
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise DataError(f"{source}: seed {value!r} is not an integer; fix the file's 'seed'.")


def prompt_name(document: dict[str, Any], source: Path) -> str:
    """The registry name of the run's prompt synthesizer (its class name when it is not registered).

    Raises:
        DataError: The results file names no prompt synthesizer.
    """
    class_path = (document["model"].get("prompt") or {}).get("class_path")
    if not class_path:
        raise DataError(f"{source}: model.prompt.class_path is missing, so the method is unknown; use a runs.jsonl.")
    import zsad.prompts  # noqa: F401  (registers the built-in synthesizers)

    names = [name for name in PROMPTS.names() if class_path_of(PROMPTS.get(name)) == class_path]
    return names[0] if names else class_path.rsplit(".", 1)[-1]
