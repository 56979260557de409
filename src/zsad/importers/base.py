"""Turning a method's released official checkpoint into a zsad checkpoint bound to the method's official preset.

Each released format is one :class:`ReleasedFormat` in :data:`IMPORTERS` (one module per method in this package):
it reads the official file safely, maps every official key onto zsad's trainable parameters, and names the configs
of the official preset per training set. :func:`import_checkpoint` builds the preset's model (its frozen CLIP from
``weights``, so that buffers zsad rebuilds from the token table can be checked against the file), converts, checks
every name and shape, and writes a checkpoint that ``zsad test --ckpt_path`` reads like one written by ``zsad fit``,
with its provenance: the source file's SHA-256, the method, the preset and the data the authors trained it on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from torch import Tensor

from zsad import __version__
from zsad.checkpoints.files import file_sha256, write_checkpoint
from zsad.checkpoints.provenance import PROVENANCE_KEY, import_provenance
from zsad.checkpoints.settings import parameter_mismatches
from zsad.errors import CheckpointError, ConfigError, short_reason
from zsad.module import ZSADModule
from zsad.packaged_configs import PACKAGED_ROOT

CONFIG_ROOT = PACKAGED_ROOT
"""The packaged configs (``configs/`` in a checkout), which hold the official presets."""

TRAINING_SETS: dict[str, dict[str, Any]] = {
    "mvtec": {"dataset": "mvtec", "root": None, "categories": None, "split": "test"},
    "visa": {"dataset": "visa", "root": None, "categories": None, "split": "test"},
}
"""What a released file was trained on, as a provenance record: the whole test split of the benchmark, the
convention of every method here (methods.md §10). ``root`` is unknown: only the benchmark can be matched."""

Reader = Callable[[Path], dict[str, Tensor]]
Converter = Callable[[Mapping[str, Tensor], ZSADModule], dict[str, Tensor]]


@dataclass(frozen=True)
class ReleasedFormat:
    """One method's released checkpoint format.

    Attributes:
        name: The method, as ``zsad import <name>`` takes it.
        description: One line for ``zsad import --help``.
        presets: Per training set (``"mvtec"``, ``"visa"``), the config files of the official preset the released
            file belongs to, relative to ``configs/``, in ``-c`` order.
        read: Loads the official file (``weights_only``) and returns its tensors under the official key names.
        convert: Maps the official tensors onto the model's trainable state (``ZSADModule.state_dict()`` names),
            checks names, shapes and rebuilt buffers, and raises :class:`~zsad.errors.CheckpointError` naming every
            unknown, missing or mis-shaped key.
        overrides: Per training set, extra command-line overrides applied after the configs.
    """

    name: str
    description: str
    presets: Mapping[str, tuple[str, ...]]
    read: Reader
    convert: Converter
    overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


IMPORTERS: dict[str, ReleasedFormat] = {}


def register_format(released: ReleasedFormat) -> ReleasedFormat:
    """Add a released format to :data:`IMPORTERS` (the method modules call this on import)."""
    IMPORTERS[released.name] = released
    return released


def released_format(method: str) -> ReleasedFormat:
    """The registered format of ``method``.

    Raises:
        ConfigError: Unknown method, with the known ones.
    """
    if method not in IMPORTERS:
        raise ConfigError(f"No importer for '{method}'. Known: {', '.join(sorted(IMPORTERS)) or '(none)'}.")
    return IMPORTERS[method]


def load_official_file(path: str | Path, allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load`` of an official file on the CPU without unsafe pickle.

    Args:
        path: The released file.
        allowed_globals: Classes the file may hold besides tensors and containers (``torch.serialization``'s
            ``safe_globals``), e.g. the numpy scalars some training scripts save their losses as.

    Raises:
        CheckpointError: Missing, empty or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Released checkpoint '{path}' does not exist. Give the .pth file the authors released.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Released checkpoint '{path}' is empty (0 bytes).")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load on garbage raises almost anything
        raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint ({short_reason(error)}).") from error


def saved_state_dict(document: Any, path: str | Path, part: str, example: str) -> dict[str, Tensor]:
    """The state dict an official training script saved under ``part``, all tensors.

    Args:
        document: What :func:`load_official_file` read.
        path: The file, for messages.
        part: The key the training script saves the state dict under.
        example: Which file to give instead, for the message (e.g. "AnomalyCLIP's train.py, e.g. ...").

    Raises:
        CheckpointError: No non-empty ``part`` mapping, or entries that are not tensors.
    """
    state = document.get(part) if isinstance(document, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        found = sorted(map(str, document))[:8] if isinstance(document, Mapping) else type(document).__name__
        raise CheckpointError(
            f"'{path}' has no '{part}' state dict (found {found}). Give an epoch_<n>.pth written by {example}."
        )
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, Tensor))
    if not_tensors:
        raise CheckpointError(f"'{path}': {part} entries {not_tensors[:6]} are not tensors.")
    return {str(key): value for key, value in state.items()}


def key_set_problems(
    official: Iterable[str], known: Collection[str], ignore: Callable[[str], bool] | None = None
) -> list[str]:
    """The official keys this format does not know and the known ones the file lacks, one phrase each kind.

    Args:
        official: The keys in the file.
        known: Every key the format holds.
        ignore: Keys of the file that are neither known nor a problem (dropped modules, rebuilt buffers).
    """
    official = list(official)
    unknown = sorted(key for key in official if key not in known and not (ignore is not None and ignore(key)))
    missing = sorted(key for key in known if key not in set(official))
    return [f"{kind} keys {keys[:6]}" for kind, keys in (("unknown", unknown), ("missing", missing)) if keys]


def uncovered_parameters(expected: Mapping[str, Any], converted: Mapping[str, Any], method: str) -> list[str]:
    """A problem line when the model trains parameters that the released file does not hold, else none."""
    uncovered = sorted(set(expected) - set(converted))
    return [f"this model also trains {uncovered[:6]}, which the {method} file does not hold"] if uncovered else []


def preset_paths(released: ReleasedFormat, trained_on: str) -> list[Path]:
    """The config files of the preset a file trained on ``trained_on`` belongs to.

    Raises:
        ConfigError: A training set the method released no checkpoint for.
    """
    if trained_on not in released.presets:
        raise ConfigError(
            f"--trained-on {trained_on}: the {released.name} importer knows checkpoints trained on "
            f"{', '.join(sorted(released.presets))}. Say which data the released file was trained on."
        )
    return [CONFIG_ROOT / name for name in released.presets[trained_on]]


def build_preset_model(configs: Sequence[Path], overrides: Sequence[str], weights: str | None) -> ZSADModule:
    """The preset's model, with its frozen CLIP loaded from ``weights`` when given (else the preset's own)."""
    from zsad.inference.configs import module_from_configs  # the config reader pulls in the CLI parser

    extra = [*overrides, *([f"--model.backbone.init_args.pretrained={weights}"] if weights is not None else [])]
    return module_from_configs(configs, overrides=extra)


def checkpoint_document(
    module: ZSADModule, state: Mapping[str, Tensor], preset_pretrained: Any, provenance: dict[str, Any]
) -> dict[str, Any]:
    """A checkpoint that ``zsad test --ckpt_path`` and ``zsad.load`` read like one written by ``zsad fit``.

    The backbone spec keeps the preset's weight source (e.g. ``openai``), not the local file used while importing.
    """
    specs = module.component_specs()
    backbone = {**specs["backbone"], "init_args": {**specs["backbone"]["init_args"], "pretrained": preset_pretrained}}
    specs["backbone"] = backbone
    return {
        "state_dict": dict(state),
        "hyper_parameters": specs,
        "zsad": {"version": __version__, "backbone": backbone, PROVENANCE_KEY: provenance},
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 0,
    }


def import_checkpoint(
    source: str | Path,
    method: str,
    trained_on: str,
    out: str | Path,
    weights: str | None = None,
    extra_configs: Sequence[str | Path] = (),
) -> Path:
    """Convert a released official checkpoint into a zsad checkpoint bound to the method's official preset.

    Args:
        source: The released file (e.g. AnomalyCLIP's ``checkpoints/9_12_4_multiscale/epoch_15.pth``).
        method: The method that wrote it (``zsad import --help`` lists them).
        trained_on: The data the authors trained it on (``"mvtec"`` or ``"visa"``): recorded for the leakage check.
        out: Where to write the zsad checkpoint.
        weights: The CLIP weights of the preset's backbone, e.g. a local ``ViT-L-14-336px.pt``; ``None`` uses the
            preset's own source (``openai``, downloaded by open_clip).
        extra_configs: Config files applied after the preset's (e.g. another backbone, for a file the official code
            trained on it); the checkpoint then records the changed preset.

    Returns:
        ``out``.

    Raises:
        CheckpointError: Unreadable file, or keys/shapes/buffers that do not match the preset's model.
        ConfigError: Unknown method or training set.
    """
    released = released_format(method)
    configs = [*preset_paths(released, trained_on), *map(Path, extra_configs)]
    official = released.read(Path(source))
    overrides = released.overrides.get(trained_on, ())
    preset_pretrained = preset_weight_source(configs, overrides)
    module = build_preset_model(configs, overrides, weights)
    state = released.convert(official, module)
    mismatches = parameter_mismatches(module.state_dict(), state)
    if mismatches:
        raise CheckpointError(
            f"'{source}' converted by the {method} importer does not fit the {method} preset "
            f"({'; '.join(mismatches[:5])}). Is it a {method} checkpoint?"
        )
    module.load_state_dict(state)
    provenance = import_provenance(
        source=str(source),
        sha256=file_sha256(source),
        method=method,
        preset=[preset_name(path) for path in configs],
        aux=[dict(TRAINING_SETS[trained_on])],
        specs=module.component_specs(),
    )
    return write_checkpoint(out, checkpoint_document(module, state, preset_pretrained, provenance))


def preset_name(path: Path) -> str:
    """A config file as the preset records it: relative to the project for shipped configs, else as given."""
    try:
        return str(path.resolve().relative_to(CONFIG_ROOT.parent))
    except ValueError:
        return str(path)


def preset_weight_source(configs: Sequence[Path], overrides: Sequence[str]) -> Any:
    """The ``pretrained`` value the preset's configs give the backbone (read without building anything)."""
    from zsad.inference.configs import model_config_from_configs

    config = model_config_from_configs(configs, overrides)
    return ((config.get("backbone") or {}).get("init_args") or {}).get("pretrained")
