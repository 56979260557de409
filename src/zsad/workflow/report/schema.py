"""What ``zsad report`` reads, checked: the value types of ``results.json``, and that its ``scores.csv`` is its own.

A hand-edited results file with a string where a number belongs would otherwise surface as a traceback from deep
inside the aggregation, or worse, as a silently wrong table; a ``scores.csv`` left by another run (a kill between
the two atomic renames of :class:`~zsad.workflow.results.ResultsWriter`) would draw another run's curves. Both are
refused here with one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsad.checkpoints.provenance import UNTRAINED
from zsad.errors import DataError

REQUIRED_KEYS = ("per_category", "per_dataset", "mean", "model")
"""Keys every results file has; the others are checked only when present (older files lack some)."""
REWRITE = "fix the file, or re-run `zsad test` to rewrite it"

Check = Callable[[Any], bool]


def is_number(value: Any) -> bool:
    """A metric value: a number (not a bool), or ``None`` for undefined."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def is_text(value: Any) -> bool:
    """A string."""
    return isinstance(value, str)


def is_optional_text(value: Any) -> bool:
    """A string or ``None``."""
    return value is None or isinstance(value, str)


def is_seed(value: Any) -> bool:
    """``None``, an integer, or an integer written as a string (older files)."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def is_count(value: Any) -> bool:
    """A non-negative integer."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_categories(value: Any) -> bool:
    """``None`` (every category) or a list of category names."""
    return value is None or (isinstance(value, list) and all(isinstance(item, str) for item in value))


def shown(value: Any) -> str:
    """A value for a message: its repr, cut short, and its type."""
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def refuse(path: Path, key: str, value: Any, expected: str) -> DataError:
    """The one-line error for a results-file value of the wrong type."""
    return DataError(f"{path}: '{key}' is {shown(value)}, expected {expected}; {REWRITE}.")


def check_mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    """``value`` if it is a mapping.

    Raises:
        DataError: It is not.
    """
    if not isinstance(value, dict):
        raise refuse(path, key, value, "a mapping")
    return value


def check_nested(value: Any, path: Path, key: str, depth: int, leaf: Check, expected: str) -> None:
    """Check ``depth`` levels of mappings whose leaves pass ``leaf``.

    Raises:
        DataError: Naming the first key at fault, e.g. ``per_category.mvtec.bottle.image_auroc``.
    """
    for name, item in check_mapping(value, path, key).items():
        where = f"{key}.{name}"
        if depth > 1:
            check_nested(item, path, where, depth - 1, leaf, expected)
        elif not leaf(item):
            raise refuse(path, where, item, expected)


def check_fields(record: dict[str, Any], path: Path, key: str, fields: dict[str, tuple[Check, str]]) -> None:
    """Check the fields of ``record`` that are present (``key`` is the record's own key, empty at the top level).

    Raises:
        DataError: A field's value fails its check.
    """
    for name, (check, expected) in fields.items():
        if name in record and not check(record[name]):
            raise refuse(path, f"{key}.{name}" if key else name, record[name], expected)


def check_sources(value: Any, path: Path, key: str) -> None:
    """A protocol's ``aux`` or ``targets``: ``None`` or a list of data sources.

    Raises:
        DataError: The list or one of its sources has the wrong type.
    """
    if value is None:
        return
    if not isinstance(value, list):
        raise refuse(path, key, value, "a list of data sources")
    for index, source in enumerate(value):
        where = f"{key}[{index}]"
        record = check_mapping(source, path, where)
        fields = {
            "dataset": (is_text, "a dataset name"),
            "categories": (is_categories, "null or a list of category names"),
            "split": (is_optional_text, "a split name"),
            "root": (is_optional_text, "a folder"),
        }
        check_fields(record, path, where, fields)


def check_protocol(value: Any, path: Path) -> None:
    """``protocol``: ``None`` or ``{name, aux, targets, allow_overlap}``.

    Raises:
        DataError: A value has the wrong type.
    """
    if value is None:
        return
    protocol = check_mapping(value, path, "protocol")
    check_fields(protocol, path, "protocol", {"name": (is_text, "a protocol name")})
    if protocol.get("allow_overlap") not in (None, True, False):
        raise refuse(path, "protocol.allow_overlap", protocol["allow_overlap"], "true or false")
    for key in ("aux", "targets"):
        check_sources(protocol.get(key), path, f"protocol.{key}")


