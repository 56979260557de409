"""Building open_clip models with explicit, well-explained failure modes.

Weights come from a pretrained tag (downloaded by open_clip), a local weight file of any format that
:mod:`zsad.backbones.weight_files` reads, an open_clip ``local-dir:``/``hf-hub:`` source, or nowhere
(``pretrained=None``, random, for smoke runs and tests). A failed download never falls back to random weights.
``model_name: from-weights`` builds the architecture from the weight file itself.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import open_clip
import torch
from torch import nn

from zsad.backbones.tiny import register_tiny_configs
from zsad.backbones.weight_files import (
    FROM_WEIGHTS,
    WeightFile,
    build_from_weights,
    load_weights_into,
    read_weight_file,
)
from zsad.errors import ConfigError, WeightsUnavailableError

logger = logging.getLogger(__name__)

OPENAI_TAG = "openai"
RANDOM_INIT_SEED = 0
"""Random weights are drawn from this seed, so a random backbone is identical in every process and run."""
SCHEMAS = ("hf-hub:", "local-dir:")
"""open_clip model-name prefixes whose weights come with the architecture, not from ``pretrained``."""
WEIGHTS_REMEDY = (
    "Remedies: (1) where you have internet, download the weights (OpenAI's ViT-L-14-336px.pt is what "
    "`clip.load` caches in ~/.cache/clip) and set `pretrained` to that file's local path, e.g. "
    "`--model.backbone.init_args.pretrained=/path/to/ViT-L-14-336px.pt`; or (2) for a smoke run with meaningless "
    "numbers, use the tiny random backbone: add `-c configs/backbone/tiny.yaml` after the other configs."
)
"""What to do when weights cannot be loaded, in the terms of ``zsad fit | test`` (``zsad demo`` words its own)."""
HUB_PROBE_TIMEOUT_S = 3.0
"""How long one connection attempt to the hub may take before zsad treats the machine as offline."""


def check_model_name(model_name: str) -> None:
    """Raise a clear error when ``model_name`` is not an open_clip architecture."""
    register_tiny_configs()
    if model_name.startswith(SCHEMAS) or model_name == FROM_WEIGHTS:
        return
    known = open_clip.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, [*known, FROM_WEIGHTS], n=4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"Unknown open_clip model '{model_name}'.{hint} See `open_clip.list_models()` for all "
            f"{len(known)} names, or `{FROM_WEIGHTS}` to build the architecture from the `pretrained` weight file; "
            f"the zsad test models are 'zsad-tiny' and 'zsad-tiny-gelu'."
        )


def needs_quick_gelu(
    model_name: str, pretrained: str | None, force_quick_gelu: bool, openai_file: bool = False
) -> bool:
    """Whether to force QuickGELU: OpenAI weights were trained with it, but e.g. ``ViT-L-14-336`` defaults to GELU.

    OpenAI weights are recognised by the ``openai`` tag or, for a file, by its OpenAI layout (``openai_file``).
    """
    from_openai = pretrained == OPENAI_TAG or openai_file
    return force_quick_gelu or (from_openai and not model_name.endswith("-quickgelu"))


def check_pretrained(model_name: str, pretrained: str | None) -> None:
    """Raise a clear error for an unknown tag, a missing local file or a folder, before any download is tried."""
    if model_name == FROM_WEIGHTS:
        _check_from_weights_source(pretrained)
        return
    if pretrained is None or model_name.startswith(SCHEMAS):
        return
    if Path(pretrained).expanduser().is_dir():
        raise WeightsUnavailableError(
            f"pretrained='{pretrained}' is a folder; set it to the weight file inside, or use "
            f"`model_name: local-dir:{pretrained}` for an open_clip folder with open_clip_config.json."
        )
    if Path(pretrained).expanduser().exists():
        return
    looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or Path(pretrained).suffix in {
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
    }
    if looks_like_path:
        raise WeightsUnavailableError(f"Checkpoint file '{pretrained}' does not exist. Check the path.")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ConfigError(
            f"'{pretrained}' is not a pretrained tag of '{model_name}' nor an existing file. "
            f"Tags for this model: {', '.join(tags) or '(none)'}."
        )


def _check_from_weights_source(pretrained: str | None) -> None:
    if pretrained is None:
        raise ConfigError(
            f"model_name: {FROM_WEIGHTS} builds the architecture from the weight file in `pretrained`, which is "
            f"null. Set `pretrained` to a weight file, or name an open_clip architecture for random weights."
        )
    path = Path(pretrained).expanduser()
    if path.is_file():
        return
    if path.exists():
        raise WeightsUnavailableError(f"pretrained='{pretrained}' is not a file; set it to a CLIP weight file.")
    if pretrained in {tag for _, tag in open_clip.list_pretrained()}:
        raise ConfigError(
            f"model_name: {FROM_WEIGHTS} needs a weight file, not the tag '{pretrained}'. Name the architecture "
            f"(e.g. `model_name: ViT-L-14-336-quickgelu`) to download tagged weights."
        )
    raise WeightsUnavailableError(f"Checkpoint file '{pretrained}' does not exist. Check the path.")


def create_clip(
    model_name: str,
    pretrained: str | None,
    force_quick_gelu: bool = False,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build a frozen, eval-mode open_clip model.

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-L-14-336-quickgelu"`` or ``"zsad-tiny"``; an open_clip
            ``local-dir:``/``hf-hub:`` source; or ``"from-weights"`` to build the architecture that the
            ``pretrained`` file describes.
        pretrained: A tag (``"openai"``), a local weight file (OpenAI TorchScript archive, OpenAI or open_clip
            state dict, safetensors), or ``None`` for random weights.
        force_quick_gelu: Use QuickGELU whatever the config says (OpenAI-format files and the ``openai`` tag get
            it anyway; set it for OpenAI weights in open_clip's layout).
        cache_dir: Where open_clip caches downloads.

    Returns:
        The model with ``requires_grad`` off everywhere and in eval mode.

    Raises:
        ConfigError: Unknown model name or pretrained tag; a weight file that does not fit ``model_name``.
        WeightsUnavailableError: The weights cannot be loaded (offline, corrupt, missing, unknown format); names
            the remedy.
    """
    check_model_name(model_name)
    check_pretrained(model_name, pretrained)
    weights = _read_local_file(model_name, pretrained)
    quick_gelu = needs_quick_gelu(
        model_name, pretrained, force_quick_gelu, openai_file=weights is not None and weights.is_openai
    )
    if quick_gelu and not force_quick_gelu and model_name != FROM_WEIGHTS:
        logger.info("Forcing QuickGELU for '%s' with OpenAI weights (they were trained with it).", model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        if weights is None:
            model = _create_with_open_clip(model_name, pretrained, quick_gelu, cache_dir)
        elif model_name == FROM_WEIGHTS:
            model = build_from_weights(weights, quick_gelu)
            logger.info("Built %s from %s '%s'.", describe_architecture(model), weights.description, weights.path)
        else:
            with _without_open_clip_random_notice():
                model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
            load_weights_into(model, weights, model_name)
    if pretrained is None and not model_name.startswith(SCHEMAS):
        logger.warning("Backbone '%s' has RANDOM weights: its anomaly scores mean nothing.", model_name)
    model.requires_grad_(False)
    return model.eval()


class _DropOpenClipNotices(logging.Filter):
    """Drops open_clip's log records that zsad says better itself (random weights, a failed download)."""

    PREFIXES = ("No pretrained weights loaded", "Failed to download weights")

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep the record."""
        return not record.getMessage().startswith(self.PREFIXES)


@contextmanager
def _without_open_clip_random_notice() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" and "failed to download" logs: zsad warns or raises once itself.

    The random-weights warning is zsad's (:func:`create_clip`), for random models and for models whose weights zsad
    loads right after; a failed download becomes a :class:`WeightsUnavailableError` that names the remedies.
    """
    notice_filter = _DropOpenClipNotices()
    root = logging.getLogger()  # open_clip logs through the root logger
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)


