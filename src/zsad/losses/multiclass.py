"""Multi-class pixel losses over defect types (DAPO, methods.md §9).

The focal target of an anomalous pixel is the class of its image's defect type, found by matching
``batch["defect_type"]`` (a dataset's defect folder name such as ``"metal_contamination"``) against
``text.class_names``. Matching, after lower-casing and splitting on ``_``, ``-`` and spaces:

1. a whole folder name found in :data:`DEFECT_FOLDER_ALIASES` (MVTec folders whose words name no DAPO word, e.g.
   ``cable_swap`` -> ``misaligned``) is replaced by its word;
2. each word is replaced through :data:`DEFECT_ALIASES` (MVTec folder words that are synonyms of a DAPO word,
   e.g. ``poke`` -> ``puncture``);
3. a class matches when its name occurs as whole words in the result (``broken_large`` -> ``broken``); the
   longest matching class name wins.

With the training words, these rules give every one of the 51 MVTec AD folder names the class that DAPO's training
code assigns it (methods.md §9).

A defect type that matches no class follows ``unknown_defect``: ``"any"`` (default) counts every defect class
as correct for that image's anomalous pixels (the focal target is the sum of the defect probabilities, i.e. the
binary normal-vs-anomaly focal loss), ``"error"`` raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.losses.base import Loss
from zsad.losses.targets import MaskTarget, check_mask_target, mask_targets
from zsad.registry import LOSSES
from zsad.structures import Scores, TextFeatures

UnknownDefect = Literal["any", "error"]

DEFECT_ALIASES: dict[str, str] = {
    "color": "discoloration",
    "combined": "compound",
    "glue": "gluing",
    "poke": "puncture",
    "squeeze": "compressed",
    "squeezed": "compressed",
    "thread": "threading",
    "misplaced": "misaligned",
    "print": "faulty imprint",
    "oil": "liquid",
}
"""Word-level synonyms from MVTec AD defect folder names to DAPO's training words (as its training code maps them)."""

DEFECT_FOLDER_ALIASES: dict[str, str] = {
    "manipulated_front": "bent",
    "cable_swap": "misaligned",
    "flip": "misaligned",
    "fold": "misaligned",
    "split_teeth": "misaligned",
    "damaged_case": "wear",
    "defective": "wear",
    "gray_stroke": "wear",
    "pill_type": "wear",
}
"""Whole MVTec AD folder names whose words name no DAPO word, mapped as DAPO's training code maps them."""


def folder_key(defect_type: str) -> str:
    """A defect folder name lower-cased with ``_`` between its words: ``"Cable-Swap"`` -> ``"cable_swap"``."""
    return "_".join(w for w in re.split(r"[\s_\-]+", defect_type.lower()) if w)


def match_defect_class(
    defect_type: str,
    class_names: Sequence[str],
    aliases: Mapping[str, str],
    folder_aliases: Mapping[str, str] | None = None,
) -> int | None:
    """Index of the class (1..C-1) named by ``defect_type``, or ``None`` when no class matches.

    Args:
        defect_type: A defect folder name, e.g. ``"metal_contamination"``.
        class_names: ``("normal", *words)``.
        aliases: Word-level synonyms.
        folder_aliases: Whole folder names (as :func:`folder_key` writes them) replaced by a word first.
    """
    folder = folder_key(defect_type)
    phrase = (folder_aliases or {}).get(folder, folder.replace("_", " "))
    words = [aliases.get(w, w) for w in phrase.split()]
    phrase = f" {' '.join(words)} "
    hits = [i for i, name in enumerate(class_names) if i > 0 and f" {name.lower()} " in phrase]
    return max(hits, key=lambda i: len(class_names[i])) if hits else None


