"""Composing ``-c`` config files before the parser sees them: any order works, and a checkpoint can be the base.

jsonargparse applies ``-c`` files one after another, and a file that sets a component's ``init_args`` before any
file has named its ``class_path`` is refused ("Not a valid subclass"): ``-c method/static.yaml -c backbone/tiny.yaml``
failed although the method config only adds the method's feature layers to whatever backbone comes. zsad therefore
merges each run of consecutive ``-c`` files itself, later files winning key by key, and hands the parser one merged
config. Where a later file names another ``class_path`` for a component, the earlier ``init_args`` that the new
class also accepts are kept (jsonargparse's own rule), the others dropped.

The same merge puts a checkpoint's component specs *under* the user's configs (:func:`compose_argv` with
``base``): the checkpoint supplies what the user does not give (docs/cli.md, "Test-time settings").

Each file is read here, so a YAML error names its file and line. A ``-c`` value that names no local file may name a
packaged config (``-c method/cops``, :mod:`zsad.packaged_configs`); the parser is handed the resolved path.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from zsad.components import import_class
from zsad.errors import ConfigError
from zsad.packaged_configs import resolve_config_file

CONFIG_FLAGS = ("-c", "--config")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A ``-c`` file as a dict (``${...}`` interpolations stay strings for the parser to resolve).

    Raises:
        ConfigError: Missing file, a YAML syntax error (with its line), or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist. Check the path given to -c.")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"Config file '{path}' is not valid YAML{where}: {problem}. Fix the file.") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"Config file '{path}' is not UTF-8 text: {error.reason}. Give a YAML file.") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"Config file '{path}' holds a {type(document).__name__}, not a mapping of keys (model:, data:, trainer:)."
        )
    return document


def accepted_arguments(class_path: Any) -> set[str] | None:
    """Constructor argument names of a component class, or ``None`` when any name is accepted or it is unknown."""
    if not isinstance(class_path, str):
        return None
    try:
        parameters = inspect.signature(import_class(class_path)).parameters
    except (ConfigError, TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters) - {"self"}


def same_class(first: Any, second: Any) -> bool:
    """Whether two ``class_path`` values name the same class (registry names and dotted paths alike)."""
    if first == second:
        return True
    try:
        return import_class(str(first)) is import_class(str(second))
    except ConfigError:
        return False


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: mappings key by key, anything else replaced.

    A mapping that changes ``class_path`` keeps only the earlier ``init_args`` the new class accepts.
    """
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    new_class = override.get("class_path")
    if new_class is not None and "class_path" in base and not same_class(base["class_path"], new_class):
        accepted = accepted_arguments(new_class)
        earlier = merged.get("init_args") or {}
        merged["init_args"] = {k: v for k, v in earlier.items() if accepted is None or k in accepted}
    for key, value in override.items():
        merged[key] = merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def merge_all(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge documents in order, later ones winning."""
    merged: dict[str, Any] = {}
    for document in documents:
        merged = merge(merged, dict(document))
    return merged


def config_runs(argv: Sequence[str]) -> list[tuple[int, int, list[str]]]:
    """``(start, stop, files)`` of every run of consecutive ``-c FILE`` / ``--config=FILE`` arguments."""
    runs: list[tuple[int, int, list[str]]] = []
    index = 0
    while index < len(argv):
        start, files = index, []
        while index < len(argv):
            arg = argv[index]
            if arg in CONFIG_FLAGS and index + 1 < len(argv):
                files.append(argv[index + 1])
                index += 2
            elif arg.startswith("--config="):
                files.append(arg.split("=", 1)[1])
                index += 1
            else:
                break
        if files:
            runs.append((start, index, files))
        else:
            index += 1
    return runs


def compose_argv(argv: Sequence[str], base: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    """Replace each run of consecutive ``-c`` files by one merged config; put ``base`` under the first run.

    Args:
        argv: Arguments after the subcommand.
        base: A config that every user config overrides (a checkpoint's ``{"model": specs}``).

    Returns:
        The new arguments and the merge of every config given (``base`` included), e.g. to read ``ckpt_path`` or
        ``trainer.default_root_dir`` from it.
    """
    argv = list(argv)
    runs = [(start, stop, [resolve_config_file(name) for name in names]) for start, stop, names in config_runs(argv)]
    documents = [read_config_file(path) for _, _, files in runs for path in files]
    if base is not None and not runs:
        argv = ["--config", dump(dict(base)), *argv]
    for number, (start, stop, files) in reversed(list(enumerate(runs))):
        layers = [read_config_file(path) for path in files]
        if number == 0 and base is not None:
            layers.insert(0, dict(base))
        argv[start:stop] = ["--config", dump(merge_all(layers)) if len(layers) > 1 else str(files[0])]
    return argv, merge_all([*([dict(base)] if base is not None else []), *documents])


def config_files(argv: Sequence[str]) -> list[Path]:
    """The files the ``-c`` values of ``argv`` stand for, in order (packaged configs resolved).

    Raises:
        ConfigError: A value that names neither a local file nor a packaged config.
    """
    return [resolve_config_file(name) for _, _, names in config_runs(argv) for name in names]


def dump(document: Mapping[str, Any]) -> str:
    """A config as the one-line YAML (JSON) string jsonargparse accepts in place of a file."""
    return json.dumps(document, ensure_ascii=False)
