"""CoPS's synthesizer-side losses (methods.md §2.7): center losses, VAE KL and reconstruction, all weight 1.

The ``cops`` synthesizer computes the unweighted terms; these registered losses weight them (their ``consumes``),
so a disabled module (``use_ests`` / ``use_icts`` / ``rec_loss`` false) goes with removing its loss from the config.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from zsad.errors import ConfigError
from zsad.losses.base import Loss, pixel_targets
from zsad.prompts.cops.ests import center_losses, pool_mask_to_grid
from zsad.registry import LOSSES
from zsad.structures import Scores, TextFeatures


def required_term(text: TextFeatures, name: str, loss: str, flag: str) -> Tensor:
    """The synthesizer term ``name``, or a clear error saying which option removed it."""
    if name not in text.terms:
        raise ConfigError(
            f"The '{loss}' loss needs the term '{name}', which the prompt synthesizer did not compute ({flag}). "
            f"Remove the '{loss}' loss from model.losses or enable that part of the synthesizer."
        )
    return text.terms[name]


@LOSSES.register("center")
class CenterLoss(Loss):
    """CoPS center losses L_NC + L_AC: pull each state's prototypes toward the patches of that state.

    The terms are per-patch distances to the nearest normal / anomaly prototype (``[B, rows, cols]``); the mask is
    max-pooled to the patch grid, L_NC averages the normal distances over normal patches and L_AC the anomaly
    distances over anomalous patches (0 without any), each pooled across the batch.
    """

    consumes: ClassVar[tuple[str, ...]] = ("center_normal", "center_anomaly")

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """``L_NC + L_AC``."""
        normal = required_term(text, "center_normal", "center", "use_ests: false")
        anomaly = required_term(text, "center_anomaly", "center", "use_ests: false")
        patch_mask = pool_mask_to_grid(pixel_targets(batch).to(normal.device), tuple(normal.shape[-2:]))
        normal_loss, anomaly_loss = center_losses(normal, anomaly, patch_mask)
        return normal_loss + anomaly_loss


@LOSSES.register("kl")
class KLLoss(Loss):
    """KL divergence of the CoPS VAE posterior from N(0, I), averaged over the batch."""

    consumes: ClassVar[tuple[str, ...]] = ("kl",)

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """The synthesizer's ``kl`` term."""
        return required_term(text, "kl", "kl", "use_icts: false")


@LOSSES.register("reconstruction")
class ReconstructionLoss(Loss):
    """Reconstruction of the global feature by the CoPS VAE (off when training on VisA, as the official code)."""

    consumes: ClassVar[tuple[str, ...]] = ("reconstruction",)

    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """The synthesizer's ``reconstruction`` term (its ``rec_mode`` decides the formula)."""
        return required_term(text, "reconstruction", "reconstruction", "use_icts: false or rec_loss: false")
