"""Losses against slow, literal formulas."""

from __future__ import annotations

import math

import pytest
import torch

from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.losses.pixel import dice_loss, focal_loss_on_probs
from zsad.structures import Scores, TextFeatures


def slow_focal(probs, target, gamma=2.0, smooth=1e-5):
    total, count = 0.0, 0
    classes = probs.shape[1]
    for b in range(probs.shape[0]):
        for y in range(probs.shape[2]):
            for x in range(probs.shape[3]):
                p_t = 0.0
                for c in range(classes):
                    onehot = 1.0 if c == int(target[b, y, x]) else 0.0
                    onehot = min(max(onehot, smooth / (classes - 1)), 1.0 - smooth)
                    p_t += onehot * float(probs[b, c, y, x])
                p_t += smooth
                total += -((1 - p_t) ** gamma) * math.log(p_t)
                count += 1
    return total / count


def slow_dice(pred, target):
    values = []
    for p, g in zip(pred, target, strict=True):
        overlap = float((p * g).sum())
        values.append(1 - (2 * overlap + 1) / (float(p.sum()) + float(g.sum()) + 1))
    return sum(values) / len(values)


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(2, 2, 5, 6, generator=g).softmax(1)
    target = (torch.rand(2, 5, 6, generator=g) > 0.7).float()
    return probs, target


def test_focal_matches_the_literal_formula(maps):
    probs, target = maps
    assert float(focal_loss_on_probs(probs, target)) == pytest.approx(slow_focal(probs, target), rel=1e-5)


def test_dice_matches_the_literal_formula(maps):
    probs, target = maps
    assert float(dice_loss(probs[:, 1], target)) == pytest.approx(slow_dice(probs[:, 1], target), rel=1e-6)


def test_registered_losses_sum_over_layers_and_apply_weights(maps):
    probs, target = maps
    scores = Scores(
        image_logits=torch.tensor([[2.0, -1.0], [0.5, 0.3]]),
        image_score=torch.zeros(2),
        layer_probs=(probs, probs.flip(1)),
        anomaly_map=torch.zeros(2, 5, 6),
    )
    batch = {"mask": target[:, None], "label": torch.tensor([0, 1])}
    text = TextFeatures(embeddings=torch.zeros(1, 2, 4))
    focal = FocalLoss(weight=4.0)(scores, batch, text)
    expected = 4 * (slow_focal(probs, target) + slow_focal(probs.flip(1), target))
    assert float(focal) == pytest.approx(expected, rel=1e-5)
    dice = DiceLoss()(scores, batch, text)
    expected = sum(slow_dice(p[:, 1], target) + slow_dice(p[:, 0], 1 - target) for p in (probs, probs.flip(1)))
    assert float(dice) == pytest.approx(expected, rel=1e-5)
    ce = ImageCrossEntropy()(scores, batch, text)
    expected = (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(-1)))
        - math.log(math.exp(0.3) / (math.exp(0.5) + math.exp(0.3)))
    ) / 2
    assert float(ce) == pytest.approx(expected, rel=1e-6)
