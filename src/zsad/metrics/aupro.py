"""Area under the per-region-overlap curve (AUPRO) up to an FPR limit, in the two variants papers use.

The two give different numbers and must not be mixed in one table (methods.md §10):

* :func:`aupro_exact`, anomalib>=2.3 style: every distinct score is a threshold, the curve is cut at exactly the FPR
  limit and the area is divided by the limit.
* :func:`aupro_cflow`, the cflow-ad code copied by AnomalyCLIP, APRIL-GAN, ViP2-CLIP and VCP-CLIP: 200 thresholds,
  the FPRs kept below the limit are min-max rescaled to [0, 1].

Both work on all maps of one category at once: a region is a connected component (8-connectivity) of one image's
mask, PRO averages over all regions of all images, and the normal pixels of all images form the FPR denominator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.metrics.curves import threshold_sweep

PIXEL_CHUNK = 1 << 22
"""Pixels binned at a time by :func:`aupro_cflow`: bounds its int64 temporaries (~100 MB)."""


def connected_regions(masks: Tensor) -> Tensor:
    """Label the connected anomalous regions of each mask, as the MVTec AD evaluation script does.

    Args:
        masks: ``[N, H, W]`` (or ``[H, W]``) bool or 0/1 masks.

    Returns:
        int32 ``[N, H, W]`` (or ``[H, W]``): 0 on normal pixels, region ids ``1..R`` unique across the batch.
        Pixels touching by an edge or a corner (8-connectivity) belong to one region; regions never span two images.
    """
    # scipy is not a direct zsad dependency but is always installed with scikit-learn; its C labelling beats any
    # iterative torch flood fill by far on CPU.
    from scipy import ndimage

    array = masks.detach().cpu().numpy().astype(bool, copy=False)
    single = array.ndim == 2
    if single:
        array = array[None]
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # a 3x3 block of ones within an image, no link to the neighbouring images
    regions, _ = ndimage.label(array, structure=structure)
    regions = torch.from_numpy(regions.astype(np.int32, copy=False))
    return regions[0] if single else regions


def aupro_exact(
    scores: Tensor, masks: Tensor | None, fpr_limit: float = 0.3, *, regions: Tensor | None = None
) -> float | None:
    """Exact normalised AUPRO over all thresholds (anomalib>=2.3 style), computed with one sort.

    With regions ``r = 1..R`` (:func:`connected_regions` over all images of the category) and ``N`` normal pixels
    (mask 0, all images), for every threshold ``t``:

    * ``PRO(t) = 1/R · Σ_r |{p in r : score(p) >= t}| / |r|``,
    * ``FPR(t) = |{normal p : score(p) >= t}| / N``.

    The curve runs over every distinct score, starting at (0, 0) above the highest one. The result is the trapezoid
    area under PRO against FPR from 0 to exactly ``fpr_limit`` (linearly interpolated there), divided by
    ``fpr_limit``, so it lies in [0, 1].

    Computed exactly: pixels are sorted once, with weight ``1 / (R · |r|)`` for a pixel of region ``r``, so that the
    weight above ``t`` is ``PRO(t)`` and cumulative sums at the distinct scores give the curve.

    Args:
        scores: ``[N, H, W]`` anomaly maps of one category.
        masks: ``[N, H, W]`` ground-truth masks, nonzero = anomalous.
        fpr_limit: Upper FPR bound of the integration, in (0, 1].
        regions: Precomputed region ids of the same shape as ``scores`` (any shape, e.g. flattened maps of
            images of different sizes; 0 = normal); then ``masks`` is ignored.

    Returns:
        The normalised area, or ``None`` if the category has no anomalous region or no normal pixel.
    """
    _check_limit(fpr_limit)
    regions, sizes = _regions_and_sizes(scores, masks, regions)
    num_regions, num_normal = sizes.numel() - 1, float(sizes[0])
    if num_regions == 0 or num_normal == 0:
        return None
    weights = 1.0 / (num_regions * sizes.double())
    weights[0] = 0.0
    area = 0.0
    for groups in threshold_sweep(scores, regions, weights):
        fpr_above = groups.negative_above / num_normal
        if fpr_above[0] >= fpr_limit:
            break  # thresholds come in descending order: the FPR only grows from here
        fpr_at = (groups.negative_above + groups.negative) / num_normal
        pro_at = groups.positive_above + groups.positive
        area += _clipped_trapezoids(fpr_above, fpr_at, groups.positive_above, pro_at, fpr_limit)
    return min(area / fpr_limit, 1.0)  # float round-off can overshoot by an ulp


def aupro_cflow(
    scores: Tensor,
    masks: Tensor | None,
    fpr_limit: float = 0.3,
    num_thresholds: int = 200,
    *,
    regions: Tensor | None = None,
) -> float | None:
    """AUPRO as the cflow-ad code (``cal_pro_score``) computes it, as copied by AnomalyCLIP, APRIL-GAN and ViP2-CLIP.

    * Thresholds: ``np.arange(lo, hi, (hi - lo) / num_thresholds)`` on the category's global minimum ``lo`` and
      maximum ``hi``, in the maps' dtype, exactly the reference's call: normally ``num_thresholds`` values from
      ``lo`` up to one step below ``hi``, and, as there, one more when float rounding makes ``arange`` overshoot.
    * Binarisation ``score > t`` (strict, as the reference's ``amaps > th``), with exact float64 semantics.
    * ``PRO(t)``: mean over all regions of all images of (region pixels above ``t``) / (region area);
      ``FPR(t)`` = (normal pixels above ``t``) / (all normal pixels).
    * Keep the thresholds with ``FPR < fpr_limit``, min-max rescale their FPRs to [0, 1] (by the observed minimum
      and maximum, not by ``fpr_limit``), and take the trapezoid area of PRO over the rescaled FPR.

    Vectorised: each pixel's number of thresholds below its score is found by binary search, and one histogram over
    (region, that number) gives every region's count at every threshold.

    Args:
        scores: ``[N, H, W]`` anomaly maps of one category.
        masks: ``[N, H, W]`` ground-truth masks, nonzero = anomalous.
        fpr_limit: FPR bound on the kept points.
        num_thresholds: Number of threshold steps between the minimum and the maximum.
        regions: Precomputed region ids (see :func:`aupro_exact`); then ``masks`` is ignored.

    Returns:
        The area, or ``None`` where the reference gives NaN or fails: no anomalous region, no normal pixel, constant
        maps, or fewer than two distinct FPRs below the limit (the rescaling divides by zero).
    """
    _check_limit(fpr_limit)
    if num_thresholds < 1:
        raise ConfigError(f"num_thresholds must be at least 1, got {num_thresholds}")
    regions, sizes = _regions_and_sizes(scores, masks, regions)
    num_regions, num_normal = sizes.numel() - 1, float(sizes[0])
    thresholds = _cflow_thresholds(scores, num_thresholds)
    if num_regions == 0 or num_normal == 0 or thresholds is None:
        return None
    above = _counts_above(scores, regions, thresholds, num_regions).double()
    fpr = above[0] / num_normal
    pro = (above[1:] / sizes[1:, None].double()).mean(dim=0)
    kept = fpr < fpr_limit
    fpr, pro = fpr[kept], pro[kept]
    if fpr.numel() < 2 or fpr.max() == fpr.min():
        return None
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    return float(-torch.trapezoid(pro, fpr))  # the FPR falls as the threshold rises: negate the signed area


def _check_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def _regions_and_sizes(scores: Tensor, masks: Tensor | None, regions: Tensor | None) -> tuple[Tensor, Tensor]:
    """Region ids and pixel counts per id (index 0: normal pixels)."""
    if regions is not None:
        if regions.shape != scores.shape:
            raise ValueError(f"regions {tuple(regions.shape)} must have the shape of scores {tuple(scores.shape)}")
        return regions, torch.bincount(regions.reshape(-1).long(), minlength=1)
    if masks is None or scores.shape != masks.shape or scores.dim() not in (2, 3):
        raise ValueError(
            f"scores and masks must share one [N, H, W] shape, got {tuple(scores.shape)} and "
            f"{None if masks is None else tuple(masks.shape)}"
        )
    regions = connected_regions(masks)
    return regions, torch.bincount(regions.reshape(-1), minlength=1)


def _clipped_trapezoids(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, limit: float) -> float:
    """Total area of the segments (x0, y0)-(x1, y1) left of ``x = limit``, a segment crossing it cut there."""
    x_end = np.minimum(x1, limit)
    width = x_end - x0
    span = np.where(x1 > x0, x1 - x0, 1.0)  # a zero-width segment has no area; avoid 0 / 0
    y_end = y0 + (y1 - y0) * (x_end - x0) / span
    return float(np.sum(np.where(width > 0, width * (y0 + y_end) / 2, 0.0)))


def _cflow_thresholds(scores: Tensor, num_thresholds: int) -> Tensor | None:
    """The reference's thresholds, from numpy scalars of the maps' dtype; ``None`` for constant maps."""
    values = scores.detach().cpu()
    values = (values if values.dtype in (torch.float32, torch.float64) else values.float()).numpy()
    low, high = values.min(), values.max()
    if not high > low:
        return None
    thresholds = torch.from_numpy(np.arange(low, high, (high - low) / num_thresholds).astype(np.float64))
    if scores.dtype != torch.float32:
        return thresholds  # the scores are compared in float64
    # float32 scores: x > t exactly when x > (the largest float32 <= t); comparing in float32 is faster
    rounded = thresholds.float()
    return torch.where(rounded.double() > thresholds, torch.nextafter(rounded, torch.tensor(-torch.inf)), rounded)


def _counts_above(scores: Tensor, regions: Tensor, thresholds: Tensor, num_regions: int) -> Tensor:
    """``[R + 1, T]`` int64: pixels of each region (row 0: normal pixels) scoring strictly above each threshold."""
    bins = thresholds.numel() + 1
    histogram = torch.zeros((num_regions + 1) * bins, dtype=torch.int64)
    flat_scores, flat_regions = scores.detach().cpu().reshape(-1), regions.reshape(-1)
    for start in range(0, flat_scores.numel(), PIXEL_CHUNK):
        chunk = flat_scores[start : start + PIXEL_CHUNK].to(thresholds.dtype)
        # right=False: the index is the number of thresholds strictly below the score, i.e. those with score > t
        cell = torch.bucketize(chunk, thresholds, right=False)
        cell += flat_regions[start : start + PIXEL_CHUNK] * bins
        histogram += torch.bincount(cell, minlength=histogram.numel())
    histogram = histogram.view(num_regions + 1, bins)
    # a pixel is above threshold k when more than k thresholds lie below its score: suffix sums from bin k + 1
    return histogram.flip(1).cumsum(1).flip(1)[:, 1:]
