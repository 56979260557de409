"""Per-image scores back from ``scores.csv``, and the ROC and precision-recall curves drawn from them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zsad.errors import DataError
from zsad.metrics.curves import binary_metrics, threshold_sweep
from zsad.workflow.results import SCORE_COLUMNS

CategoryScores = dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
"""``{(dataset, category): (scores, labels)}``."""


def read_scores(path: Path) -> CategoryScores:
    """Read a ``scores.csv`` written by ``zsad test``.

    Raises:
        DataError: The header is not :data:`~zsad.workflow.results.SCORE_COLUMNS` or a row is malformed.
    """
    rows: dict[tuple[str, str], list[tuple[float, int]]] = {}
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != SCORE_COLUMNS:
            raise DataError(
                f"{path} has header {header}, expected {','.join(SCORE_COLUMNS)}; rewrite it with zsad test."
            )
        for number, row in enumerate(reader, start=2):
            try:
                dataset, category, _, label, score = row
                rows.setdefault((dataset, category), []).append((float(score), int(label)))
            except ValueError as error:
                raise DataError(
                    f"{path}:{number}: {row} is not 'dataset,category,path,label,score' ({error})."
                ) from error
    return {key: (np.array([s for s, _ in v]), np.array([lb for _, lb in v])) for key, v in rows.items()}


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall points of one category, thresholds from the highest score down.

    Attributes:
        fpr: False-positive rate, starting at 0.
        tpr: True-positive rate, starting at 0.
        recall: Recall where it rises, starting at 0 (a step function: precision holds up to each recall).
        precision: Precision at those points, starting at 1 (sklearn's convention for the first point).
        auroc: Area under the ROC curve.
        average_precision: Average precision.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auroc: float
    average_precision: float


def curves(scores: np.ndarray, labels: np.ndarray) -> Curves | None:
    """Exact curves over every distinct score (ties grouped, as the metrics are computed); ``None`` for one class."""
    score_tensor, label_tensor = torch.from_numpy(scores.astype(np.float64)), torch.from_numpy(labels > 0)
    summary = binary_metrics(score_tensor, label_tensor)
    if summary["auroc"] is None or summary["average_precision"] is None:
        return None
    true_positive, false_positive = [np.zeros(1)], [np.zeros(1)]
    for groups in threshold_sweep(score_tensor, label_tensor):
        true_positive.append(groups.positive_above + groups.positive)
        false_positive.append(groups.negative_above + groups.negative)
    tp, fp = np.concatenate(true_positive), np.concatenate(false_positive)
    predicted = np.maximum(tp + fp, 1)  # the first point predicts nothing; its precision is set to 1 below
    precision = np.where(tp + fp > 0, tp / predicted, 1.0)
    # thresholds that add only negatives leave recall as it is and add nothing to AP: they are no PR step
    step = np.concatenate(([True], np.diff(tp) > 0))
    return Curves(
        fp / fp[-1], tp / tp[-1], tp[step] / tp[-1], precision[step], summary["auroc"], summary["average_precision"]
    )
