"""Building blocks shared by scoring heads: patch-text probabilities, upsampling, aggregation, smoothing, scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange, reduce
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from zsad.errors import ConfigError
from zsad.structures import Scores, l2_normalize

Aggregation = Literal["sum", "mean"]
UpsampleMode = Literal["bilinear", "bicubic", "nearest"]


def class_logits(embeddings: Tensor, text: Tensor, temperature: float) -> Tensor:
    """Cosine similarity / temperature between ``[B, ..., D]`` features and ``[B or 1, C, D]`` text: ``[B, ..., C]``.

    Computed in fp32 so that softmaxes over 1/0.07-scaled cosines stay accurate under mixed precision: casting
    the inputs is not enough, since autocast would run the einsum in half precision again.
    """
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        features = l2_normalize(embeddings.float())
        text = l2_normalize(text.float()).expand(features.shape[0], -1, -1)
        pattern = "bd,bcd->bc" if features.dim() == 2 else "bnd,bcd->bnc"
        return torch.einsum(pattern, features, text) / temperature


def patch_probabilities(
    tokens: Tensor, text: Tensor, temperature: float, grid: tuple[int, int], image_size: tuple[int, int], mode: str
) -> Tensor:
    """Per-patch class probabilities, upsampled: ``[B, C, H, W]``."""
    return upsample_patches(class_logits(tokens, text, temperature).softmax(dim=-1), grid, image_size, mode)


def upsample_patches(values: Tensor, grid: tuple[int, int], image_size: tuple[int, int], mode: str) -> Tensor:
    """Per-patch values to maps at image size.

    Args:
        values: ``[B, N, C]`` values of the ``N = rows * cols`` patches, in row-major order.
        grid: ``(rows, cols)`` of the patch grid.
        image_size: ``(H, W)`` of the maps.
        mode: ``torch.nn.functional.interpolate`` mode.

    Returns:
        ``[B, C, H, W]`` maps.
    """
    return resize_maps(rearrange(values, "b (h w) c -> b c h w", h=grid[0], w=grid[1]), image_size, mode)


def resize_maps(maps: Tensor, image_size: tuple[int, int], mode: str) -> Tensor:
    """Resize ``[B, C, h, w]`` maps to ``[B, C, H, W]`` (``align_corners=False`` for the modes that take it).

    Args:
        maps: The maps at patch-grid (or any) resolution.
        image_size: ``(H, W)`` of the result.
        mode: ``torch.nn.functional.interpolate`` mode.
    """
    align = False if mode in ("bilinear", "bicubic") else None  # the other modes refuse align_corners
    return F.interpolate(maps, size=image_size, mode=mode, align_corners=align)


def anomaly_probability(probs: Tensor) -> Tensor:
    """Probability of "not normal" from ``[B, C, ...]`` class probabilities (class 0 is normal)."""
    return 1.0 - probs[:, 0]


def aggregate_layers(maps: list[Tensor], how: Aggregation) -> Tensor:
    """Sum (AnomalyCLIP) or mean (ViP2) of per-layer maps."""
    return reduce(torch.stack(maps), "layers ... -> ...", how)


def anomaly_scores(
    image_logits: Tensor, layer_probs: Sequence[Tensor], aggregation: Aggregation, sigma: float
) -> Scores:
    """Scores of a head whose class 0 is normal: image score and map are probabilities of "not normal".

    Args:
        image_logits: ``[B, C]`` temperature-scaled image logits.
        layer_probs: Per layer, ``[B, C, H, W]`` class probabilities at image size.
        aggregation: How the layers' anomaly maps combine.
        sigma: Gaussian smoothing of the combined map; heads pass 0 while training, when maps stay unsmoothed.

    Returns:
        The :class:`~zsad.structures.Scores`, without a class map.
    """
    anomaly_map = aggregate_layers([anomaly_probability(p) for p in layer_probs], aggregation)
    return Scores(
        image_logits=image_logits,
        image_score=anomaly_probability(image_logits.softmax(dim=-1)),
        layer_probs=tuple(layer_probs),
        anomaly_map=gaussian_smooth(anomaly_map, sigma),
    )


def gaussian_smooth(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Gaussian smoothing of ``[B, H, W]`` maps with scipy's default radius ``int(truncate * sigma + 0.5)``.

    Borders use reflection without repeating the edge pixel (torch's ``reflect``); scipy's default repeats it.
    The difference is confined to a band of about ``sigma`` pixels at the image border.

    Computed in fp32 under mixed precision: the blur is a convolution, which autocast would run in half precision.
    """
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    radius = min(radius, min(maps.shape[-2:]) - 1)
    kernel_size = 2 * radius + 1
    with torch.autocast(device_type=maps.device.type, enabled=False):
        kernel, spread = [kernel_size, kernel_size], [sigma, sigma]
        smoothed = gaussian_blur(maps.unsqueeze(1).float(), kernel_size=kernel, sigma=spread)
    return smoothed.squeeze(1)


def is_finite_positive(value: float) -> bool:
    """Whether ``value`` is a finite positive number."""
    return math.isfinite(value) and value > 0


def check_temperature_and_sigma(temperature: float, sigma: float) -> None:
    """Validate the two options every scoring head shares.

    Raises:
        ConfigError: A non-positive temperature or a negative smoothing sigma.
    """
    if not is_finite_positive(temperature):
        raise ConfigError(f"temperature={temperature} must be a positive number.")
    if sigma < 0:
        raise ConfigError(f"sigma={sigma} must be >= 0 (0 disables smoothing).")
