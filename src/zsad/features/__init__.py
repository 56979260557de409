"""Feature caching: frozen backbone features of the training images, computed once and replayed (docs/caching.md).

- :mod:`~zsad.features.keys`: what a cached feature depends on (image bytes, transform, backbone, compute);
- :mod:`~zsad.features.records`: a batch of features as one entry per image, and back;
- :mod:`~zsad.features.stores`: memory and (memory-mapped, atomically written) disk stores;
- :mod:`~zsad.features.cache`: the cache that replays hits and computes misses;
- :mod:`~zsad.features.policy`: ``model.feature_cache``, and when a cache may run at all.
"""

from zsad.features.cache import FeatureCache
from zsad.features.policy import CacheMode, FeatureCacheSettings, open_training_cache

__all__ = ["CacheMode", "FeatureCache", "FeatureCacheSettings", "open_training_cache"]