def hub_host(model_name: str, pretrained: str | None) -> str | None:
    """The Hugging Face hub host that open_clip would download the weights from, or ``None`` (no hub download)."""
    if model_name.startswith("hf-hub:"):
        uses_hub = True
    elif pretrained is None or model_name.startswith(SCHEMAS) or Path(pretrained).expanduser().exists():
        uses_hub = False
    else:
        uses_hub = bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub"))
    if not uses_hub:
        return None
    from huggingface_hub import constants

    return urlsplit(constants.ENDPOINT).hostname


def is_reachable(host: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether one TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:  # no DNS, no route, refused, timed out
        return False


def _offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def _hub_cache_only_when_offline(model_name: str, pretrained: str | None) -> Iterator[str | None]:
    """Yields the hub host when it cannot be reached (or ``HF_HUB_OFFLINE`` is set), else ``None``.

    Offline, huggingface_hub would retry every request five times with back-off (about a minute) before failing;
    instead the hub is switched to its offline mode for this one call, so that cached weights still load and missing
    ones fail at once.
    """
    host = hub_host(model_name, pretrained)
    if host is None or (not _offline_requested() and is_reachable(host)):
        yield None
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield host
    finally:
        constants.HF_HUB_OFFLINE = previous


def _read_local_file(model_name: str, pretrained: str | None) -> WeightFile | None:
    """The weight file named by ``pretrained``, or ``None`` for a tag, a schema source or random weights."""
    if pretrained is None or model_name.startswith(SCHEMAS) or not Path(pretrained).expanduser().is_file():
        return None
    return read_weight_file(pretrained)


def _create_with_open_clip(
    model_name: str, pretrained: str | None, quick_gelu: bool, cache_dir: str | None
) -> nn.Module:
    # a local-dir:/hf-hub: source brings its own weights: a folder without them is an error, not a random model
    require_weights = pretrained is not None or model_name.startswith(SCHEMAS)
    offline_host = None
    try:
        with (
            _without_open_clip_random_notice(),
            _hub_cache_only_when_offline(model_name, pretrained) as offline_host,
        ):
            return open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=quick_gelu,
                cache_dir=cache_dir,
                require_pretrained=require_weights,
            )
    except (RuntimeError, OSError, ValueError) as error:
        source = pretrained if pretrained is not None else model_name
        reason = (
            f"{offline_host} cannot be reached (offline, or HF_HUB_OFFLINE is set) and the weights are not in the "
            "local cache"
            if offline_host is not None
            else str(error)
        )
        raise WeightsUnavailableError(
            f"Could not load weights '{source}' for '{model_name}': {reason}. {WEIGHTS_REMEDY}"
        ) from (error)


