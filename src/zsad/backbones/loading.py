"""Building open_clip models with explicit, well-explained failure modes.

Weights come from a pretrained tag (downloaded by open_clip), a local checkpoint file, or nowhere
(``pretrained=None``, random, for smoke runs and tests). A failed download never falls back to random weights.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import open_clip
import torch
from torch import nn

from zsad.backbones.tiny import register_tiny_configs
from zsad.errors import ConfigError, WeightsUnavailableError

logger = logging.getLogger(__name__)

OPENAI_TAG = "openai"
RANDOM_INIT_SEED = 0
"""Random weights are drawn from this seed, so a random backbone is identical in every process and run."""
_REMEDY = (
    "Remedies: (1) download the checkpoint where you have internet and pass its local path as "
    "`pretrained: /path/to/file` (add `force_quick_gelu: true` for OpenAI weights), or (2) for a smoke run "
    "with meaningless numbers, use the explicit random backbone `tiny-random` (`--backbone tiny-random`)."
)


def check_model_name(model_name: str) -> None:
    """Raise a clear error when ``model_name`` is not an open_clip architecture."""
    register_tiny_configs()
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"Unknown open_clip model '{model_name}'.{hint} See `open_clip.list_models()` for all "
            f"{len(known)} names; the zsad test models are 'zsad-tiny' and 'zsad-tiny-gelu'."
        )


def needs_quick_gelu(model_name: str, pretrained: str | None, force_quick_gelu: bool) -> bool:
    """Whether to force QuickGELU: OpenAI weights were trained with it, but e.g. ``ViT-L-14-336`` defaults to GELU."""
    return force_quick_gelu or (pretrained == OPENAI_TAG and not model_name.endswith("-quickgelu"))


def check_pretrained(model_name: str, pretrained: str | None) -> None:
    """Raise a clear error for an unknown tag or a missing local file, before any download is tried."""
    if pretrained is None or model_name.startswith(("hf-hub:", "local-dir:")):
        return
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


def create_clip(
    model_name: str,
    pretrained: str | None,
    force_quick_gelu: bool = False,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build a frozen, eval-mode open_clip model.

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-L-14-336-quickgelu"`` or ``"zsad-tiny"``.
        pretrained: A tag (``"openai"``), a local checkpoint path, or ``None`` for random weights.
        force_quick_gelu: Use QuickGELU whatever the config says (needed for OpenAI weights from a file).
        cache_dir: Where open_clip caches downloads.

    Returns:
        The model with ``requires_grad`` off everywhere and in eval mode.

    Raises:
        ConfigError: Unknown model name or pretrained tag.
        WeightsUnavailableError: The weights cannot be loaded (offline, corrupt, missing); names the remedy.
    """
    check_model_name(model_name)
    check_pretrained(model_name, pretrained)
    quick_gelu = needs_quick_gelu(model_name, pretrained, force_quick_gelu)
    if quick_gelu and not force_quick_gelu:
        logger.info("Forcing QuickGELU for '%s' with OpenAI weights (they were trained with it).", model_name)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=quick_gelu,
                cache_dir=cache_dir,
                require_pretrained=pretrained is not None,
            )
    except (RuntimeError, OSError, ValueError) as error:
        raise WeightsUnavailableError(
            f"Could not load weights '{pretrained}' for '{model_name}': {error}. {_REMEDY}"
        ) from error
    if pretrained is None:
        logger.warning("Backbone '%s' has RANDOM weights: its anomaly scores mean nothing.", model_name)
    model.requires_grad_(False)
    return model.eval()


def activation_name(model: nn.Module) -> str:
    """Class name of the MLP activation of the first vision block (``QuickGELU`` or ``GELU``)."""
    block = model.visual.transformer.resblocks[0]
    return type(block.mlp[1]).__name__
