"""The training-set feature cache: frozen backbone features computed once per image, replayed afterwards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zsad.backbones.base import Backbone
from zsad.errors import ConfigError
from zsad.features.keys import FileHasher, backbone_key, compute_key, digest
from zsad.features.records import split_features, stack_entries
from zsad.features.stores import FeatureStore, MemoryStore
from zsad.structures import Features

logger = logging.getLogger(__name__)

MEMORY_SHARE = 0.5
"""A memory cache may take at most this share of the memory available when it starts filling."""


@dataclass
class CacheCounts:
    """How many images were replayed (hits) and computed (misses)."""

    hits: int = 0
    misses: int = 0


class FeatureCache:
    """Replays stored backbone features of training images and computes (and stores) the missing ones.

    Each call looks every image of the batch up by the sha256 of its file, runs the backbone (without autograd) on
    the images that miss, stores their features, and stacks all of them in batch order. The features returned for
    a miss are the stored ones, so every epoch sees exactly the same values (fp16 storage rounds the first epoch
    too).

    Args:
        fixed_ingredients: Key ingredients fixed for the run (transform, storage, versions); the backbone's spec and
            how it computes are added at every call.
        open_store: Opens the store of a namespace, given its digest and its full ingredients.
        fp16: Store floating tensors as float16 (replayed in their original dtype).
        expected_images: Training images this process may see, for the memory estimate; ``None`` skips it.
        drop_when_too_large: When a memory store would exceed :data:`MEMORY_SHARE` of the available memory, stop
            caching (``True``, the ``auto`` mode) or only warn (``False``).
        hasher: Image file hasher (one is made when not given).
    """

    def __init__(
        self,
        fixed_ingredients: dict[str, Any],
        open_store: Callable[[str, dict[str, Any]], FeatureStore],
        fp16: bool = False,
        expected_images: int | None = None,
        drop_when_too_large: bool = False,
        hasher: FileHasher | None = None,
    ) -> None:
        self.fixed_ingredients = fixed_ingredients
        self.open_store = open_store
        self.storage_dtype = torch.float16 if fp16 else None
        self.expected_images = expected_images
        self.drop_when_too_large = drop_when_too_large
        self.hasher = hasher or FileHasher()
        self.counts = CacheCounts()
        self.active = True
        self._stores: dict[str, FeatureStore] = {}
        self._size_checked = False

    def namespace(self, backbone: Backbone, device: torch.device) -> tuple[str, dict[str, Any]]:
        """Digest and ingredients of the namespace the backbone computes in right now (device, dtype, autocast)."""
        ingredients = {
            **self.fixed_ingredients,
            "backbone": backbone_key(backbone, self.hasher),
            "compute": compute_key(backbone, device),
        }
        return digest(ingredients), ingredients

    def store_for(self, backbone: Backbone, device: torch.device) -> FeatureStore:
        """The store of the current namespace (opened on first use)."""
        name, ingredients = self.namespace(backbone, device)
        if name not in self._stores:
            self._stores[name] = self.open_store(name, ingredients)
        return self._stores[name]

    def features(self, batch: dict[str, Any], backbone: Backbone) -> Features:
        """Backbone features of a training batch, from the cache where possible.

        Raises:
            ConfigError: If the batch does not say which file each image came from (no ``"path"``).
        """
        images = batch["image"]
        if not self.active:
            with torch.no_grad():
                return backbone(images)
        if "path" not in batch:
            raise ConfigError(
                "The feature cache keys images by their files, but the training batches carry no 'path'. Set "
                "model.feature_cache: off for this datamodule."
            )
        store = self.store_for(backbone, images.device)
        keys = [self.hasher(path) for path in batch["path"]]
        # without a recorded layout no entry can be stacked: everything counts as missing
        entries = [store.get(key) if store.layout is not None else None for key in keys]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            with torch.no_grad():
                computed = backbone(images if len(missing) == len(keys) else images[missing])
            layout, fresh = split_features(computed, self.storage_dtype)
            store.set_layout(layout)
            for i, entry in zip(missing, fresh, strict=True):
                store.put(keys[i], entry)
                entries[i] = entry
            self._check_size(store, fresh)
        self.counts.hits += len(keys) - len(missing)
        self.counts.misses += len(missing)
        return stack_entries(store.layout, entries, images.device)  # type: ignore[arg-type]  # layout set, all filled

    def _check_size(self, store: FeatureStore, fresh: list[dict]) -> None:
        """Once, estimate what a memory store will hold at the end of the first epoch and compare with free memory."""
        if self._size_checked or not isinstance(store, MemoryStore) or not self.expected_images:
            return
        self._size_checked = True
        available = available_memory()
        per_image = sum(t.nbytes for t in fresh[0].values())
        needed = per_image * self.expected_images
        if available is None or needed <= MEMORY_SHARE * available:
            return
        advice = "Use model.feature_cache: disk (and feature_cache_fp16: true to halve it)."
        summary = (
            f"The memory feature cache would hold about {needed / 2**30:.1f} GiB ({self.expected_images} images x "
            f"{per_image / 2**20:.1f} MiB), more than {MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available."
        )
        if self.drop_when_too_large:
            logger.warning("%s Caching stays off for this run. %s", summary, advice)
            self.active = False
            self._stores.clear()
        else:
            logger.warning("%s %s", summary, advice)

    def close(self) -> None:
        """Log the counts and release the stores (a memory store frees its tensors)."""
        logger.info("Feature cache: %d images replayed, %d computed.", self.counts.hits, self.counts.misses)
        self._stores.clear()


def available_memory() -> int | None:
    """Bytes of memory available to new allocations, or ``None`` when psutil is not installed."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)
