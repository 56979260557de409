"""The rule for settings given at test time, against the settings a checkpoint was trained with (docs/cli.md).

The checkpoint supplies the trained parameters and, where the user gives no model config, the components. What
the user gives wins for every option that leaves the trained parameters as they are (smoothing, presets, K, R,
aggregation, upsampling, metrics, the image size where the method allows it, the weight file). Two kinds of change
are refused, naming the keys and both values:

- a different component class (``class_path``) or backbone architecture (``model_name``): the trained parameters
  belong to those;
- any change after which the model's trainable parameters no longer have the checkpoint's names and shapes.

Every accepted difference is returned as a :class:`SettingChange`, and ``results.json`` records them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from zsad.components import import_class
from zsad.errors import CheckpointError, ConfigError
from zsad.registry import class_path_of

ARCHITECTURE_KEYS = ("model.backbone.init_args.model_name",)
"""Keys whose change means other frozen weights, which the trained prompts were never fitted to."""


@dataclass(frozen=True)
class SettingChange:
    """One model setting that differs between training and now.

    Attributes:
        key: Dotted config key, e.g. ``"model.head.init_args.sigma"``.
        trained: The value the checkpoint was trained with (``None`` where the key did not exist).
        requested: The value in force now.
    """

    key: str
    trained: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.trained!r} -> {self.requested!r}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results files."""
        return {"key": self.key, "trained": self.trained, "requested": self.requested}

    @property
    def is_structural(self) -> bool:
        """A component class or the backbone architecture: never allowed to differ from the checkpoint."""
        return self.key.endswith(".class_path") or self.key in ARCHITECTURE_KEYS


def canonical_class_path(class_path: Any) -> Any:
    """The full class path of a registry name or dotted path (so that ``"tiny-random"`` equals its class path)."""
    if not isinstance(class_path, str):
        return class_path
    try:
        return class_path_of(import_class(class_path))
    except ConfigError:
        return class_path


def setting_changes(trained: Any, requested: Any, key: str = "model") -> list[SettingChange]:
    """Every leaf where two plain-data configs differ, as dotted keys (class paths compared canonically).

    Args:
        trained: The checkpoint's ``hyper_parameters`` (or a part of them).
        requested: The same structure as configured now.
        key: Dotted key of this level.

    Returns:
        The changes, in key order.
    """
    if isinstance(trained, Mapping) and isinstance(requested, Mapping):
        changes = []
        for name in sorted(set(trained) | set(requested), key=str):
            child = f"{key}.{name}"
            if name == "class_path":
                before, after = canonical_class_path(trained.get(name)), canonical_class_path(requested.get(name))
                if before != after:
                    changes.append(SettingChange(child, trained.get(name), requested.get(name)))
                continue
            changes += setting_changes(trained.get(name), requested.get(name), child)
        return changes
    if _is_sequence(trained) and _is_sequence(requested) and len(trained) == len(requested):
        return [
            c
            for i, (a, b) in enumerate(zip(trained, requested, strict=True))
            for c in setting_changes(a, b, f"{key}.{i}")
        ]
    if _plain(trained) != _plain(requested):
        return [SettingChange(key, trained, requested)]
    return []


def check_test_settings(
    trained_specs: Mapping[str, Any],
    requested_specs: Mapping[str, Any],
    model_state: Mapping[str, Tensor],
    saved_state: Mapping[str, Tensor],
    path: str | Path,
) -> list[SettingChange]:
    """Apply the rule of this module: return the accepted changes, or refuse.

    Args:
        trained_specs: The checkpoint's ``hyper_parameters``.
        requested_specs: :meth:`~zsad.module.ZSADModule.component_specs` of the model built for this run.
        model_state: That model's ``state_dict()`` (trainable parameters and buffers, no backbone).
        saved_state: The checkpoint's ``state_dict``.
        path: The checkpoint, for messages.

    Raises:
        CheckpointError: A component class or the backbone architecture differs, or the trained parameters no
            longer fit (names or shapes); the message names the settings and both values.
    """
    changes = setting_changes(dict(trained_specs), dict(requested_specs))
    structural = [change for change in changes if change.is_structural]
    if structural:
        raise CheckpointError(
            f"Checkpoint '{path}' was trained with other components than the ones configured now "
            f"({'; '.join(map(str, structural))}). The checkpoint fixes the components and the backbone architecture: "
            "drop the model config to use the checkpoint's own, or give the config it was trained with."
        )
    mismatches = parameter_mismatches(model_state, saved_state)
    if mismatches:
        causes = [str(change) for change in changes] or ["(no setting differs: the model code changed)"]
        raise CheckpointError(
            f"The trained parameters of checkpoint '{path}' do not fit the model configured now "
            f"({'; '.join(mismatches[:4])}{'; ...' if len(mismatches) > 4 else ''}). Settings that differ from "
            f"training: {'; '.join(causes)}. A setting that changes a trained parameter cannot be given at test "
            "time; drop it, or retrain with it."
        )
    return changes


def parameter_mismatches(model_state: Mapping[str, Tensor], saved_state: Mapping[str, Tensor]) -> list[str]:
    """Trainable state the checkpoint lacks, has in excess, or holds in another shape: one phrase each."""
    missing = sorted(set(model_state) - set(saved_state))
    unexpected = sorted(set(saved_state) - set(model_state))
    shapes = [
        f"{key}: checkpoint {tuple(saved_state[key].shape)}, model {tuple(model_state[key].shape)}"
        for key in sorted(set(model_state) & set(saved_state))
        if tuple(saved_state[key].shape) != tuple(model_state[key].shape)
    ]
    return (
        [f"missing from the checkpoint: {key}" for key in missing]
        + [f"not in the model: {key}" for key in unexpected]
        + shapes
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _plain(value: Any) -> Any:
    """Lists and tuples compare alike (YAML gives lists, specs may hold tuples)."""
    return [_plain(v) for v in value] if _is_sequence(value) else value
