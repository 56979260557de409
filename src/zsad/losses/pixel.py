"""Pixel losses on per-layer class-probability maps, as the reference code defines them (methods.md §1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zsad.losses.base import Loss, pixel_targets
from zsad.losses.targets import MaskTarget, check_mask_target, mask_targets
from zsad.registry import LOSSES
from zsad.structures import Scores, TextFeatures


def focal_loss_on_probs(probs: Tensor, target: Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> Tensor:
    """Focal loss on already-softmaxed maps: ``mean(-(1 - p_t)^gamma * log(p_t))``.

    Args:
        probs: ``[B, C, H, W]`` class probabilities.
        target: ``[B, H, W]`` integer class index per pixel.
        gamma: Focusing parameter (2 in every reference repository).
        smooth: The reference code's label-smoothing clamp and log epsilon.
    """
    one_hot = torch.nn.functional.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    one_hot = one_hot.clamp(smooth / (probs.shape[1] - 1), 1.0 - smooth)
    p_t = (one_hot * probs).sum(dim=1) + smooth
    return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(probs: Tensor, target: Tensor) -> Tensor:
    """``1 - (2 Σ p g + 1) / (Σ p + Σ g + 1)`` per image, averaged over the batch."""
    probs, target = probs.flatten(1), target.flatten(1)
    overlap = (probs * target).sum(dim=1)
    return (1.0 - (2.0 * overlap + 1.0) / (probs.sum(dim=1) + target.sum(dim=1) + 1.0)).mean()


@LOSSES.register("focal")
class FocalLoss(Loss):
    """Focal loss on each layer's probability map, summed over layers (gamma 2, as in the references)."""

    def __init__(self, weight: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__(weight)
        self.gamma = gamma

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Sum over layers of the focal loss against the binary mask."""
        target = pixel_targets(batch).round()
        return sum(focal_loss_on_probs(p.float(), target, self.gamma) for p in scores.layer_probs)


@LOSSES.register("dice")
class DiceLoss(Loss):
    """Dice(p_anomaly, mask) + Dice(p_normal, 1 - mask) on each layer, summed over layers.

    Args:
        weight: Multiplier.
        mask_target: Which pixels are anomalous (:mod:`zsad.losses.targets`): ``"binary"`` (default, the batch's
            mask) or ``"exact_one"`` (DAPO's training code: only pixels whose resized source mask is exactly 1.0).
    """

    def __init__(self, weight: float = 1.0, mask_target: MaskTarget = "binary") -> None:
        super().__init__(weight)
        check_mask_target(mask_target)
        self.mask_target = mask_target

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Sum over layers of both Dice terms."""
        target = pixel_targets(batch) if self.mask_target == "binary" else mask_targets(batch, self.mask_target)
        total = torch.zeros((), device=target.device)
        for probs in scores.layer_probs:
            probs = probs.float()
            total = total + dice_loss(1.0 - probs[:, 0], target) + dice_loss(probs[:, 0], 1.0 - target)
        return total
