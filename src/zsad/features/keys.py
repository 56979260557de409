"""What a cached feature depends on: the image's bytes, the preprocessing, the backbone and how it was run.

A cache entry is found by two digests. The *namespace* digest covers everything shared by a run (backbone spec and
weights, the image transform, storage precision, compute device, dtype and autocast, library versions); the *image*
digest is the sha256 of the image file's bytes. Change any ingredient and the lookup simply misses, so a stale
feature is never replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from zsad import __version__
from zsad.backbones.base import Backbone
from zsad.data.transforms import ImageTransform
from zsad.errors import DataError

CACHE_FORMAT = 1
"""Bump when the entry layout changes: older entries then fall in another namespace and are never read."""


class CacheUnavailable(Exception):  # noqa: N818  (a reason, not a failure: ``auto`` turns the cache off quietly)
    """The features of this run cannot be cached; the message says why."""


class FileHasher:
    """sha256 of file contents, computed once per version of a file and remembered.

    A version is (path, size, modification and change times, inode): rewriting a file in place changes its times,
    and replacing it changes its inode, so the next lookup hashes the new bytes.
    """

    def __init__(self) -> None:
        self._digests: dict[tuple[str, int, int, int, int], str] = {}

    def __call__(self, path: str | Path) -> str:
        """Hex sha256 of the file's bytes.

        Raises:
            DataError: If the file cannot be read.
        """
        try:
            stat = os.stat(path)
            identity = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            digest = self._digests.get(identity)
            if digest is None:
                digest = _sha256_of_file(path)
                self._digests[identity] = digest
        except OSError as error:
            raise DataError(f"Cannot read '{path}' to key the feature cache: {error}. Check the file.") from error
        return digest


def _sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_key(backbone: Backbone, hasher: FileHasher) -> dict[str, Any]:
    """The backbone's spec (model, weights tag or file, size, layers, V-V, ln_post, ...) and its weights file's hash.

    A local weights file is keyed by its contents, not its name: replacing the file invalidates the cache.
    """
    spec = backbone.cache_key()
    key: dict[str, Any] = {"spec": spec}
    weights = spec.get("init_args", {}).get("pretrained")
    if isinstance(weights, str) and Path(weights).expanduser().is_file():
        key["weights_sha256"] = hasher(Path(weights).expanduser())
    return key


def transform_key(dataset: object) -> dict[str, Any]:
    """The training images' preprocessing, for transforms known to be deterministic.

    :class:`~zsad.data.transforms.ImageTransform` (resize, to tensor, normalise) is deterministic. Any other
    transform is cacheable only if it declares itself deterministic with a ``cache_key()`` method returning the plain
    data its output depends on; a random augmentation must not have one.

    Raises:
        CacheUnavailable: If the dataset has no known image transform, or the transform may be random.
    """
    transform = getattr(dataset, "image_transform", None)
    if transform is None:
        raise CacheUnavailable(
            f"the training dataset ({type(dataset).__name__}) has no `image_transform`, so it is unknown whether its "
            "images are preprocessed deterministically"
        )
    if type(transform) is ImageTransform:
        return {
            "type": "ImageTransform",
            "size": transform.size,
            "interpolation": transform.interpolation.value,
            "mean": transform.mean,
            "std": transform.std,
        }
    declared = getattr(transform, "cache_key", None)
    if not callable(declared):
        raise CacheUnavailable(
            f"the training images go through {type(transform).__name__}, which is not known to be deterministic (a "
            "random augmentation gives different pixels every epoch, so replayed features would be wrong); give a "
            "deterministic transform a cache_key() method returning what its output depends on"
        )
    return {"type": f"{type(transform).__module__}.{type(transform).__qualname__}", **declared()}


def compute_key(backbone: nn.Module, device: torch.device) -> dict[str, Any]:
    """How the backbone runs right now: device type, parameter dtype and autocast (mixed precision) state."""
    dtype = next(backbone.parameters()).dtype
    autocast = None
    if torch.is_autocast_enabled(device.type):
        autocast = str(torch.get_autocast_dtype(device.type))
    return {"device": device.type, "dtype": str(dtype), "autocast": autocast}


def versions_key() -> dict[str, str]:
    """Library versions that feature values depend on (a code change may change them without a spec change)."""
    return {
        "format": str(CACHE_FORMAT),
        "zsad": __version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
    }


def digest(ingredients: dict[str, Any]) -> str:
    """Hex sha256 of plain data, independent of dict order."""
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True, default=str).encode()).hexdigest()