def describe_architecture(model: nn.Module) -> str:
    """One line on a ViT CLIP's architecture, e.g. for a log.

    Example: ``"a ViT of width 1024, 24 blocks, 16 heads, patch 14 at 336 px; text width 768, 12 blocks, 12 heads,
    77 tokens; joint dimension 768; QuickGELU"``.
    """
    visual = model.visual
    blocks = visual.transformer.resblocks
    text_blocks = model.transformer.resblocks
    return (
        f"a ViT of width {visual.transformer.width}, {len(blocks)} blocks, {blocks[0].attn.num_heads} heads, "
        f"patch {visual.patch_size[0]} at {visual.image_size[0]} px; text width {model.transformer.width}, "
        f"{len(text_blocks)} blocks, {text_blocks[0].attn.num_heads} heads, {model.context_length} tokens; "
        f"joint dimension {visual.output_dim}; {activation_name(model)}"
    )


def create_tokenizer(model_name: str, model: nn.Module) -> object:
    """The tokenizer of a model built by :func:`create_clip`.

    Named architectures get open_clip's tokenizer for the name; ``from-weights`` models get the CLIP BPE
    tokenizer with the file's context length.

    Raises:
        ConfigError: A ``from-weights`` model whose vocabulary is smaller than the CLIP tokenizer's.
    """
    if model_name != FROM_WEIGHTS:
        return open_clip.get_tokenizer(model_name)
    tokenizer = open_clip.SimpleTokenizer(context_length=int(model.context_length))
    if model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"model_name: {FROM_WEIGHTS} gave a text tower with {model.vocab_size} tokens, fewer than the "
            f"{tokenizer.vocab_size} of the CLIP tokenizer; name the file's open_clip architecture instead."
        )
    return tokenizer


def activation_name(model: nn.Module) -> str:
    """Class name of the MLP activation of the first vision block (``QuickGELU`` or ``GELU``)."""
    block = model.visual.transformer.resblocks[0]
    return type(block.mlp[1]).__name__
