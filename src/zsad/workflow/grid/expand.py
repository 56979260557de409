"""Expanding a grid into runs: the cartesian product of its axes, readable labels, and selecting runs by value."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from zsad.config_aliases import translate_tree
from zsad.errors import ConfigError
from zsad.workflow.grid.spec import METHOD_AXIS, Axis, ChoiceAxis, ConfigSource, GridSpec

SHORT_KEYS = {"seed_everything": "seed"}
"""Label prefixes of value axes that read better shortened; other keys use their last dotted part."""


@dataclass(frozen=True)
class RunPlan:
    """One point of the grid, before its config is resolved.

    Attributes:
        label: Readable name from the axes that vary (``cops-seed1``); the run id appends the config hash.
        configs: Configs to compose, in order: the base, then each choice axis's choice.
        values: Dotted config key -> value, from the value axes; applied after every config.
        overrides: Every axis of this run: choice axis key -> choice name, value axis key -> value.
        method: The choice name on the ``method`` axis, if the grid has one.
    """

    label: str
    configs: tuple[ConfigSource, ...]
    values: dict[str, Any]
    overrides: dict[str, Any]
    method: str | None

    def argv(self) -> list[str]:
        """Arguments of ``zsad fit`` (after the verb) that compose this run's config."""
        configs = [argument for source in self.configs for argument in source.argv()]
        return configs + [value_argument(key, value) for key, value in self.values.items()]


def value_argument(key: str, value: Any) -> str:
    """``--key=value`` for the command line; registry names inside the value become class paths, as in YAML."""
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    translated = translate_tree(nested)
    for part in key.split("."):
        translated = translated[part]
    text = translated if isinstance(translated, str) else json.dumps(translated)
    return f"--{key}={text}"


def expand_grid(spec: GridSpec) -> list[RunPlan]:
    """Every run of the grid; the first axis varies slowest."""
    entries = [axis.choices if isinstance(axis, ChoiceAxis) else axis.values for axis in spec.axes]
    varying = [len(options) > 1 for options in entries]
    plans = []
    for point in itertools.product(*entries):
        configs = list(spec.base)
        values: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        parts = []
        for axis, entry, varies in zip(spec.axes, point, varying, strict=True):
            if isinstance(axis, ChoiceAxis):
                configs.extend(entry.configs)
                overrides[axis.key] = entry.name
            else:
                values[axis.key] = entry
                overrides[axis.key] = entry
            if varies:
                parts.append(label_part(axis, overrides[axis.key]))
        method = overrides.get(METHOD_AXIS) if isinstance(spec.axis(METHOD_AXIS), ChoiceAxis) else None
        plans.append(RunPlan("-".join(parts) or safe_label(spec.name), tuple(configs), values, overrides, method))
    return plans


def label_part(axis: Axis, entry: Any) -> str:
    """``cops`` for a choice, ``seed1`` / ``top_k10`` for numbers, ``aggregation_mean`` for other values."""
    if isinstance(axis, ChoiceAxis):
        return safe_label(entry)
    prefix = SHORT_KEYS.get(axis.key, axis.key.rsplit(".", 1)[-1])
    numeric = isinstance(entry, (int, float)) and not isinstance(entry, bool)
    text = str(entry) if numeric else (entry if isinstance(entry, str) else json.dumps(entry))
    return safe_label(f"{prefix}{text}" if numeric else f"{prefix}_{text}")


def safe_label(text: str) -> str:
    """Keep a label usable as a folder name: anything but letters, digits, ``.``, ``_`` and ``+`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._+]+", "_", str(text)).strip("_") or "run"


def select_runs(plans: list[RunPlan], spec: GridSpec, selectors: list[str]) -> list[RunPlan]:
    """The runs matching every ``KEY=VALUE`` selector (several values of one key: any of them).

    A choice axis matches by choice name; a value axis by the value read as YAML (``seed_everything=1``).

    Raises:
        ConfigError: A selector is malformed or names no axis, or no run matches.
    """
    wanted: dict[str, list[str]] = {}
    for selector in selectors:
        key, sep, text = selector.partition("=")
        if not sep or spec.axis(key) is None:
            axes = ", ".join(axis.key for axis in spec.axes) or "(the grid has no axes)"
            raise ConfigError(f"--only '{selector}': give KEY=VALUE where KEY is a grid axis of {spec.path}: {axes}.")
        wanted.setdefault(key, []).append(text)
    selected = [plan for plan in plans if all(_matches(plan.overrides[k], texts) for k, texts in wanted.items())]
    if not selected:
        options = "; ".join(f"{axis.key}: {axis.labels()}" for axis in spec.axes)
        raise ConfigError(f"--only {' '.join(selectors)} matches no run of {spec.path}. Axis values: {options}.")
    return selected


def _matches(value: Any, texts: list[str]) -> bool:
    """Whether an axis value equals one of the command-line texts (as text, or read as YAML)."""
    for text in texts:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = text
        if value == parsed or str(value) == text:
            return True
    return False
