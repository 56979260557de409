"""Metrics: scores and masks to numbers, per category and macro-averaged, exact and in bounded memory."""

from zsad.metrics.aupro import aupro_cflow, aupro_exact
from zsad.metrics.curves import auroc, average_precision, binary_metrics, f1_max
from zsad.metrics.evaluator import IMAGE_METRIC_NAMES, Evaluator
from zsad.metrics.pixel_state import PIXEL_METRIC_NAMES, PixelScoreStore
from zsad.metrics.results import Results

__all__ = [
    "IMAGE_METRIC_NAMES",
    "PIXEL_METRIC_NAMES",
    "Evaluator",
    "PixelScoreStore",
    "Results",
    "aupro_cflow",
    "aupro_exact",
    "auroc",
    "average_precision",
    "binary_metrics",
    "f1_max",
]
