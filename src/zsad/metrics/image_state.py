"""Per-sample image scores of several categories, as a torchmetrics state that DDP can gather."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from zsad.metrics.pixel_state import first_occurrences, state_parts


class CategoryScores:
    """The stored samples of one category, in sample-index order, each a ``[N]`` tensor.

    A plain class rather than a named tuple: torchmetrics squeezes every one-element tensor inside the tuples that
    ``compute`` returns to 0-d, which would turn a category of one image into scalars.

    Attributes:
        scores: Image scores in float64 (the dtype the scores came in loses nothing in it).
        labels: int64 labels, 0 normal.
        sample_indices: int64 global sample indices.
    """

    __slots__ = ("labels", "sample_indices", "scores")

    def __init__(self, scores: Tensor, labels: Tensor, sample_indices: Tensor) -> None:
        self.scores, self.labels, self.sample_indices = scores, labels, sample_indices


class ImageScoreStore(Metric):
    """Keeps one anomaly score, label, category id and global sample index per image.

    Scores are stored in float64, which holds float16, bfloat16, float32 and float64 scores exactly: float64 scores
    closer together than float32's resolution stay apart, so ties (and AUROC) are those of the model's own values.
    Samples that the ``DistributedSampler`` repeats to pad the last batches are counted once (by sample index).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    scores: list[Tensor]
    labels: list[Tensor]
    category_ids: list[Tensor]
    sample_indices: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("scores", "labels", "category_ids", "sample_indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, category_ids: Tensor, sample_indices: Tensor) -> None:
        """Add one batch of ``[B]`` tensors."""
        self.scores.append(scores.detach().to(torch.float64).reshape(-1))
        self.labels.append(labels.detach().long().reshape(-1))
        self.category_ids.append(category_ids.detach().long().reshape(-1).to(self.scores[-1].device))
        self.sample_indices.append(sample_indices.detach().long().reshape(-1).to(self.scores[-1].device))

    def compute(self) -> dict[int, CategoryScores]:
        """``{category id: (scores, labels, sample indices)}`` in sample-index order, each sample once."""
        if not state_parts(self.scores):
            return {}
        scores, labels, categories, indices = (
            torch.cat(state_parts(state)).cpu()
            for state in (self.scores, self.labels, self.category_ids, self.sample_indices)
        )
        kept = first_occurrences(indices)
        scores, labels, categories, indices = scores[kept], labels[kept], categories[kept], indices[kept]
        return {
            int(category): CategoryScores(
                scores[categories == category], labels[categories == category], indices[categories == category]
            )
            for category in torch.unique(categories)
        }
