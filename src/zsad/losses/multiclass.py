"""Multi-class pixel losses over defect types (DAPO, methods.md §9).

The focal target of an anomalous pixel is the class of its image's defect type, found by matching
``batch["defect_type"]`` (a dataset's defect folder name such as ``"metal_contamination"``) against
``text.class_names``. Matching, after lower-casing and splitting on ``_``, ``-`` and spaces:

1. each word is first replaced through :data:`DEFECT_ALIASES` (MVTec folder words that are synonyms of a
   DAPO word, e.g. ``poke`` -> ``puncture``);
2. a class matches when its name occurs as whole words in the result (``broken_large`` -> ``broken``); the
   longest matching class name wins.

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
from zsad.losses.base import Loss, pixel_targets
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
"""Word-level synonyms from MVTec AD defect folder names to DAPO's words (our reading; methods.md gives no map)."""


def match_defect_class(defect_type: str, class_names: Sequence[str], aliases: Mapping[str, str]) -> int | None:
    """Index of the class (1..C-1) named by ``defect_type``, or ``None`` when no class matches."""
    words = [aliases.get(w, w) for w in re.split(r"[\s_\-]+", defect_type.lower()) if w]
    phrase = f" {' '.join(words)} "
    hits = [i for i, name in enumerate(class_names) if i > 0 and f" {name.lower()} " in phrase]
    return max(hits, key=lambda i: len(class_names[i])) if hits else None


def anomalous_targets(
    defect_types: Sequence[str], class_names: Sequence[str], aliases: Mapping[str, str], unknown: UnknownDefect
) -> Tensor:
    """``[B, C]`` 0/1 target classes of each image's anomalous pixels: one class, or all defect classes.

    Raises:
        ConfigError: If ``unknown="error"`` and a defect type matches no class.
    """
    targets = torch.zeros(len(defect_types), len(class_names))
    for row, defect_type in enumerate(defect_types):
        index = match_defect_class(defect_type, class_names, aliases)
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
    """

    def __init__(
        self,
        weight: float = 1.0,
        gamma: float = 2.0,
        unknown_defect: UnknownDefect = "any",
        aliases: dict[str, str] | None = None,
    ) -> None:
        super().__init__(weight)
        if unknown_defect not in ("any", "error"):
            raise ConfigError(f"unknown_defect='{unknown_defect}' must be 'any' or 'error'.")
        self.gamma = gamma
        self.unknown_defect = unknown_defect
        self.aliases = {**DEFECT_ALIASES, **{k.lower(): v.lower() for k, v in (aliases or {}).items()}}

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Sum over layers of the multi-class focal loss."""
        mask = pixel_targets(batch).round()
        defect_types = batch.get("defect_type") or [""] * mask.shape[0]
        targets = anomalous_targets(defect_types, text.class_names, self.aliases, self.unknown_defect)
        targets = targets.to(mask.device)
        return sum(multiclass_focal_on_probs(p.float(), mask, targets, self.gamma) for p in scores.layer_probs)