def check_checkpoint(value: Any, path: Path) -> None:
    """``checkpoint``: ``None`` (training-free), ``"untrained"``, or the record of the evaluated checkpoint.

    Raises:
        DataError: A value has the wrong type.
    """
    if value is None or value == UNTRAINED:
        return
    if not isinstance(value, dict):
        raise refuse(path, "checkpoint", value, f"null, '{UNTRAINED}' or a checkpoint record")
    check_fields(value, path, "checkpoint", {"path": (is_text, "a file path"), "sha256": (is_text, "a hex digest")})
    provenance = value.get("provenance")
    if provenance is None:
        return
    check_mapping(provenance, path, "checkpoint.provenance")
    check_fields(provenance, path, "checkpoint.provenance", {"kind": (is_text, "'fit' or 'import'")})
    check_sources(provenance.get("aux"), path, "checkpoint.provenance.aux")


def check_results_document(document: Any, path: Path) -> dict[str, Any]:
    """Check the value types of every ``results.json`` entry that a report reads.

    Args:
        document: The parsed file.
        path: The file, for messages.

    Returns:
        ``document``.

    Raises:
        DataError: A missing key, or a value of the wrong type, naming the file and the key.
    """
    missing = [key for key in REQUIRED_KEYS if not isinstance(document, dict) or key not in document]
    if missing:
        raise DataError(f"{path} is not a zsad results file (missing {missing}); give files that `zsad test` wrote.")
    check_nested(document["per_category"], path, "per_category", 3, is_number, "a number or null")
    check_nested(document["per_dataset"], path, "per_dataset", 2, is_number, "a number or null")
    check_nested(document["mean"], path, "mean", 1, is_number, "a number or null")
    model = check_mapping(document["model"], path, "model")
    check_fields(model, path, "model", {"metric_resolution": (is_text, "'eval' or 'native'")})
    if "prompt" in model:
        prompt = check_mapping(model["prompt"], path, "model.prompt")
        check_fields(prompt, path, "model.prompt", {"class_path": (is_text, "a class path")})
    check_protocol(document.get("protocol"), path)
    check_checkpoint(document.get("checkpoint"), path)
    fields = {
        "seed": (is_seed, "null or an integer"),
        "trainable_parameters": (is_count, "a count of parameters"),
    }
    check_fields(document, path, "", fields)
    if "aupro_variants" in document:
        check_nested(document["aupro_variants"], path, "aupro_variants", 1, is_text, "a description")
    if "scores" in document:
        scores = check_mapping(document["scores"], path, "scores")
        check_fields(scores, path, "scores", {"file": (is_text, "a file name"), "sha256": (is_text, "a hex digest")})
    return document


def scores_file(results_path: Path, document: dict[str, Any]) -> Path:
    """The ``scores.csv`` of a results file: the one it records, else ``scores.csv`` beside it (older files)."""
    record = document.get("scores")
    name = record.get("file") if isinstance(record, dict) else None
    return results_path.parent / (name or "scores.csv")


def check_scores_pair(results_path: Path, document: dict[str, Any]) -> None:
    """Refuse a ``scores.csv`` that is not the one its ``results.json`` was written with.

    Files written before ``results.json`` recorded the SHA-256 of its scores pass unchecked; a missing
    ``scores.csv`` passes too (the report then draws no curves for that run and says so).

    Raises:
        DataError: The SHA-256 of the ``scores.csv`` differs from the recorded one, naming both files.
    """
    record = document.get("scores")
    path = scores_file(results_path, document)
    if not isinstance(record, dict) or not path.is_file():
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != record.get("sha256"):
        raise DataError(
            f"{path} does not belong to {results_path}: its SHA-256 differs from the one {results_path.name} records "
            "(a run was interrupted between writing the two files, or one of them was replaced). Re-run `zsad test` "
            "for this run, or delete both files."
        )
