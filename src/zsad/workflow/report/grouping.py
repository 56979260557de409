"""Sorting runs into protocols and table entries, refusing to average runs that are not replicates of each other.

A report never mixes protocols: runs are split by protocol name (and metric resolution), each group gets its own
report, and two runs with the same protocol name but different auxiliary or target data are an error. Within a
protocol, runs with the same label (``--by``, the method by default) are seeds of one entry; they must differ only
in their seed, otherwise the report would silently average different settings.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from zsad.errors import ConfigError, DataError
from zsad.workflow.report.runs import Run

SEED_OVERRIDES = ("seed_everything", "seed")
"""Grid override keys that are the replicate axis (the run seed), so they may differ between seeds of one entry."""
IGNORED_MODEL_KEYS = ("max_pictures",)
"""Model settings that do not change any metric, so seeds of one entry may differ in them."""
DEFAULT_RESOLUTION = "eval"


@dataclass
class ProtocolGroup:
    """The runs of one protocol, by table entry.

    Attributes:
        name: The protocol's name, with ``@native`` appended when its metrics are at native resolution.
        protocol: The protocol as ``results.json`` records it (of the first run).
        entries: ``{label: runs}`` in the order labels first appear; runs sorted by seed.
    """

    name: str
    protocol: dict[str, Any]
    entries: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def runs(self) -> list[Run]:
        """Every run of the protocol."""
        return [run for runs in self.entries.values() for run in runs]


def group_runs(runs: list[Run], by: list[str]) -> list[ProtocolGroup]:
    """Split runs by protocol and label them by the ``by`` keys.

    Args:
        runs: Finished runs.
        by: ``"method"`` and/or dotted keys (a grid override such as ``model.prompt.init_args.n_ctx``, or a path
            into ``results.json`` such as ``model.head.class_path``) whose values tell entries apart.

    Raises:
        DataError: Two runs share a protocol name but not its data, or two runs of one entry are not replicates.
        ConfigError: A ``by`` key is found neither in a run's overrides nor in its results file.
    """
    groups: dict[str, ProtocolGroup] = {}
    identities: dict[str, tuple[Run, dict[str, Any]]] = {}
    for run in runs:
        identity = protocol_identity(run)
        name = identity["name"] + ("" if identity["resolution"] == DEFAULT_RESOLUTION else f"@{identity['resolution']}")
        if name in identities:
            _refuse_difference(
                identities[name],
                (run, identity),
                f"both use protocol '{name}'",
                "give them to separate `zsad report` calls",
            )
        else:
            identities[name] = (run, identity)
            groups[name] = ProtocolGroup(name, run.document["protocol"])
        groups[name].entries.setdefault(run_label(run, by), []).append(run)
    for group in groups.values():
        for label, members in group.entries.items():
            members.sort(key=lambda run: (run.seed is None, run.seed or 0))
            check_replicates(label, members)
    return list(groups.values())


def protocol_identity(run: Run) -> dict[str, Any]:
    """What makes two runs comparable: protocol name, auxiliary and target data (without roots), resolution.

    Data roots are left out: the same dataset lives in different folders on different machines.

    Raises:
        DataError: The results file records no protocol.
    """
    protocol = run.document.get("protocol")
    if not isinstance(protocol, dict) or not protocol.get("name"):
        raise DataError(
            f"{run.results_path} records no protocol, so it cannot be compared with other runs; re-run `zsad test` "
            f"with a datamodule or protocol config (they record it)."
        )

    def without_roots(key: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in spec.items() if k != "root"} for spec in protocol.get(key) or []]

    return {
        "name": protocol["name"],
        "aux": without_roots("aux"),
        "targets": without_roots("targets"),
        "allow_overlap": protocol.get("allow_overlap"),
        "resolution": run.document["model"].get("metric_resolution", DEFAULT_RESOLUTION),
    }


def run_label(run: Run, by: list[str]) -> str:
    """The entry name of a run: the ``by`` values, ``key=value`` for keys other than ``method``."""
    parts = []
    for key in by:
        value = _display(lookup(run, key))
        parts.append(value if key == "method" else f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)


def lookup(run: Run, key: str) -> Any:
    """A run's value for a dotted key: ``method``, a grid override, or a path into its ``results.json``.

    Raises:
        ConfigError: The key is in neither place.
    """
    if key == "method":
        return run.method
    if key in run.overrides:
        return run.overrides[key]
    node: Any = run.document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(run.overrides) or ["(none: not a grid run)"]
            raise ConfigError(
                f"--by {key}: run {run.run_id} has no such override (its overrides: {', '.join(known)}) and its "
                f"{run.results_path.name} has no such entry; use 'method', an override key, or a path such as "
                f"model.head.class_path."
            )
        node = node[part]
    return node


def _display(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    return value if isinstance(value, str) else json.dumps(value)


def check_replicates(label: str, runs: list[Run]) -> None:
    """Refuse an entry whose runs differ in anything but their seed.

    Raises:
        DataError: Two runs have the same seed, or differ in a grid override or a model setting.
    """
    for earlier, run in itertools.pairwise(runs):
        if earlier.seed == run.seed:
            raise DataError(
                f"Runs {earlier.run_id} and {run.run_id} are both '{label}' with seed {run.seed}: they are not "
                f"replicates. Tell them apart with --by (e.g. --by method <override key>) or report them separately."
            )
    first = runs[0]
    for run in runs[1:]:
        pairs = [(first, _settings(first)), (run, _settings(run))]
        _refuse_difference(pairs[0], pairs[1], f"are both '{label}'", "tell them apart with --by method {key}")


def _settings(run: Run) -> dict[str, Any]:
    overrides = {k: v for k, v in run.overrides.items() if k not in SEED_OVERRIDES}
    model = {k: v for k, v in run.document["model"].items() if k not in IGNORED_MODEL_KEYS}
    return {"overrides": overrides, "model": model}


def _refuse_difference(a: tuple[Run, dict[str, Any]], b: tuple[Run, dict[str, Any]], what: str, fix: str) -> None:
    difference = first_difference(a[1], b[1])
    if difference is None:
        return
    key, value_a, value_b = difference
    key = key.removeprefix("overrides.")
    raise DataError(
        f"Runs {a[0].run_id} and {b[0].run_id} {what} but differ in {key} ({value_a!r} vs {value_b!r}); a report "
        f"never mixes them: {fix.format(key=key)}."
    )


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two nested dicts differ, with both values (``None`` where they are equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key not in a or key not in b:
                return f"{prefix}{key}", a.get(key), b.get(key)
            found = first_difference(a[key], b[key], f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)
