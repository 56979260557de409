"""Unified text-patch alignment: image score from the most anomalous patches of every layer (ViP2-CLIP, methods.md §4).

Per layer, S are the raw cosines ``[B, N, C]`` between the L2-normalised patch tokens and that layer's text
embeddings (``TextFeatures.per_layer`` when the synthesizer gives them, else the shared embeddings), and the patch
probabilities are ``softmax(S / T)``. The image logits are the mean of the raw cosines of the top-k patches of every
layer (ranked by anomaly probability, concatenated over layers) divided by T; the image score is their softmax's
anomaly part. The global CLS feature is not used for scoring.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    Aggregation,
    SmoothingBorder,
    UpsampleMode,
    anomaly_scores,
    check_temperature_and_sigma,
    class_logits,
    upsample_patches,
)
from zsad.registry import HEADS
from zsad.structures import Features, Scores, TextFeatures


def top_patch_cosines(cosines: Tensor, ranking: Tensor, k: int) -> Tensor:
    """Raw cosines ``[B, k', C]`` of the ``k' = min(k, N)`` patches with the highest ``ranking`` ``[B, N]``.

    Ties are broken by the lower patch index (a stable descending sort). The official code calls ``torch.topk``
    with ``sorted=False``, whose choice among tied patches PyTorch leaves unspecified; with 1,369 patches and
    continuous probabilities exact ties essentially never happen. A ``k`` above the number of patches selects them
    all (the official code would raise).
    """
    count = min(k, cosines.shape[1])
    order = torch.sort(ranking, dim=1, descending=True, stable=True).indices[:, :count]
    return cosines.gather(1, order.unsqueeze(-1).expand(-1, -1, cosines.shape[-1]))


@HEADS.register("topk")
class TopKHead(ScoringHead):
    """ViP2-CLIP's UTPA: image score from the top-k most anomalous patches of every layer, mean map over layers.

    Works with any synthesizer: per-layer text embeddings are used when present. With more than two classes the
    patches are ranked by the total probability of the anomalous classes.

    Args:
        k: Patches kept per layer (official: 50). A ``k`` above the number of patches N keeps all N.
        temperature: Softmax temperature over cosines (official: 0.07).
        aggregation: How per-layer anomaly maps combine (official: ``"mean"``).
        sigma: Gaussian smoothing of the final map at evaluation (official test default: 8); 0 disables it.
        upsample: Interpolation of the patch probabilities to image size (official: bilinear).
        smoothing_border: Border of the Gaussian smoothing: ``"symmetric"`` (official: scipy's ``reflect``, the
            edge pixel repeated) or ``"reflect"`` (torch's, edge pixel not repeated; zsad's earlier behaviour).
    """

    def __init__(
        self,
        k: int = 50,
        temperature: float = 0.07,
        aggregation: Aggregation = "mean",
        sigma: float = 8.0,
        upsample: UpsampleMode = "bilinear",
        smoothing_border: SmoothingBorder = "symmetric",
    ) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"k={k} must be at least 1.")
        check_temperature_and_sigma(temperature, sigma, smoothing_border)
        self.k = k
        self.temperature = temperature
        self.aggregation = aggregation
        self.sigma = sigma
        self.upsample = upsample
        self.smoothing_border = smoothing_border

    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch."""
        selected, layer_probs = [], []
        for index, tokens in enumerate(features.dense_tokens):
            cosines = class_logits(
                tokens, text.for_layer(index), 1.0
            )  # raw fp32 cosines [B, N, C], even under autocast
            probs = (cosines / self.temperature).softmax(dim=-1)
            selected.append(top_patch_cosines(cosines, probs[..., 1:].sum(dim=-1), self.k))
            layer_probs.append(upsample_patches(probs, features.grid, image_size, self.upsample))
        image_logits = torch.cat(selected, dim=1).mean(dim=1) / self.temperature
        return anomaly_scores(image_logits, layer_probs, self.aggregation, self.smoothing_sigma, self.smoothing_border)
