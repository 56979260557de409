"""Test helpers shared by test_training_with_cache.py and its DDP worker script: the model and data both train.

The worker runs as a script (sys.path[0] is this folder), so the helpers live beside it rather than in a conftest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.data import SyntheticDataModule
from zsad.features.cache import CacheCounts
from zsad.heads import DualBranchHead
from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.prompts import StaticPrompt


def static_model(**module_options: Any) -> ZSADModule:
    """Static prompts and the dual-branch head on the tiny random CLIP, with AnomalyCLIP's three losses.

    Args:
        **module_options: Further :class:`~zsad.ZSADModule` options (the feature cache's).
    """
    return ZSADModule(
        TinyRandomBackbone(vv_start_layer=6),
        StaticPrompt(n_ctx=4, deep_depth=3),
        DualBranchHead(),
        losses=[ImageCrossEntropy(), FocalLoss(weight=4.0), DiceLoss(weight=4.0)],
        **module_options,
    )


def training_data(root: str | Path) -> SyntheticDataModule:
    """The 16 images of the synthetic ``stripes`` category train; ``disc`` is the target."""
    return SyntheticDataModule(root=str(root), aux_categories=["stripes"], target_categories=["disc"], n_test_good=6)


def cache_counts(module: ZSADModule) -> CacheCounts | None:
    """The training cache's hits and misses, or ``None`` without a cache.

    Read them before fitting ends: the module releases its cache then.
    """
    return module.training_cache.counts if module.training_cache is not None else None
