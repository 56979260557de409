"""Multi-class focal and Dice losses against literal formulas; defect types mapped to classes."""

from __future__ import annotations

import pytest
import torch

from zsad.errors import ConfigError
from zsad.losses import DiceLoss, FocalLoss
from zsad.losses.multiclass import (
    DEFECT_ALIASES,
    MultiClassFocalLoss,
    match_defect_class,
)
from zsad.losses.pixel import focal_loss_on_probs
from zsad.prompts.dapo import MVTEC_DEFECT_WORDS
from zsad.registry import LOSSES
from zsad.structures import Scores, TextFeatures

NAMES = ("normal", "scratch", "hole", "faulty imprint")


def make_scores(classes=4, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = tuple(torch.randn(2, classes, 8, 8, generator=g).softmax(1) for _ in range(layers))
    return Scores(
        image_logits=torch.zeros(2, 2), image_score=torch.zeros(2), layer_probs=probs, anomaly_map=torch.zeros(2, 8, 8)
    )


def make_batch(defect_types):
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 1:5, 2:6] = 1
    mask[1, :, 4:8, 0:3] = 1
    return {"mask": mask, "label": torch.tensor([1, 1]), "defect_type": defect_types}


def text_of(names):
    return TextFeatures(embeddings=torch.zeros(1, len(names), 4), class_names=names)


def literal_focal(probs, target_vectors):
    """``target_vectors`` ``[B, C, H, W]`` 0/1; clamp, then mean(-(1 - p_t)^2 log p_t)."""
    t = target_vectors.clamp(1e-5 / (probs.shape[1] - 1), 1 - 1e-5)
    p_t = (t * probs).sum(1) + 1e-5
    return (-((1 - p_t) ** 2) * p_t.log()).mean()


def test_registered():
    assert LOSSES.get("multiclass_focal") is MultiClassFocalLoss


@pytest.mark.parametrize(
    ("folder", "word"),
    [
        ("broken_large", "broken"),
        ("metal_contamination", "contamination"),
        ("faulty_imprint", "faulty imprint"),
        ("print", "faulty imprint"),
        ("poke_insulation", "puncture"),
        ("color", "discoloration"),
        ("thread_side", "threading"),
        ("squeezed_teeth", "compressed"),
        ("cut_inner_insulation", "cut"),
        ("cable_swap", None),
        ("good", None),
    ],
)
def test_mvtec_folders_map_to_dapo_words(folder, word):
    names = ("normal", *MVTEC_DEFECT_WORDS)
    index = match_defect_class(folder, names, DEFECT_ALIASES)
    assert (names[index] if index is not None else None) == word


def test_known_defect_types_equal_the_reference_focal_with_class_ids():
    scores, batch = make_scores(), make_batch(["scratch_head", "hole"])
    loss = MultiClassFocalLoss(weight=4.0)(scores, batch, text_of(NAMES))
    ids = batch["mask"][:, 0] * torch.tensor([1.0, 2.0])[:, None, None]
    expected = sum(focal_loss_on_probs(p, ids.long()) for p in scores.layer_probs)
    torch.testing.assert_close(loss, 4.0 * expected)


def test_unknown_defect_type_targets_every_defect_class():
    scores, batch = make_scores(), make_batch(["faulty_imprint", "cable_swap"])
    loss = MultiClassFocalLoss(unknown_defect="any")(scores, batch, text_of(NAMES))
    mask = batch["mask"][:, 0]
    targets = torch.zeros(2, 4, 8, 8)
    targets[:, 0] = 1 - mask
    targets[0, 3] = mask[0]
    targets[1, 1:] = mask[1]
    expected = sum(literal_focal(p, targets) for p in scores.layer_probs)
    torch.testing.assert_close(loss, expected)
    no_types = {k: v for k, v in batch.items() if k != "defect_type"}
    targets[0, 1:] = mask[0]
    torch.testing.assert_close(
        MultiClassFocalLoss()(scores, no_types, text_of(NAMES)),
        sum(literal_focal(p, targets) for p in scores.layer_probs),
    )


def test_with_two_classes_it_is_the_binary_focal_loss():
    scores, batch = make_scores(classes=2), make_batch(["crack", "anomaly"])
    ours = MultiClassFocalLoss()(scores, batch, text_of(("normal", "anomaly")))
    torch.testing.assert_close(ours, FocalLoss()(scores, batch, text_of(("normal", "anomaly"))))


def test_unknown_defect_type_can_be_refused():
    with pytest.raises(ConfigError, match="Defect type 'cable_swap' matches none of the classes"):
        MultiClassFocalLoss(unknown_defect="error")(make_scores(), make_batch(["hole", "cable_swap"]), text_of(NAMES))
    with pytest.raises(ConfigError, match="must be 'any' or 'error'"):
        MultiClassFocalLoss(unknown_defect="ignore")


def test_extra_aliases():
    scores, batch = make_scores(), make_batch(["dent", "hole"])
    loss = MultiClassFocalLoss(aliases={"Dent": "scratch"})(scores, batch, text_of(NAMES))
    ids = batch["mask"][:, 0] * torch.tensor([1.0, 2.0])[:, None, None]
    torch.testing.assert_close(loss, sum(focal_loss_on_probs(p, ids.long()) for p in scores.layer_probs))


def test_binary_dice_is_dapos_dice_on_normal_and_summed_defect_channels():
    """DAPO's two Dice terms use the summed defect channels; under a softmax that is 1 - p_normal: `dice`."""
    scores, batch = make_scores(), make_batch(["hole", "hole"])
    gt = batch["mask"][:, 0]

    def dice(p, g):
        return torch.stack([1 - (2 * (p[b] * g[b]).sum() + 1) / (p[b].sum() + g[b].sum() + 1) for b in range(2)]).mean()

    expected = sum(dice(p[:, 0], 1 - gt) + dice(p[:, 1] + p[:, 2] + p[:, 3], gt) for p in scores.layer_probs)
    torch.testing.assert_close(DiceLoss(weight=4.0)(scores, batch, text_of(NAMES)), 4.0 * expected)
