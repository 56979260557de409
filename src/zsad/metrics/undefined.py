"""Why a metric has no value for a category: the reason that warnings and ``results.json`` give.

A metric is undefined, never 0 or -1, when the data cannot define it: one class only (all images normal, no
anomalous pixel), or, for the cflow AUPRO, constant maps or too few points below the FPR limit. The reasons are
derived from the same data the metric saw, after it returned ``None``.
"""

from __future__ import annotations

from torch import Tensor


def image_undefined_reason(labels: Tensor) -> str:
    """Why image AUROC, AP and F1-max are undefined for these labels (nonzero = anomalous): one class only."""
    anomalous = int((labels != 0).sum())
    normal = labels.numel() - anomalous
    if anomalous == 0:
        return f"only normal images ({normal}), no anomalous one"
    if normal == 0:
        return f"only anomalous images ({anomalous}), no normal one"
    return "both classes are present; the metric returned no value"


def pixel_undefined_reason(metric: str, scores: Tensor, positive: Tensor, fpr_limit: float) -> str:
    """Why a pixel metric is undefined for these maps and masks.

    Args:
        metric: Pixel metric name (``pixel_aupro_cflow`` has reasons of its own).
        scores: The anomaly scores the metric saw, any shape.
        positive: Same number of elements; true on anomalous pixels.
        fpr_limit: FPR limit of the AUPRO variants.
    """
    anomalous = int(positive.sum())
    if anomalous == 0:
        return "no anomalous pixel in the masks (no mask, or only empty ones)"
    if anomalous == positive.numel():
        return "no normal pixel: every mask pixel is anomalous"
    if metric == "pixel_aupro_cflow":
        low, high = float(scores.min()), float(scores.max())
        if not high > low:
            return f"constant anomaly maps (every pixel scores {low:g}): cflow's thresholds need a range of scores"
        return (
            f"fewer than two distinct FPRs below fpr_limit={fpr_limit:g} at cflow's thresholds, so its min-max "
            f"rescaling of the FPRs divides by zero"
        )
    return "both classes are present; the metric returned no value"
