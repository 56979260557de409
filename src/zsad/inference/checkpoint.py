"""Reading a zsad checkpoint for inference, and the checks that refuse one that cannot fit.

A zsad checkpoint is a Lightning checkpoint written by :class:`~zsad.module.ZSADModule`: the trainable parameters
(``state_dict``), the component specs (``hyper_parameters``) and ``checkpoint["zsad"] = {"version", "backbone"}``.

Version compatibility: a checkpoint loads when the zsad that saved it has the same **major.minor** version as the
running one (``0.1.0`` and ``0.1.7`` are compatible, ``0.1.x`` and ``0.2.0`` are not). Patch releases never change
what a component's parameters mean; a minor release may.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zsad import __version__
from zsad.components import import_class
from zsad.errors import CheckpointError, ConfigError
from zsad.registry import class_path_of

WEIGHT_SOURCE_KEYS = frozenset({"pretrained", "cache_dir", "force_quick_gelu", "max_windows_per_pass"})
"""Backbone arguments that say where the frozen weights come from or how memory is bounded, not what the model is:
they may differ between the checkpoint and the requested backbone (e.g. a local weights file instead of a
download tag). Every other argument must match."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a zsad checkpoint on the CPU without unsafe pickle, and check that it is one.

    Raises:
        CheckpointError: The file is missing, is not a PyTorch checkpoint, or was not written by zsad.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Give the path of a .ckpt file written by zsad fit.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # garbage makes torch.load raise almost anything (UnpicklingError, KeyError, ...)
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else '-'}"
        raise CheckpointError(
            f"'{path}' is not a readable zsad checkpoint ({reason}). Give a .ckpt file written by zsad fit."
        ) from error
    required = ("zsad", "hyper_parameters", "state_dict")
    missing = [key for key in required if key not in checkpoint] if isinstance(checkpoint, Mapping) else required
    if missing or not isinstance(checkpoint["zsad"], Mapping):
        raise CheckpointError(
            f"'{path}' is not a zsad checkpoint (it has no {', '.join(repr(k) for k in missing or ['zsad'])} entry). "
            "zsad checkpoints are written by `zsad fit` or by a Lightning Trainer fitting a ZSADModule."
        )
    check_version(checkpoint["zsad"].get("version"), path)
    return checkpoint


def major_minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``"0.1.0"`` or ``"1.2.0.dev3"``, or ``None`` if unparsable."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def is_compatible_version(saved: str, running: str = __version__) -> bool:
    """Whether a checkpoint saved by zsad ``saved`` loads in zsad ``running``: the same major.minor version."""
    saved_key, running_key = major_minor(saved), major_minor(running)
    return saved_key is not None and saved_key == running_key


def check_version(saved: Any, path: str | Path) -> None:
    """Refuse a checkpoint written by an incompatible zsad version (see the module docstring).

    Raises:
        CheckpointError: The version is missing, unparsable, or of another major.minor release.
    """
    if not isinstance(saved, str) or not is_compatible_version(saved):
        major, minor = major_minor(__version__) or (0, 0)
        raise CheckpointError(
            f"Checkpoint '{path}' was saved by zsad {saved}, which is incompatible with this zsad {__version__}: "
            f"checkpoints load within the same major.minor release. Install zsad {saved} to use it, or retrain "
            f"with zsad {major}.{minor}."
        )


def canonical_class_path(class_path: str) -> str:
    """The full class path of a registry name or dotted path (so that ``"tiny-random"`` equals its class path)."""
    try:
        return class_path_of(import_class(class_path))
    except ConfigError:
        return class_path


def backbone_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """What differs between two backbone specs, ignoring :data:`WEIGHT_SOURCE_KEYS`: ``"key: saved -> requested"``."""
    differences = []
    saved_class = canonical_class_path(str(saved.get("class_path")))
    requested_class = canonical_class_path(str(requested.get("class_path")))
    if saved_class != requested_class:
        differences.append(f"class_path: {saved_class} -> {requested_class}")
    saved_args, requested_args = saved.get("init_args") or {}, requested.get("init_args") or {}
    for key in sorted((set(saved_args) | set(requested_args)) - WEIGHT_SOURCE_KEYS):
        if key in saved_args and key in requested_args and saved_args[key] != requested_args[key]:
            differences.append(f"{key}: {saved_args[key]!r} -> {requested_args[key]!r}")
    return differences


def check_backbone(saved: Mapping[str, Any], requested: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a requested backbone that is not the one the checkpoint was trained with.

    Only the weight source (:data:`WEIGHT_SOURCE_KEYS`) may differ: the prompts were learned on the features of
    this exact architecture, input size and feature layers.

    Raises:
        CheckpointError: Naming every differing argument.
    """
    differences = backbone_differences(saved, requested)
    if differences:
        raise CheckpointError(
            f"Checkpoint '{path}' was trained with another backbone than the one requested ({'; '.join(differences)}). "
            f"Only {', '.join(sorted(WEIGHT_SOURCE_KEYS))} may differ; load it with its own backbone (no override) "
            "or retrain with the requested one."
        )


def check_parameter_shapes(expected: Mapping[str, Tensor], found: Mapping[str, Tensor], path: str | Path) -> None:
    """Refuse saved trainable parameters whose shapes differ from the model's (keys present in both).

    Raises:
        CheckpointError: Naming up to five parameters with both shapes.
    """
    wrong = [
        f"{key}: checkpoint {tuple(found[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(found))
        if tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"The trainable parameters of checkpoint '{path}' do not fit the model ({'; '.join(wrong[:5])}"
            f"{'; ...' if len(wrong) > 5 else ''}). The checkpoint belongs to a differently sized model: load it with "
            "the backbone and components it was trained with."
        )
