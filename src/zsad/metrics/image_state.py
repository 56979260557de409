"""Per-sample image scores of several categories, as a torchmetrics state that DDP can gather."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from zsad.metrics.pixel_state import first_occurrences, state_parts


class CategoryScores(NamedTuple):
    """The stored samples of one category, in sample-index order."""

    scores: Tensor
    labels: Tensor
    sample_indices: Tensor


class ImageScoreStore(Metric):
    """Keeps one anomaly score, label, category id and global sample index per image.

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
        self.scores.append(scores.detach().float().reshape(-1))
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
