"""Area under the per-region-overlap curve (AUPRO) up to an FPR limit, in the two variants papers use.

The two give different numbers and must not be mixed in one table (methods.md §10):

* :func:`aupro_exact`, anomalib>=2.3 style: every distinct score is a threshold, the curve is cut at exactly the FPR
  limit and the area is divided by the limit.
* :func:`aupro_cflow`, the cflow-ad code copied by AnomalyCLIP, APRIL-GAN, ViP2-CLIP and VCP-CLIP: 200 thresholds,
  the FPRs kept below the limit are min-max rescaled to [0, 1].

Both work on all maps of one category at once: a region is a connected component (8-connectivity) of one image's
mask, PRO averages over all regions of all images, and the normal pixels of all images form the FPR denominator.

Both give the same bits whatever the order of the images, the number of threads or processes. Region ids follow image
order, so the pixels are relabelled by region size (regions of one size weigh the same in PRO) before any sort or
sum; counts are integers and the sums over regions and thresholds are exact (:class:`ExactSum`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.metrics.curves import threshold_sweep
from zsad.metrics.exact_sum import ExactSum, exact_sum

PIXEL_CHUNK = 1 << 22
"""Pixels binned (or relabelled) at a time: bounds the int64 temporaries (~100 MB)."""


class _SizeClasses(NamedTuple):
    """Pixels labelled by the size of their region rather than by region id.

    Regions of equal size weigh the same in PRO, so they can share a label, and a label then no longer depends on
    the order in which images (and their regions) were numbered.

    Attributes:
        labels: int32, flattened like the scores: 0 on normal pixels, ``k >= 1`` on the pixels of every region of
            the ``k``-th smallest distinct size.
        sizes: int64 ``[K + 1]``: entry 0 is the number of normal pixels, entry ``k`` the size of label ``k``'s
            regions.
        num_regions: Number of regions (all labels together).
    """

    labels: Tensor
    sizes: Tensor
    num_regions: int


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
    weight above ``t`` is ``PRO(t)`` and cumulative sums at the distinct scores give the curve; the trapezoids are
    summed exactly.

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
    classes = _size_classes(scores, masks, regions)
    num_normal = float(classes.sizes[0])
    if classes.num_regions == 0 or num_normal == 0:
        return None
    weights = 1.0 / (classes.num_regions * classes.sizes.double())
    weights[0] = 0.0
    area = ExactSum()
    for groups in threshold_sweep(scores, classes.labels, weights):
        fpr_above = groups.negative_above / num_normal
        if fpr_above[0] >= fpr_limit:
            break  # thresholds come in descending order: the FPR only grows from here
        fpr_at = (groups.negative_above + groups.negative) / num_normal
        pro_at = groups.positive_above + groups.positive
        area.add(_clipped_trapezoids(fpr_above, fpr_at, groups.positive_above, pro_at, fpr_limit))
    return min(area.value() / fpr_limit, 1.0)  # float round-off can overshoot by an ulp


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
    (region size, that number) gives the count of every size class at every threshold. The mean over regions and
    the trapezoids are summed exactly, so the result may differ from the reference's float sums in the last bits.

    Args:
        scores: ``[N, H, W]`` anomaly maps of one category.
        masks: ``[N, H, W]`` ground-truth masks, nonzero = anomalous.
        fpr_limit: FPR bound on the kept points.
        num_thresholds: Number of threshold steps between the minimum and the maximum.
        regions: Precomputed region ids (see :func:`aupro_exact`); then ``masks`` is ignored.

    Returns:
        The area, or ``None`` where the reference gives NaN or fails: no anomalous region, no normal pixel, constant
        maps, or fewer than two distinct FPRs below the limit (the rescaling divides by zero).

    Raises:
        ValueError: A score is NaN or infinite (no threshold range exists).
    """
    _check_limit(fpr_limit)
    if num_thresholds < 1:
        raise ConfigError(f"num_thresholds must be at least 1, got {num_thresholds}")
    classes = _size_classes(scores, masks, regions)
    num_normal = float(classes.sizes[0])
    thresholds = _cflow_thresholds(scores, num_thresholds)
    if classes.num_regions == 0 or num_normal == 0 or thresholds is None:
        return None
    above = _counts_above(scores, classes.labels, thresholds, classes.sizes.numel() - 1).numpy()
    fpr = above[0] / num_normal
    # PRO = 1/R · sum over regions of (region pixels above t) / |r|; a size class adds its regions' counts at once
    pro = _exact_column_means(above[1:] / classes.sizes[1:, None].numpy(), classes.num_regions)
    kept = fpr < fpr_limit
    fpr, pro = fpr[kept], pro[kept]
    if fpr.size < 2 or fpr.max() == fpr.min():
        return None
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    # trapezoids as sklearn.metrics.auc; the FPR falls as the threshold rises, hence fpr[:-1] - fpr[1:]
    return exact_sum((fpr[:-1] - fpr[1:]) * (pro[1:] + pro[:-1]) / 2.0)


