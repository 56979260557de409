"""When the training feature cache may run, and which store it uses (``model.feature_cache`` and friends).

Caching replays features computed in an earlier epoch, which is only right when they would come out the same:

- the prompt synthesizer feeds no learned tokens into the image tower (DAPO with visual deep tokens does, so its
  image features change at every step);
- the training images are preprocessed deterministically (a random augmentation would change them every epoch).

``auto`` (the default) caches in memory when both hold and otherwise stays off with one info line saying why; an
explicit ``memory`` or ``disk`` that cannot hold is a :class:`~zsad.errors.ConfigError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from zsad.data.synthetic.datamodule import default_cache_dir
from zsad.errors import ConfigError
from zsad.features.cache import FeatureCache
from zsad.features.keys import CacheUnavailable, transform_key, versions_key
from zsad.features.stores import DiskStore, FeatureStore, MemoryStore
from zsad.prompts.base import PromptSynthesizer

logger = logging.getLogger(__name__)

CacheMode = Literal["auto", "memory", "disk", "off"]


@dataclass(frozen=True)
class FeatureCacheSettings:
    """How the training features are cached.

    Attributes:
        mode: ``"auto"`` (memory when valid, else off), ``"memory"``, ``"disk"`` or ``"off"``.
        directory: Root folder of disk caches; ``None`` is ``$ZSAD_CACHE_DIR/features`` (``~/.cache/zsad/features``).
        fp16: Store features as float16 (half the memory or disk; replayed in the backbone's dtype).

    Raises:
        ConfigError: For an unknown mode.
    """

    mode: CacheMode = "auto"
    directory: str | None = None
    fp16: bool = False

    def __post_init__(self) -> None:
        if self.mode not in get_args(CacheMode):
            raise ConfigError(
                f"model.feature_cache={self.mode!r} is not a cache mode; use one of {', '.join(get_args(CacheMode))}."
            )

    @property
    def explicit(self) -> bool:
        """Whether a cache was asked for by name (then a cache that cannot run is an error, not a log line)."""
        return self.mode in ("memory", "disk")

    def root(self) -> Path:
        """Root folder of disk caches."""
        return Path(self.directory).expanduser() if self.directory else default_cache_dir() / "features"

    def check_prompt(self, prompt: PromptSynthesizer) -> None:
        """Refuse an explicit cache for a synthesizer whose learned tokens change the image features.

        Raises:
            ConfigError: Naming the synthesizer and what to set instead.
        """
        reason = vision_prompt_reason(prompt)
        if reason is not None and self.explicit:
            raise _refusal(self.mode, reason)


def vision_prompt_reason(prompt: PromptSynthesizer) -> str | None:
    """Why a synthesizer's image features cannot be cached, or ``None`` when they can."""
    if prompt.vision_prompts() is None:
        return None
    return (
        f"{type(prompt).__name__} feeds learned tokens into the image tower (e.g. DAPO's vision_deep_layers), so the "
        "backbone's features change at every training step"
    )


def _refusal(mode: str, reason: str) -> ConfigError:
    return ConfigError(
        f"model.feature_cache={mode} cannot be used: {reason}. Set model.feature_cache: off (or auto, which turns "
        "the cache off for such runs)."
    )


def open_training_cache(
    settings: FeatureCacheSettings, prompt: PromptSynthesizer, train_loader: Any
) -> FeatureCache | None:
    """The feature cache for this fit's training loader, or ``None`` when caching is off or cannot run.

    Args:
        settings: The configured mode and options.
        prompt: The prompt synthesizer (checked for visual prompt tokens).
        train_loader: ``trainer.train_dataloader``: its dataset's transform is checked and keyed.

    Raises:
        ConfigError: If ``memory`` or ``disk`` was asked for but the features of this run cannot be cached.
    """
    if settings.mode == "off":
        return None
    try:
        reason = vision_prompt_reason(prompt)
        if reason is not None:
            raise CacheUnavailable(reason)
        dataset = _single_dataset(train_loader)
        transform = transform_key(dataset)
    except CacheUnavailable as why:
        if settings.explicit:
            raise _refusal(settings.mode, str(why)) from None
        if rank_zero_only.rank == 0:
            logger.info("Feature cache off: %s.", why)
        return None
    ingredients = {
        "versions": versions_key(),
        "transform": transform,
        "storage": "float16" if settings.fp16 else "as computed",
    }
    return FeatureCache(
        ingredients,
        _store_opener(settings),
        fp16=settings.fp16,
        expected_images=len(dataset) if hasattr(dataset, "__len__") else None,
        drop_when_too_large=settings.mode == "auto",
    )


def _single_dataset(train_loader: Any) -> Any:
    if not isinstance(train_loader, DataLoader):
        raise CacheUnavailable(
            f"the training data comes as {type(train_loader).__name__}, not one DataLoader, so its images cannot be "
            "keyed"
        )
    return train_loader.dataset


def _store_opener(settings: FeatureCacheSettings) -> Callable[[str, dict[str, Any]], FeatureStore]:
    """A function from (namespace digest, ingredients) to the store of that namespace."""
    if settings.mode == "disk":
        root = settings.root()

        def open_disk(name: str, ingredients: dict[str, Any]) -> FeatureStore:
            return DiskStore(root / name[:24], ingredients)

        return open_disk

    def open_memory(name: str, ingredients: dict[str, Any]) -> FeatureStore:
        return MemoryStore()

    return open_memory
