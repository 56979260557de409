"""Tiny open_clip configs that build a random CLIP in well under a second, for tests and offline demos.

They ship as JSON in ``zsad/backbones/model_configs`` and are added to open_clip's config registry on import,
in the same way as open_clip's own test configs:

- ``zsad-tiny``: the layer layout of ViT-L/14 (24 vision blocks, 12 text blocks), so that every method's real
  layer indices (6, 12, 18, 24; V-V from 1 or 6; deep prompts at text layers 2-9) apply unchanged, at width 64
  (2 heads), patch 8 and 64 px (an 8 x 8 grid), QuickGELU, joint dimension 32. About 4.9 M parameters, 3.2 M of
  them the token table (the vocabulary must stay 49,408 for the bundled tokenizer).
- ``zsad-tiny-gelu``: the same with GELU, to test activation handling.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

TINY_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_MODELS = ("zsad-tiny", "zsad-tiny-gelu")
_registered = False


def register_tiny_configs() -> None:
    """Add the tiny configs to open_clip's registry (idempotent)."""
    global _registered
    if not _registered or TINY_MODELS[0] not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG_DIR)
        _registered = True
