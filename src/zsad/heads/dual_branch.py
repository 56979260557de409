"""Image score from the global feature, pixel map from patch tokens (AnomalyCLIP, methods.md §3)."""

from __future__ import annotations

from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    Aggregation,
    SmoothingBorder,
    UpsampleMode,
    anomaly_scores,
    check_temperature_and_sigma,
    class_logits,
    patch_probabilities,
)
from zsad.registry import HEADS
from zsad.structures import Features, Scores, TextFeatures


@HEADS.register("dual_branch")
class DualBranchHead(ScoringHead):
    """Dual-branch scoring: softmax over (normal, anomaly) of the global feature and of every patch token.

    Args:
        temperature: Softmax temperature over cosine similarities (0.07 in AnomalyCLIP, CoPS, ViP2).
        aggregation: How per-layer maps combine: ``"sum"`` (AnomalyCLIP) or ``"mean"``.
        sigma: Gaussian smoothing of the final map at evaluation (AnomalyCLIP: 4); 0 disables it.
        upsample: Interpolation from the patch grid to image size.
        smoothing_border: Border of the Gaussian smoothing: ``"symmetric"`` (official: scipy's ``reflect``, the
            edge pixel repeated) or ``"reflect"`` (torch's, edge pixel not repeated; zsad's earlier behaviour).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        aggregation: Aggregation = "sum",
        sigma: float = 4.0,
        upsample: UpsampleMode = "bilinear",
        smoothing_border: SmoothingBorder = "symmetric",
    ) -> None:
        super().__init__()
        check_temperature_and_sigma(temperature, sigma, smoothing_border)
        self.temperature = temperature
        self.aggregation = aggregation
        self.sigma = sigma
        self.upsample = upsample
        self.smoothing_border = smoothing_border

    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch."""
        image_logits = class_logits(features.global_embedding, text.embeddings, self.temperature)
        layer_probs = tuple(
            patch_probabilities(tokens, text.for_layer(i), self.temperature, features.grid, image_size, self.upsample)
            for i, tokens in enumerate(features.dense_tokens)
        )
        return anomaly_scores(image_logits, layer_probs, self.aggregation, self.smoothing_sigma, self.smoothing_border)