def _check_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def _size_classes(scores: Tensor, masks: Tensor | None, regions: Tensor | None = None) -> _SizeClasses:
    """Label the pixels by the size of their region (see :class:`_SizeClasses`).

    Args:
        scores: Anomaly maps; only their shape is used.
        masks: Ground-truth masks of the same ``[N, H, W]`` (or ``[H, W]``) shape; regions by :func:`connected_regions`.
        regions: Precomputed non-negative region ids of the shape of ``scores`` (0 = normal); then ``masks`` is
            ignored. An id without pixels is no region.

    Returns:
        The labels, the size of each label's regions and the number of regions.
    """
    if regions is not None:
        if regions.shape != scores.shape:
            raise ValueError(f"regions {tuple(regions.shape)} must have the shape of scores {tuple(scores.shape)}")
        ids = regions.detach().cpu().reshape(-1)
        labels = torch.empty(ids.numel(), dtype=torch.int32)
    else:
        if masks is None or scores.shape != masks.shape or scores.dim() not in (2, 3):
            raise ValueError(
                f"scores and masks must share one [N, H, W] shape, got {tuple(scores.shape)} and "
                f"{None if masks is None else tuple(masks.shape)}"
            )
        ids = labels = connected_regions(masks).reshape(-1)  # ours: relabelled in place
    pixels_per_id = torch.bincount(ids, minlength=1)
    region_sizes = pixels_per_id[1:]
    distinct_sizes = torch.unique(region_sizes[region_sizes > 0])  # ascending
    label_of_id = torch.cat([torch.zeros(1, dtype=torch.int64), torch.searchsorted(distinct_sizes, region_sizes) + 1])
    label_of_id = label_of_id.to(torch.int32).numpy()  # ids without pixels get some label that no pixel uses
    id_values, label_values = ids.numpy(), labels.numpy()
    for start in range(0, id_values.size, PIXEL_CHUNK):  # chunks: an int32 index is widened to intp inside take
        chunk = slice(start, start + PIXEL_CHUNK)
        np.take(label_of_id, id_values[chunk], out=label_values[chunk], mode="clip")  # every id is in range
    sizes = torch.cat([pixels_per_id[:1], distinct_sizes])
    return _SizeClasses(labels, sizes, int((region_sizes > 0).sum()))


def _clipped_trapezoids(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, limit: float) -> np.ndarray:
    """Area of each segment (x0, y0)-(x1, y1) left of ``x = limit``, a segment crossing it cut there."""
    x_end = np.minimum(x1, limit)
    width = x_end - x0
    span = np.where(x1 > x0, x1 - x0, 1.0)  # a zero-width segment has no area; avoid 0 / 0
    y_end = y0 + (y1 - y0) * (x_end - x0) / span
    return np.where(width > 0, width * (y0 + y_end) / 2, 0.0)


def _exact_column_means(values: np.ndarray, count: int) -> np.ndarray:
    """Exact sum of each column divided by ``count``, rounded once: independent of the order of the rows."""
    means = np.empty(values.shape[1])
    for column in range(values.shape[1]):
        total = ExactSum()
        total.add(values[:, column])
        means[column] = total.value(count)
    return means


def _cflow_thresholds(scores: Tensor, num_thresholds: int) -> Tensor | None:
    """The reference's thresholds, from numpy scalars of the maps' dtype; ``None`` for constant maps."""
    values = scores.detach().cpu()
    values = (values if values.dtype in (torch.float32, torch.float64) else values.float()).numpy()
    low, high = values.min(), values.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(
            f"scores range from {low} to {high}: the cflow AUPRO needs finite scores (its thresholds span the range)"
        )
    if not high > low:
        return None
    thresholds = torch.from_numpy(np.arange(low, high, (high - low) / num_thresholds).astype(np.float64))
    if scores.dtype != torch.float32:
        return thresholds  # the scores are compared in float64
    # float32 scores: x > t exactly when x > (the largest float32 <= t); comparing in float32 is faster
    rounded = thresholds.float()
    return torch.where(rounded.double() > thresholds, torch.nextafter(rounded, torch.tensor(-torch.inf)), rounded)


def _counts_above(scores: Tensor, labels: Tensor, thresholds: Tensor, num_labels: int) -> Tensor:
    """``[K + 1, T]`` int64: pixels of each label (row 0: normal pixels) scoring strictly above each threshold."""
    bins = thresholds.numel() + 1
    histogram = torch.zeros((num_labels + 1) * bins, dtype=torch.int64)
    flat_scores, flat_labels = scores.detach().cpu().reshape(-1), labels.reshape(-1)
    for start in range(0, flat_scores.numel(), PIXEL_CHUNK):
        chunk = flat_scores[start : start + PIXEL_CHUNK].to(thresholds.dtype)
        # right=False: the index is the number of thresholds strictly below the score, i.e. those with score > t
        cell = torch.bucketize(chunk, thresholds, right=False)
        cell += flat_labels[start : start + PIXEL_CHUNK].long() * bins
        histogram += torch.bincount(cell, minlength=histogram.numel())
    histogram = histogram.view(num_labels + 1, bins)
    # a pixel is above threshold k when more than k thresholds lie below its score: suffix sums from bin k + 1
    return histogram.flip(1).cumsum(1).flip(1)[:, 1:]