def anomalous_targets(
    defect_types: Sequence[str],
    class_names: Sequence[str],
    aliases: Mapping[str, str],
    unknown: UnknownDefect,
    folder_aliases: Mapping[str, str] | None = None,
) -> Tensor:
    """``[B, C]`` 0/1 target classes of each image's anomalous pixels: one class, or all defect classes.

    Raises:
        ConfigError: If ``unknown="error"`` and a defect type matches no class.
    """
    targets = torch.zeros(len(defect_types), len(class_names))
    for row, defect_type in enumerate(defect_types):
        index = match_defect_class(defect_type, class_names, aliases, folder_aliases)
        if index is None and unknown == "error":
            raise ConfigError(
                f"Defect type '{defect_type}' matches none of the classes {list(class_names[1:])}. Add it to the "
                f"vocabulary or the loss's aliases, or set unknown_defect: any."
            )
        if index is None:
            targets[row, 1:] = 1.0
        else:
            targets[row, index] = 1.0
    return targets


def multiclass_focal_on_probs(
    probs: Tensor, mask: Tensor, targets: Tensor, gamma: float = 2.0, smooth: float = 1e-5
) -> Tensor:
    """Focal loss on softmaxed ``[B, C, H, W]`` maps with per-image anomalous targets.

    Normal pixels (``mask == 0``) target class 0, anomalous ones the 0/1 classes of ``targets`` ``[B, C]``. As in
    the reference focal loss, the 0/1 target vector is clamped to ``[smooth / (C - 1), 1 - smooth]`` and
    ``p_t = Σ_c target_c · p_c + smooth``; the loss is ``mean(-(1 - p_t)^gamma · log p_t)``. A clamped 0/1
    vector is ``low + (high - low) · target``, which avoids building ``[B, C, H, W]`` targets.

    Computed in fp32 under mixed precision (autocast would run the einsum in half precision, then ``log`` of a
    probability rounded to 3 digits).
    """
    low, high = smooth / (probs.shape[1] - 1), 1.0 - smooth
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs, targets, mask = probs.float(), targets.float(), mask.float()
        anomalous = torch.einsum("bchw,bc->bhw", probs, targets)
        chosen = (1.0 - mask) * probs[:, 0] + mask * anomalous
        p_t = low * probs.sum(dim=1) + (high - low) * chosen + smooth
        return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


@LOSSES.register("multiclass_focal")
class MultiClassFocalLoss(Loss):
    """Focal loss whose anomalous pixels target their defect-type class, summed over layers (DAPO).

    Args:
        weight: Multiplier (DAPO: 4).
        gamma: Focusing parameter (2).
        unknown_defect: What a defect type matching no class does: ``"any"`` (every defect class counts) or
            ``"error"``.
        aliases: Extra word-level synonyms, merged over :data:`DEFECT_ALIASES`.
        folder_aliases: Extra whole-folder-name synonyms, merged over :data:`DEFECT_FOLDER_ALIASES`.
        mask_target: Which pixels are anomalous (:mod:`zsad.losses.targets`): ``"exact_one"`` (default, DAPO's
            training code: only pixels whose resized source mask is exactly 1.0) or ``"binary"`` (the batch's
            mask, binarised at 0.5 like the evaluation masks).
    """

    def __init__(
        self,
        weight: float = 1.0,
        gamma: float = 2.0,
        unknown_defect: UnknownDefect = "any",
        aliases: dict[str, str] | None = None,
        folder_aliases: dict[str, str] | None = None,
        mask_target: MaskTarget = "exact_one",
    ) -> None:
        super().__init__(weight)
        if unknown_defect not in ("any", "error"):
            raise ConfigError(f"unknown_defect='{unknown_defect}' must be 'any' or 'error'.")
        check_mask_target(mask_target)
        self.gamma = gamma
        self.unknown_defect = unknown_defect
        self.mask_target = mask_target
        self.aliases = {**DEFECT_ALIASES, **{k.lower(): v.lower() for k, v in (aliases or {}).items()}}
        extra_folders = {folder_key(k): v.lower() for k, v in (folder_aliases or {}).items()}
        self.folder_aliases = {**DEFECT_FOLDER_ALIASES, **extra_folders}

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Sum over layers of the multi-class focal loss."""
        mask = mask_targets(batch, self.mask_target)
        defect_types = batch.get("defect_type") or [""] * mask.shape[0]
        targets = anomalous_targets(
            defect_types, text.class_names, self.aliases, self.unknown_defect, self.folder_aliases
        )
        targets = targets.to(mask.device)
        return sum(multiclass_focal_on_probs(p.float(), mask, targets, self.gamma) for p in scores.layer_probs)
