"""Building blocks shared by scoring heads: patch-text probabilities, upsampling, aggregation, smoothing, scores."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange, reduce
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from zsad.errors import ConfigError
from zsad.structures import Scores, l2_normalize

Aggregation = Literal["sum", "mean"]
UpsampleMode = Literal["bilinear", "bicubic", "nearest"]
SmoothingBorder = Literal["symmetric", "reflect"]
"""Border of the Gaussian smoothing: ``"symmetric"`` repeats the edge pixel (scipy's ``reflect``, the official
code's), ``"reflect"`` does not (torch's ``reflect``, zsad's earlier behaviour)."""
SMOOTHING_BORDERS: tuple[str, ...] = get_args(SmoothingBorder)


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
    tokens: Tensor,
    text: Tensor,
    temperature: float,
    grid: tuple[int, int],
    image_size: tuple[int, int],
    mode: str,
    align_corners: bool = False,
) -> Tensor:
    """Per-patch class probabilities, upsampled: ``[B, C, H, W]`` (``align_corners`` as in :func:`resize_maps`)."""
    probs = class_logits(tokens, text, temperature).softmax(dim=-1)
    return upsample_patches(probs, grid, image_size, mode, align_corners)


def upsample_patches(
    values: Tensor, grid: tuple[int, int], image_size: tuple[int, int], mode: str, align_corners: bool = False
) -> Tensor:
    """Per-patch values to maps at image size.

    Args:
        values: ``[B, N, C]`` values of the ``N = rows * cols`` patches, in row-major order.
        grid: ``(rows, cols)`` of the patch grid.
        image_size: ``(H, W)`` of the maps.
        mode: ``torch.nn.functional.interpolate`` mode.
        align_corners: See :func:`resize_maps`.

    Returns:
        ``[B, C, H, W]`` maps.
    """
    maps = rearrange(values, "b (h w) c -> b c h w", h=grid[0], w=grid[1])
    return resize_maps(maps, image_size, mode, align_corners)


def resize_maps(maps: Tensor, image_size: tuple[int, int], mode: str, align_corners: bool = False) -> Tensor:
    """Resize ``[B, C, h, w]`` maps to ``[B, C, H, W]``.

    Args:
        maps: The maps at patch-grid (or any) resolution.
        image_size: ``(H, W)`` of the result.
        mode: ``torch.nn.functional.interpolate`` mode.
        align_corners: For ``"bilinear"`` and ``"bicubic"``: ``False`` (default; the AnomalyCLIP family) treats
            values as pixel areas, ``True`` (DAPO) puts the corner patches' values exactly on the corner pixels.
            Ignored by the other modes, which refuse the argument.
    """
    align = align_corners if mode in ("bilinear", "bicubic") else None
    return F.interpolate(maps, size=image_size, mode=mode, align_corners=align)


def anomaly_probability(probs: Tensor) -> Tensor:
    """Probability of "not normal" from ``[B, C, ...]`` class probabilities (class 0 is normal)."""
    return 1.0 - probs[:, 0]


def aggregate_layers(maps: list[Tensor], how: Aggregation) -> Tensor:
    """Sum (AnomalyCLIP) or mean (ViP2) of per-layer maps."""
    return reduce(torch.stack(maps), "layers ... -> ...", how)


def anomaly_scores(
    image_logits: Tensor,
    layer_probs: Sequence[Tensor],
    aggregation: Aggregation,
    sigma: float,
    smoothing_border: SmoothingBorder = "symmetric",
) -> Scores:
    """Scores of a head whose class 0 is normal: image score and map are probabilities of "not normal".

    Args:
        image_logits: ``[B, C]`` temperature-scaled image logits.
        layer_probs: Per layer, ``[B, C, H, W]`` class probabilities at image size.
        aggregation: How the layers' anomaly maps combine.
        sigma: Gaussian smoothing of the combined map; heads pass 0 while training, when maps stay unsmoothed.
        smoothing_border: Border handling of the smoothing (see :func:`gaussian_smooth`).

    Returns:
        The :class:`~zsad.structures.Scores`, without a class map.
    """
    anomaly_map = aggregate_layers([anomaly_probability(p) for p in layer_probs], aggregation)
    return Scores(
        image_logits=image_logits,
        image_score=anomaly_probability(image_logits.softmax(dim=-1)),
        layer_probs=tuple(layer_probs),
        anomaly_map=gaussian_smooth(anomaly_map, sigma, smoothing_border),
    )


