"""Multi-class focal and Dice losses against literal formulas; defect types mapped to classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from zsad.data.transforms import MaskTransform, load_mask
from zsad.errors import ConfigError
from zsad.losses import DiceLoss, FocalLoss
from zsad.losses.multiclass import (
    DEFECT_ALIASES,
    DEFECT_FOLDER_ALIASES,
    MultiClassFocalLoss,
    match_defect_class,
)
from zsad.losses.pixel import focal_loss_on_probs
from zsad.losses.targets import mask_targets
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
def test_mvtec_folders_map_to_dapo_words_by_their_words(folder, word):
    names = ("normal", *MVTEC_DEFECT_WORDS)
    index = match_defect_class(folder, names, DEFECT_ALIASES)
    assert (names[index] if index is not None else None) == word


# Every MVTec AD defect folder and the training word DAPO's training code gives it (methods.md §9).
DAPO_TRAINING_CLASSES = {
    "bent": ["bent", "bent_lead", "bent_wire", "manipulated_front"],
    "broken": ["broken", "broken_large", "broken_small", "broken_teeth"],
    "discoloration": ["color"],
    "compound": ["combined"],
    "contamination": ["contamination", "metal_contamination"],
    "crack": ["crack"],
    "cut": ["cut", "cut_inner_insulation", "cut_lead", "cut_outer_insulation"],
    "fabric": ["fabric", "fabric_border", "fabric_interior"],
    "faulty imprint": ["faulty_imprint", "print"],
    "gluing": ["glue", "glue_strip"],
    "hole": ["hole"],
    "missing": ["missing", "missing_wire", "missing_cable"],
    "puncture": ["poke", "poke_insulation"],
    "rough": ["rough"],
    "scratch": ["scratch", "scratch_head", "scratch_neck"],
    "compressed": ["squeeze", "squeezed_teeth"],
    "threading": ["thread", "thread_side", "thread_top"],
    "liquid": ["liquid", "oil"],
    "misaligned": ["misplaced", "cable_swap", "flip", "fold", "split_teeth"],
    "wear": ["damaged_case", "defective", "gray_stroke", "pill_type"],
}


@pytest.mark.parametrize("word", list(DAPO_TRAINING_CLASSES))
def test_every_mvtec_folder_gets_the_class_of_dapos_training_code(word):
    names = ("normal", *MVTEC_DEFECT_WORDS)
    assert sum(map(len, DAPO_TRAINING_CLASSES.values())) == 50  # with "good", DAPO's table has 51 entries
    for folder in DAPO_TRAINING_CLASSES[word]:
        index = match_defect_class(folder, names, DEFECT_ALIASES, DEFECT_FOLDER_ALIASES)
        assert index is not None and names[index] == word, folder
    assert match_defect_class("good", names, DEFECT_ALIASES, DEFECT_FOLDER_ALIASES) is None


def test_the_loss_uses_the_folder_aliases_and_takes_extra_ones():
    scores, batch = make_scores(), make_batch(["Cable-Swap", "hole"])
    names = ("normal", "misaligned", "hole")
    text = text_of(names)
    loss = MultiClassFocalLoss(unknown_defect="error")(make_scores(classes=3), batch, text)
    ids = batch["mask"][:, 0] * torch.tensor([1.0, 2.0])[:, None, None]
    torch.testing.assert_close(
        loss, sum(focal_loss_on_probs(p, ids.long()) for p in make_scores(classes=3).layer_probs)
    )
    extra = MultiClassFocalLoss(unknown_defect="error", folder_aliases={"Dent-Mark": "scratch"})
    extra(scores, make_batch(["dent_mark", "hole"]), text_of(NAMES))  # matched through the extra folder alias


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


# ---------------------------------------------------------------- DAPO's training target: resized mask exactly 1
def write_mask(path, size=(30, 22)):
    """A 0/255 PNG mask with a rectangle whose borders fall between target pixels (so resizing leaves soft ones)."""
    values = np.zeros(size[::-1], np.uint8)
    values[5:16, 7:20] = 255
    Image.fromarray(values).save(path)
    return path


def test_exact_one_targets_equal_the_official_long_cast_of_the_resized_mask(tmp_path):
    path = write_mask(tmp_path / "mask.png")
    source = load_mask(path, 0)
    binary = MaskTransform(8)(source)  # what the batch carries: resized, thresholded at 0.5
    levels = MaskTransform(8).levels(source)  # and the resized mask before the threshold
    official = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])(source).long()[0]
    batch = {
        "mask": torch.stack([binary, torch.zeros_like(binary)]),
        "mask_level": torch.stack([levels, torch.zeros_like(levels)]),
    }
    exact = mask_targets(batch, "exact_one")
    assert torch.equal(exact[0], official.float()) and torch.equal(exact[1], torch.zeros(8, 8))
    assert 0 < exact[0].sum() < binary.sum()  # the soft border pixels count as normal
    assert torch.equal(mask_targets(batch, "binary"), batch["mask"][:, 0])
    unresized = {"mask": batch["mask"]}  # a hand-built batch: its 0/1 mask was never resized, so has no soft border
    assert torch.equal(mask_targets(unresized, "exact_one"), batch["mask"][:, 0])


def test_both_dapo_pixel_losses_follow_the_mask_target(tmp_path):
    path = write_mask(tmp_path / "mask.png")
    source = load_mask(path, 0)
    mask = torch.stack([MaskTransform(8)(source)] * 2)
    batch = {
        "mask": mask,
        "mask_level": torch.stack([MaskTransform(8).levels(source)] * 2),
        "label": torch.tensor([1, 1]),
        "defect_type": ["hole", "scratch"],
    }
    exact_batch = {**batch, "mask": mask_targets(batch, "exact_one")[:, None]}
    scores, text = make_scores(), text_of(NAMES)
    for loss_type in (MultiClassFocalLoss, DiceLoss):
        exact = loss_type(mask_target="exact_one")(scores, batch, text)
        torch.testing.assert_close(exact, loss_type(mask_target="binary")(scores, exact_batch, text))
        assert abs(float(exact - loss_type(mask_target="binary")(scores, batch, text))) > 1e-4
    assert MultiClassFocalLoss().mask_target == "exact_one" and DiceLoss().mask_target == "binary"
    with pytest.raises(ConfigError, match="mask_target='soft' is unknown"):
        DiceLoss(mask_target="soft")
