"""The grid file: its schema, read into typed records (docs/grids.md).

```yaml
name: cops_ablations          # optional; default: the file's stem
base:                         # configs every run composes first, like several -c (files or inline mappings)
  - ../backbone/tiny.yaml
  - {trainer: {max_epochs: 1}}
grid:                         # axes, expanded as a cartesian product in the order written
  method:                     # a mapping: named choices of configs (a file, an inline mapping, or a list of them)
    static: configs/method/static.yaml
    cops: configs/method/cops.yaml
  seed_everything: [0, 1, 2]  # a list: values of a dotted config key
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zsad.config_compose import read_config_file
from zsad.errors import ConfigError
from zsad.packaged_configs import local_config, packaged_config

GRID_KEYS = ("name", "base", "grid")
METHOD_AXIS = "method"
"""The choice axis whose choice names label the runs' method in ``runs.jsonl``."""


@dataclass(frozen=True)
class ConfigSource:
    """One config to compose: a file, or a mapping written inline in the grid file.

    Attributes:
        path: The resolved config file, or ``None`` for an inline mapping.
        inline: The inline mapping, or ``None`` for a file.
    """

    path: Path | None = None
    inline: dict[str, Any] | None = None

    def argv(self) -> list[str]:
        """The ``-c`` arguments that compose this config (jsonargparse reads an inline mapping as a config string)."""
        return ["-c", str(self.path) if self.path is not None else json.dumps(self.inline)]

    def describe(self) -> str:
        """The file path (relative to the working directory when inside it), or the inline mapping as JSON."""
        if self.path is None:
            return json.dumps(self.inline)
        return str(self.path.relative_to(Path.cwd())) if self.path.is_relative_to(Path.cwd()) else str(self.path)


@dataclass(frozen=True)
class Choice:
    """A named choice of an axis: the configs it composes after the base."""

    name: str
    configs: tuple[ConfigSource, ...]


@dataclass(frozen=True)
class ChoiceAxis:
    """An axis of named config choices (``method: {static: ..., cops: ...}``); its key is a label, not a config key."""

    key: str
    choices: tuple[Choice, ...]

    def labels(self) -> list[str]:
        """The choice names, in the order written."""
        return [choice.name for choice in self.choices]


@dataclass(frozen=True)
class ValueAxis:
    """An axis of values for one dotted config key (``seed_everything: [0, 1, 2]``)."""

    key: str
    values: tuple[Any, ...]

    def labels(self) -> list[Any]:
        """The values, in the order written."""
        return list(self.values)


Axis = ChoiceAxis | ValueAxis


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file.

    Attributes:
        path: The grid file.
        name: The grid's name (``name:``, else the file's stem).
        base: Configs every run composes first.
        axes: The axes, in the order written; the first one varies slowest.
    """

    path: Path
    name: str
    base: tuple[ConfigSource, ...]
    axes: tuple[Axis, ...]

    def axis(self, key: str) -> Axis | None:
        """The axis named ``key``, if any."""
        return next((axis for axis in self.axes if axis.key == key), None)


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid file; config file paths are resolved now, so that a typo fails before any run.

    Raises:
        ConfigError: The file is missing or malformed, has an unknown top-level key, an axis is empty or of the
            wrong shape, or a config file it names does not exist.
    """
    path = local_config(path) or packaged_config(path) or Path(path)  # a shipped grid by name: grids/synthetic_smoke
    if not path.is_file():
        raise ConfigError(
            f"Grid file '{path}' does not exist: give the path of a grid YAML (see docs/grids.md), or the name of a "
            "shipped one (`zsad configs grids`)."
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"Grid file '{path}' is not valid YAML{where}: {problem}. Fix the file.") from None
    if not isinstance(document, dict):
        raise ConfigError(f"Grid file '{path}' must be a mapping with the keys {', '.join(GRID_KEYS)}.")
    unknown = [str(key) for key in document if key not in GRID_KEYS]
    if unknown:
        raise ConfigError(
            f"Grid file '{path}': unknown top-level key(s) {', '.join(repr(k) for k in unknown)}. "
            f"Valid keys: {', '.join(GRID_KEYS)}; put config values under `base:` or `grid:`."
        )
    name = document.get("name") or path.stem
    if not isinstance(name, str):
        raise ConfigError(f"Grid file '{path}': `name` must be a string, got {name!r}.")
    base = _config_sources(document["base"], path, "base") if document.get("base") else ()
    grid = document.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"Grid file '{path}': `grid` must be a mapping of axes, got {type(grid).__name__}.")
    return GridSpec(path, name, base, tuple(_axis(str(key), value, path) for key, value in grid.items()))


