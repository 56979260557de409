"""Reading and writing zsad checkpoint files, with one clear error for anything that is not one.

A zsad checkpoint is a Lightning checkpoint written by :class:`~zsad.module.ZSADModule` (or by ``zsad import``):
the trainable parameters (``state_dict``), the component specs (``hyper_parameters``) and
``checkpoint["zsad"] = {"version", "backbone", "provenance"}`` (:mod:`zsad.checkpoints.provenance`).

Reading never unpickles arbitrary objects (``torch.load(weights_only=True)``), so a hostile file cannot run code.

Version compatibility: a checkpoint loads when the zsad that saved it has the same **major.minor** version as the
running one (``0.1.0`` and ``0.1.7`` are compatible, ``0.1.x`` and ``0.2.0`` are not). Patch releases never change
what a component's parameters mean; a minor release may.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zsad import __version__
from zsad.errors import CheckpointError, short_reason
from zsad.workflow.atomic import atomic_write

WEIGHT_SOURCE_KEYS = frozenset({"pretrained", "cache_dir", "force_quick_gelu", "max_windows_per_pass"})
"""Backbone arguments that say where the frozen weights come from or how memory is bounded, not what the model is."""

REQUIRED_ENTRIES = ("zsad", "hyper_parameters", "state_dict")
LATEST_LINK = "last.ckpt"
"""Name of the link in a fit's ``default_root_dir`` that always points at the newest fit's ``last.ckpt``."""
_HASH_BLOCK = 1 << 20


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a zsad checkpoint on the CPU without unsafe pickle, and check that it is one.

    Args:
        path: The ``.ckpt`` file.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: The file is missing, a folder, empty, not a PyTorch checkpoint (truncated, text, image,
            a pickle of arbitrary objects), not written by zsad, or written by an incompatible zsad version.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise CheckpointError(
            f"Checkpoint '{path}' is a link to '{path.readlink()}', which does not exist (yet): the fit it belongs to "
            "has not saved a checkpoint. Wait for that fit's first checkpoint, or give another .ckpt file."
        )
    if path.is_dir():
        raise CheckpointError(f"Checkpoint '{path}' is a folder. Give the path of a .ckpt file written by zsad fit.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Give the path of a .ckpt file written by zsad fit.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes). Give a .ckpt file written by zsad fit.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # garbage makes torch.load raise almost anything (UnpicklingError, KeyError, ...)
        raise CheckpointError(
            f"'{path}' is not a readable zsad checkpoint ({short_reason(error)}). Give a .ckpt file written by "
            "zsad fit or zsad import; a released official checkpoint must first go through `zsad import`."
        ) from error
    missing = [key for key in REQUIRED_ENTRIES if key not in checkpoint] if isinstance(checkpoint, Mapping) else None
    if missing is None or missing or not isinstance(checkpoint["zsad"], Mapping):
        what = ", ".join(repr(k) for k in missing) if missing else "'zsad'"
        raise CheckpointError(
            f"'{path}' is not a zsad checkpoint (it has no {what} entry). zsad checkpoints are written by `zsad fit`, "
            "by a Lightning Trainer fitting a ZSADModule, or by `zsad import` from a released official file."
        )
    check_version(checkpoint["zsad"].get("version"), path)
    return checkpoint


def write_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """Write a checkpoint dictionary atomically (a reader never sees a half-written file)."""
    return atomic_write(path, lambda handle: torch.save(dict(checkpoint), handle))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


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
