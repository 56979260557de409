"""Metrics: scores and masks to numbers, per category and macro-averaged."""

from zsad.metrics.evaluator import Evaluator, Results
from zsad.metrics.functional import auroc, average_precision, f1_max

__all__ = ["Evaluator", "Results", "auroc", "average_precision", "f1_max"]
