"""Exact threshold-free metrics over flat score/label tensors, on torchmetrics' functional core.

A metric is *undefined* when the labels hold a single class; these functions then return ``None`` instead of a
number, so that callers can leave the value out of averages rather than count it as 0 or -1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
)


def is_defined(target: Tensor) -> bool:
    """Whether both classes occur in ``target``."""
    positives = int(target.sum())
    return 0 < positives < target.numel()


def auroc(preds: Tensor, target: Tensor) -> float | None:
    """Area under the ROC curve (exact, ties handled), or ``None`` if undefined."""
    if not is_defined(target):
        return None
    return float(binary_auroc(preds.float(), target.long(), thresholds=None))


def average_precision(preds: Tensor, target: Tensor) -> float | None:
    """Average precision (step-wise, as sklearn), or ``None`` if undefined."""
    if not is_defined(target):
        return None
    return float(binary_average_precision(preds.float(), target.long(), thresholds=None))


def f1_max(preds: Tensor, target: Tensor) -> float | None:
    """Best F1 over all thresholds, or ``None`` if undefined."""
    if not is_defined(target):
        return None
    precision, recall, _ = binary_precision_recall_curve(preds.float(), target.long(), thresholds=None)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(torch.finfo(precision.dtype).tiny)
    return float(f1.max())


IMAGE_METRICS = {"image_auroc": auroc, "image_ap": average_precision, "image_f1max": f1_max}
PIXEL_METRICS = {"pixel_auroc": auroc, "pixel_ap": average_precision, "pixel_f1max": f1_max}