def _axis(key: str, value: Any, path: Path) -> Axis:
    """A list is a value axis of a dotted config key; a mapping is an axis of named config choices."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"Grid file '{path}': grid key '{key}' has an empty list; give at least one value.")
        return ValueAxis(key, tuple(value))
    if isinstance(value, dict):
        if not value:
            raise ConfigError(f"Grid file '{path}': grid key '{key}' has no choices; give at least one.")
        choices = (Choice(str(name), _config_sources(item, path, f"grid.{key}.{name}")) for name, item in value.items())
        return ChoiceAxis(key, tuple(choices))
    raise ConfigError(
        f"Grid file '{path}': grid key '{key}' must be a list of values or a mapping of named config choices, "
        f"got {value!r}; for one fixed value write [{value!r}] or put it under `base:`."
    )


def _config_sources(item: Any, path: Path, where: str) -> tuple[ConfigSource, ...]:
    """A config file path, an inline mapping, or a list of them."""
    items = item if isinstance(item, list) else [item]
    sources = []
    for entry in items:
        if isinstance(entry, str):
            sources.append(ConfigSource(path=checked_config_file(entry, path, where)))
        elif isinstance(entry, dict):
            sources.append(ConfigSource(inline=entry))
        else:
            raise ConfigError(
                f"Grid file '{path}': `{where}` holds {entry!r}; give config file paths or inline config mappings."
            )
    if not sources:
        raise ConfigError(f"Grid file '{path}': `{where}` is empty; give a config file or an inline mapping.")
    return tuple(sources)


def checked_config_file(text: str, grid_path: Path, where: str) -> Path:
    """Find a config file named in a grid file (:func:`resolve_config_path`) and check that it reads as YAML.

    Checked here, by :func:`~zsad.config_compose.read_config_file`, so that a syntax error names the file and its
    line (the parser, given the file's text, would only say ``"<unicode string>", line 2``).

    Raises:
        ConfigError: The file is missing, not valid YAML, or not a mapping; naming the grid file and the entry.
    """
    found = resolve_config_path(text, grid_path)
    try:
        read_config_file(found)
    except ConfigError as error:
        raise ConfigError(f"Grid file '{grid_path}', `{where}`: {error}") from None
    return found


def resolve_config_path(text: str, grid_path: Path) -> Path:
    """Find a config file named in a grid file.

    A relative path is looked up next to the grid file, then in the working directory, then in the grid file's
    parent folders (so ``configs/method/cops.yaml`` works from ``configs/grids/`` wherever zsad runs), and last among
    the packaged configs (``configs/method/cops.yaml`` or ``method/cops``, :mod:`zsad.packaged_configs`).

    Raises:
        ConfigError: The file is in none of those places.
    """
    relative = Path(text).expanduser()
    folder = grid_path.resolve().parent
    places = [relative] if relative.is_absolute() else [folder / relative, Path.cwd() / relative]
    if not relative.is_absolute():
        places += [parent / relative for parent in folder.parents]
    found = next((place for place in places if place.is_file()), None) or packaged_config(text)
    if found is None:
        raise ConfigError(
            f"Grid file '{grid_path}': config file '{text}' not found (looked next to the grid file, in the working "
            f"directory {Path.cwd()}, in the grid file's parent folders and among the packaged configs); fix the path."
        )
    return found.resolve()
