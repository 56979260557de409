"""Reading the CLIP weight files users hold, whatever their format, without unpickling arbitrary objects.

Accepted files, told apart by their content (the suffix is not trusted):

- an OpenAI TorchScript archive, what OpenAI's ``clip.load`` caches (e.g. ``~/.cache/clip/ViT-L-14-336px.pt``).
  It is opened with ``torch.jit.load`` only to read its ``state_dict()``; its code is never run;
- a state dict saved with ``torch.save``, read with ``torch.load(weights_only=True)``: OpenAI's layout (open_clip's
  key names plus the integer entries ``input_resolution``, ``context_length`` and ``vocab_size``) or open_clip's,
  optionally wrapped as ``{"state_dict": ...}`` and with a ``module.`` prefix, as open_clip's training saves it;
- a ``.safetensors`` file.

OpenAI's key names are open_clip's ``CLIP`` key names, so both layouts load into the same model; the three integer
entries mark OpenAI's layout (and QuickGELU, which OpenAI trained with). :func:`build_from_weights` builds the
architecture a file describes (``model_name: from-weights``), so a CLIP of any size needs no registered config.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip.model import CLIP, build_model_from_openai_state_dict, convert_to_custom_text_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from zsad.errors import ConfigError, WeightsUnavailableError, first_line, short_reason

FROM_WEIGHTS = "from-weights"
"""``model_name`` value that builds the architecture from the ``pretrained`` weight file itself."""
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
"""Integer entries of OpenAI's state dicts that are not weights."""
HEAD_WIDTH = 64
"""Attention head width that ``from-weights`` assumes: weights do not record the head count, and every OpenAI
CLIP (and open_clip's own build from OpenAI state dicts) uses 64-wide heads."""
ACCEPTED_FORMATS = (
    "an OpenAI TorchScript archive (what `clip.load` caches), an OpenAI or open_clip state dict saved with "
    "torch.save (optionally under 'state_dict', keys optionally prefixed 'module.'), or a .safetensors file"
)

_TORCHSCRIPT = "TorchScript archive"
_TORCH_SAVE = "torch.save file"
_SAFETENSORS = "safetensors file"
_MAGIC_NUMBERS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\x93NUMPY": "a NumPy .npy array",
    b"\x89HDF": "an HDF5 file",
    b"%PDF": "a PDF document",
}


@dataclass(frozen=True)
class WeightFile:
    """The weights of one file, meta entries removed.

    Attributes:
        path: The file.
        container: ``"TorchScript archive"``, ``"torch.save file"`` or ``"safetensors file"``.
        state_dict: Tensors by open_clip/OpenAI key name, without OpenAI's meta entries.
        openai_meta: OpenAI's integer meta entries (``context_length`` ...); empty for open_clip's layout.
    """

    path: Path
    container: str
    state_dict: dict[str, Tensor]
    openai_meta: dict[str, int]

    @property
    def is_openai(self) -> bool:
        """Whether the file is in OpenAI's layout (it then needs QuickGELU)."""
        return bool(self.openai_meta)

    @property
    def description(self) -> str:
        """E.g. ``"an OpenAI-format TorchScript archive"``."""
        layout = "an OpenAI-format" if self.is_openai else "an open_clip-format"
        return f"{layout} {self.container}"


def unreadable(path: Path, found: str) -> WeightsUnavailableError:
    """The one-line error for a file that is none of the accepted formats."""
    return WeightsUnavailableError(
        f"Cannot load CLIP weights from '{path}': found {found}. Accepted: {ACCEPTED_FORMATS}."
    )


def read_weight_file(path: str | Path) -> WeightFile:
    """Read a CLIP weight file of any accepted format, detected from its content.

    Args:
        path: The file (``~`` is expanded).

    Returns:
        Its weights, with OpenAI's meta entries checked (integers, consistent with the weights) and split off.

    Raises:
        WeightsUnavailableError: The file is none of the accepted formats, or is not a CLIP state dict.
        ConfigError: OpenAI meta entries that are not integers or contradict the weights.
    """
    path = Path(path).expanduser()
    container = _sniff_container(path)
    if container == _TORCHSCRIPT:
        state_dict = _read_torchscript(path)
    elif container == _SAFETENSORS:
        state_dict = _read_safetensors(path)
    else:
        state_dict = _as_state_dict(path, _read_torch_save(path))
    _check_clip_keys(path, state_dict)
    meta = _split_openai_meta(path, state_dict)
    return WeightFile(path=path, container=container, state_dict=state_dict, openai_meta=meta)


