"""Image-level classification loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from zsad.losses.base import Loss
from zsad.registry import LOSSES
from zsad.structures import Scores, TextFeatures


def binary_logits(logits: Tensor) -> Tensor:
    """Collapse ``[B, C]`` logits to ``[B, 2]``: normal, and the log-sum-exp of all anomalous classes."""
    if logits.shape[1] == 2:
        return logits
    return torch.stack([logits[:, 0], logits[:, 1:].logsumexp(dim=1)], dim=1)


@LOSSES.register("image_ce")
class ImageCrossEntropy(Loss):
    """Cross-entropy of the head's image logits against the normal (0) / anomalous (1) label."""

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Mean cross-entropy over the batch."""
        return F.cross_entropy(binary_logits(scores.image_logits.float()), batch["label"].long())