def gaussian_smooth(maps: Tensor, sigma: float, border: SmoothingBorder = "symmetric", truncate: float = 4.0) -> Tensor:
    """Gaussian smoothing of ``[B, H, W]`` maps with scipy's default radius ``int(truncate * sigma + 0.5)``.

    Args:
        maps: The maps to smooth (any floating dtype; the result is fp32).
        sigma: Standard deviation in pixels; 0 returns ``maps`` unchanged.
        border: ``"symmetric"`` (default, official) equals ``scipy.ndimage.gaussian_filter(map, sigma,
            mode="reflect", truncate=truncate)`` on float32 maps, border included, see :func:`smooth_symmetric`.
            ``"reflect"`` is zsad's earlier behaviour: torchvision's blur with torch's ``reflect`` padding (the edge
            pixel is not repeated; scipy's ``mirror``), its radius cut to fit maps smaller than the kernel.
        truncate: Kernel radius in standard deviations.

    Computed in fp32 under mixed precision: the blur is a linear filter, which autocast would run in half precision.
    """
    if sigma <= 0:
        return maps
    if border not in SMOOTHING_BORDERS:
        raise ConfigError(f"smoothing_border='{border}' is unknown; use one of {list(SMOOTHING_BORDERS)}.")
    with torch.autocast(device_type=maps.device.type, enabled=False):
        if border == "symmetric":
            return smooth_symmetric(maps.float(), sigma, truncate)
        return smooth_reflect(maps.float(), sigma, truncate)


def smooth_symmetric(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Equal to scipy's ``gaussian_filter(mode="reflect")`` on float32 ``[B, H, W]`` maps, to the last bit in practice.

    scipy filters axis 0 (rows) and then axis 1, each pass accumulating in float64 and storing float32. Each pass
    here is one float64 matrix product with :func:`symmetric_gaussian_matrix`, which folds the border extension
    into the matrix, and the result is rounded to float32 between and after the passes, as scipy stores it. A
    matrix product rather than a convolution: it runs batched on any device, in float64 on GPUs, and exports to
    ONNX (whose runtimes have no float64 convolution).
    """
    rows = symmetric_gaussian_matrix(maps.shape[-2], sigma, truncate, maps.device)
    cols = symmetric_gaussian_matrix(maps.shape[-1], sigma, truncate, maps.device)
    along_rows = (rows @ maps.double()).float()
    return (along_rows.double() @ cols.T).float()


def smooth_reflect(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """The torchvision Gaussian blur of fp32 ``[B, H, W]`` maps: torch's ``reflect`` border, scipy's radius, cut to fit.

    The border does not repeat the edge pixel, unlike scipy's (and the official code's) ``reflect``; maps differ
    from those within about ``2 * sigma`` pixels of the border.
    """
    radius = min(int(truncate * sigma + 0.5), min(maps.shape[-2:]) - 1)
    kernel_size = 2 * radius + 1
    kernel, spread = [kernel_size, kernel_size], [sigma, sigma]
    return gaussian_blur(maps.unsqueeze(1), kernel_size=kernel, sigma=spread).squeeze(1)


def symmetric_gaussian_matrix(length: int, sigma: float, truncate: float, device: torch.device) -> Tensor:
    """``[length, length]`` float64 matrix of scipy's 1-D Gaussian along a line, with its ``reflect`` border.

    Row ``i`` holds the kernel weights centred on ``i``; a tap that falls outside the line lands on its mirror
    image, the edge pixel repeated (``... b a | a b c ... x y z | z y x ...``), reflected again as often as needed
    when the line is shorter than the radius.
    """
    return torch.tensor(_symmetric_gaussian_matrix(length, float(sigma), float(truncate)), device=device)


@functools.lru_cache(maxsize=16)
def _symmetric_gaussian_matrix(length: int, sigma: float, truncate: float) -> np.ndarray:
    # numpy, not torch: the cached array stays a plain constant even when a graph export traces the first call
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / (sigma * sigma) * offsets.astype(np.float64) ** 2)  # scipy's kernel, float64
    weights = weights / weights.sum()
    rows = np.arange(length)[:, None]
    wrapped = np.remainder(rows + offsets[None, :], 2 * length)  # the extended line repeats every 2 * length
    sources = np.where(wrapped < length, wrapped, 2 * length - 1 - wrapped)
    matrix = np.zeros((length, length))
    np.add.at(matrix, (np.broadcast_to(rows, sources.shape), sources), np.broadcast_to(weights, sources.shape))
    return matrix


def is_finite_positive(value: float) -> bool:
    """Whether ``value`` is a finite positive number."""
    return math.isfinite(value) and value > 0


def check_temperature_and_sigma(
    temperature: float, sigma: float, smoothing_border: SmoothingBorder = "symmetric"
) -> None:
    """Validate the options every scoring head shares.

    Raises:
        ConfigError: A non-positive temperature, a negative smoothing sigma or an unknown smoothing border.
    """
    if not is_finite_positive(temperature):
        raise ConfigError(f"temperature={temperature} must be a positive number.")
    if sigma < 0:
        raise ConfigError(f"sigma={sigma} must be >= 0 (0 disables smoothing).")
    if smoothing_border not in SMOOTHING_BORDERS:
        raise ConfigError(f"smoothing_border='{smoothing_border}' is unknown; use one of {list(SMOOTHING_BORDERS)}.")