def _sniff_container(path: Path) -> str:
    with path.open("rb") as file:
        head = file.read(16)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [name.rsplit("/", 1)[-1] for name in archive.namelist()]
        # both torch.save and TorchScript write zips with a data.pkl; only TorchScript adds constants.pkl and code/
        if "constants.pkl" in names:
            return _TORCHSCRIPT
        if "data.pkl" in names:
            return _TORCH_SAVE
        raise unreadable(path, "a zip archive that is neither a torch.save file nor a TorchScript archive")
    if _looks_like_safetensors(head, path.stat().st_size):
        return _SAFETENSORS
    if head.startswith(b"\x80"):  # a pickle (protocol 2+): torch.save's legacy format, or any pickled object
        return _TORCH_SAVE
    raise unreadable(path, _describe_bytes(head))


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # an 8-byte little-endian header length, then a JSON header
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return 0 < header_length <= size - 8 and head[8:9] == b"{"


def _describe_bytes(head: bytes) -> str:
    if not head:
        return "an empty file"
    for magic, name in _MAGIC_NUMBERS.items():
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(char.isprintable() or char.isspace() for char in text):
        return f"text starting {text.strip()[:12]!r}"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _read_torchscript(path: Path) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise unreadable(
            path, f"a TorchScript archive that torch.jit.load cannot read ({first_line(error)})"
        ) from error
    # only the parameters and buffers are read; the archive's code never runs
    return dict(archive.state_dict())


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_safetensors(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise unreadable(path, f"a damaged safetensors file ({first_line(error)})") from error


def _read_torch_save(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            # a pickle of protocol 3+ makes torch warn before refusing it; the refusal is reported below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f" such as {refused.group(1)}" if refused else ""
        raise unreadable(
            path, f"a pickle of Python objects{what}, which the weights-only loader refuses to unpickle"
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise unreadable(path, f"a torch.save file that cannot be read ({first_line(error)})") from error


def _as_state_dict(path: Path, loaded: object) -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}`` and a ``module.`` prefix, as open_clip's checkpoint loading does."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise unreadable(path, f"a torch.save file holding a {type(loaded).__name__}, not a state dict")
    if not loaded:
        raise unreadable(path, "an empty state dict")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor | int):
            raise unreadable(path, f"a dict whose entry {key!r} is a {type(value).__name__}, not a tensor")
    if all(key.startswith("module.") for key in loaded):
        return {key.removeprefix("module."): value for key, value in loaded.items()}
    return dict(loaded)


def _check_clip_keys(path: Path, state_dict: Mapping[str, object]) -> None:
    if not any(key.startswith("visual.") for key in state_dict):
        first = ", ".join(repr(key) for key in list(state_dict)[:3])
        raise unreadable(
            path, f"a state dict of {len(state_dict)} entries without CLIP image-tower keys (first: {first})"
        )


def _split_openai_meta(path: Path, state_dict: dict[str, Tensor]) -> dict[str, int]:
    meta = {}
    for key in OPENAI_META_KEYS:
        if key not in state_dict:
            continue
        value = state_dict.pop(key)
        number = _as_integer(value)
        if number is None:
            found = f"{value.dtype} tensor of shape {list(value.shape)}" if isinstance(value, Tensor) else repr(value)
            raise ConfigError(f"'{path}': OpenAI meta entry '{key}' is a {found}; it must be one integer.")
        meta[key] = number
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise unreadable(path, f"a state dict whose entry {key!r} is a {type(value).__name__}, not a tensor")
    _check_meta_against_weights(path, meta, state_dict)
    return meta


def _as_integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    integer_dtypes = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype in integer_dtypes:
        return int(value.item())
    return None


def _check_meta_against_weights(path: Path, meta: Mapping[str, int], state_dict: Mapping[str, Tensor]) -> None:
    implied = {}
    if "positional_embedding" in state_dict:
        implied["context_length"] = state_dict["positional_embedding"].shape[0]
    if "token_embedding.weight" in state_dict:
        implied["vocab_size"] = state_dict["token_embedding.weight"].shape[0]
    if "visual.conv1.weight" in state_dict and "visual.proj" in state_dict:
        patch = state_dict["visual.conv1.weight"].shape[-1]
        implied["input_resolution"] = patch * round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    for key, value in meta.items():
        if key in implied and implied[key] != value:
            raise ConfigError(
                f"'{path}': OpenAI meta entry {key}={value} contradicts the weights, which imply {implied[key]}. "
                f"The file is inconsistent; re-export it."
            )


def build_from_weights(weights: WeightFile, quick_gelu: bool) -> CLIP:
    """Build the CLIP a weight file describes and load the file into it (``model_name: from-weights``).

    open_clip's ``build_model_from_openai_state_dict`` reads the architecture: vision width, depth, patch size and
    grid (hence image size), text width, depth, context length and vocabulary, joint embedding dimension. Head
    counts are not recorded in weights; it takes 64-wide heads, as every OpenAI CLIP has. The result equals
    building the named architecture in float32 and loading the same file.

    Args:
        weights: A file read by :func:`read_weight_file`.
        quick_gelu: Use QuickGELU (always true for OpenAI-format files).

    Returns:
        The float32 model, in eval mode.

    Raises:
        ConfigError: The layout cannot be built from the weights (custom text tower, widths not multiples of 64).
    """
    _check_head_widths(weights)
    try:
        model = build_model_from_openai_state_dict(dict(weights.state_dict), quick_gelu=quick_gelu, cast_dtype=None)
    except (KeyError, RuntimeError, AssertionError) as error:
        raise ConfigError(
            f"model_name: {FROM_WEIGHTS} cannot build {weights.description} '{weights.path}' "
            f"({short_reason(error)}); it reads CLIPs with OpenAI's/open_clip's CLIP key "
            f"layout. Set model_name to the file's open_clip architecture instead."
        ) from error
    # open_clip builds OpenAI models in float16, their files' precision; reloading in float32 keeps every bit
    # of a float32 file (float16 files are unchanged by the round trip)
    model.float()
    model.load_state_dict(weights.state_dict, strict=True)
    return model.eval()


def _check_head_widths(weights: WeightFile) -> None:
    state_dict = weights.state_dict
    if "visual.proj" not in state_dict or "visual.conv1.weight" not in state_dict:
        raise ConfigError(
            f"'{weights.path}' ({weights.description}) has no ViT image tower ('visual.proj', 'visual.conv1.weight'); "
            f"zsad needs a ViT CLIP."
        )
    widths = {"vision": state_dict["visual.conv1.weight"].shape[0]}
    if "ln_final.weight" in state_dict:
        widths["text"] = state_dict["ln_final.weight"].shape[0]
    for tower, width in widths.items():
        if width % HEAD_WIDTH:
            raise ConfigError(
                f"model_name: {FROM_WEIGHTS} assumes {HEAD_WIDTH}-wide attention heads, but the {tower} width of "
                f"'{weights.path}' is {width}. Set model_name to the file's open_clip architecture instead."
            )


def load_weights_into(model: torch.nn.Module, weights: WeightFile, model_name: str) -> None:
    """Load a weight file into an already built open_clip model of the named architecture.

    Unlike open_clip's own file loading, a file whose position tables have another size is refused rather than
    resized: the backbone resizes the table once, for its ``image_size``, and a second resize would change it.

    Raises:
        ConfigError: The file's keys or shapes do not fit ``model_name``; names the first differences.
    """
    state_dict = dict(weights.state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)  # CustomTextCLIP keeps its tower under text.
    expected = model.state_dict()
    if "logit_scale" in state_dict and "logit_scale" in expected:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(expected["logit_scale"].shape)
    mismatch = describe_mismatch(expected, state_dict)
    if mismatch:
        raise ConfigError(
            f"'{weights.path}' ({weights.description}) does not fit '{model_name}': {mismatch}. Set model_name to "
            f"the file's architecture, or `model_name: {FROM_WEIGHTS}` to build it from the file."
        )
    model.load_state_dict(state_dict, strict=True)


def describe_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> str:
    """One phrase on missing and unexpected keys and shape differences; empty when the weights fit."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [key for key in expected if key in found and tuple(expected[key].shape) != tuple(found[key].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. '{missing[0]}')")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. '{unexpected[0]}')")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} shape differences (e.g. '{key}': file {list(found[key].shape)}, "
            f"model {list(expected[key].shape)})"
        )
    return ", ".join(parts)
