"""``zsad.load``: a ready-to-use :class:`~zsad.inference.detector.Detector` from a checkpoint or config files."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from zsad.backbones.base import Backbone
from zsad.checkpoints.files import read_checkpoint
from zsad.checkpoints.provenance import checkpoint_record
from zsad.checkpoints.settings import check_test_settings
from zsad.errors import CheckpointError, ConfigError
from zsad.inference.detector import Detector
from zsad.module import ZSADModule

CONFIG_SUFFIXES = (".yaml", ".yml")

BackboneRequest = Backbone | Mapping[str, Any]
"""A backbone override: a built backbone or its ``{"class_path", "init_args"}`` spec."""


def default_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configs_module() -> ModuleType:
    """:mod:`zsad.inference.configs`, imported on first use: its parser pulls in Lightning's CLI and jsonargparse."""
    return importlib.import_module("zsad.inference.configs")


def is_config_source(source: str | Path | Sequence[str | Path]) -> bool:
    """Whether ``source`` names config files (a ``.yaml`` path or a list of paths) rather than a checkpoint."""
    if isinstance(source, (str, Path)):
        return Path(source).suffix.lower() in CONFIG_SUFFIXES
    return True


def requested_backbone(saved: Mapping[str, Any], backbone: BackboneRequest | None, weights: str | None) -> Any:
    """The backbone to build: the override, or the saved spec, with ``pretrained`` replaced by ``weights`` if given."""
    chosen: Any = backbone if backbone is not None else saved
    if weights is None:
        return chosen
    spec = chosen.spec() if isinstance(chosen, Backbone) else dict(chosen)
    return {**spec, "init_args": {**(spec.get("init_args") or {}), "pretrained": weights}}


def module_from_checkpoint(
    path: str | Path,
    backbone: BackboneRequest | None = None,
    weights: str | None = None,
    configs: Sequence[str | Path] = (),
) -> ZSADModule:
    """Rebuild a trained :class:`~zsad.module.ZSADModule` from a zsad checkpoint, after checking that it fits.

    The rule for settings that differ from the checkpoint's is the one of ``zsad test`` (docs/cli.md): anything
    that leaves the trained parameters as they are may differ; another component class, another backbone
    architecture, or a change of a trained parameter's shape is refused. The model's ``evaluated_checkpoint`` records
    the file, its SHA-256, its provenance and every accepted difference.

    Args:
        path: Checkpoint written by ``zsad fit`` or ``zsad import``.
        backbone: Backbone to use instead of the saved one (a built backbone or a spec).
        weights: Local weights file (or pretrained tag) for the saved backbone, e.g. offline.
        configs: Build the model from these configs instead of the saved specs (as ``zsad test -c ... --ckpt_path``).

    Raises:
        CheckpointError: Not a zsad checkpoint, an incompatible zsad version, another component or backbone
            architecture, or trainable parameters whose names or shapes do not fit.
    """
    if configs and (backbone is not None or weights is not None):
        raise ConfigError("Give either configs or a backbone/weights override, not both: the configs set the backbone.")
    checkpoint = read_checkpoint(path)
    trained = checkpoint["hyper_parameters"]
    if configs:
        module = configs_module().module_from_configs(configs)
    else:
        chosen = requested_backbone(trained["backbone"], backbone, weights)
        try:
            module = ZSADModule(**{**trained, "backbone": chosen})
        except TypeError as error:
            raise CheckpointError(
                f"Checkpoint '{path}' stores model arguments this zsad does not take ({error}). Load it with the "
                "zsad version that wrote it."
            ) from error
    state = checkpoint["state_dict"]
    changes = check_test_settings(trained, module.component_specs(), module.state_dict(), state, path)
    module.load_state_dict(state)
    module.evaluated_checkpoint = checkpoint_record(path, checkpoint, changes)
    return module


def load(
    source: str | Path | Sequence[str | Path],
    device: str | torch.device | None = None,
    *,
    backbone: BackboneRequest | None = None,
    weights: str | None = None,
    configs: Sequence[str | Path] = (),
    batch_size: int = 8,
    interpolation: str = "bicubic",
) -> Detector:
    """Load a detector for inference: ``zsad.load("last.ckpt")(["a.png", "b.png"])``.

    Args:
        source: A checkpoint (``.ckpt``) written by ``zsad fit``, or config file(s) (``.yaml``, in ``-c`` order) for
            training-free methods such as WinCLIP.
        device: Where to run; ``None`` picks the first GPU, else the CPU.
        backbone: Backbone override for a checkpoint (a built backbone or a spec); it must be the trained one up to
            its weight source.
        weights: Local weights file (or pretrained tag) replacing the checkpoint's ``pretrained``.
        configs: With a checkpoint: build the model from these configs and load the checkpoint's weights into it.
        batch_size: Images per forward pass when the detector is given many images.
        interpolation: Resize interpolation of the preprocessing (the datamodules' default is bicubic).

    Returns:
        A :class:`~zsad.inference.detector.Detector` in eval mode on ``device``.

    Raises:
        CheckpointError: See :func:`module_from_checkpoint`.
        ConfigError: Unusable config files.
    """
    if is_config_source(source):
        if backbone is not None or weights is not None or configs:
            raise ConfigError("backbone, weights and configs apply to a checkpoint; with config files, set them there.")
        files = [source] if isinstance(source, (str, Path)) else list(source)
        module = configs_module().module_from_configs(files)
    else:
        module = module_from_checkpoint(source, backbone=backbone, weights=weights, configs=configs)
    return Detector(module, device=device or default_device(), batch_size=batch_size, interpolation=interpolation)
