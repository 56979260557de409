"""Multi-class (defect-type) scoring with per-layer linear patch maps (DAPO, methods.md §9)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from zsad.backbones.base import Backbone
from zsad.errors import ConfigError
from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    Aggregation,
    SmoothingBorder,
    UpsampleMode,
    aggregate_layers,
    check_temperature_and_sigma,
    class_logits,
    gaussian_smooth,
    patch_probabilities,
)
from zsad.registry import HEADS
from zsad.structures import Features, Scores, TextFeatures, l2_normalize

DefectPrototype = Literal["normalized_mean", "mean"]
"""The anomalous side of DAPO's image decision: the cosine with the renormalised mean of the unit defect embeddings
(``"normalized_mean"``, the official code) or the mean of the defect cosines (``"mean"``)."""
DEFECT_PROTOTYPES: tuple[str, ...] = get_args(DefectPrototype)


def binary_image_logits(
    global_embedding: Tensor, text: Tensor, temperature: float, prototype: DefectPrototype = "normalized_mean"
) -> Tensor:
    """``[B, 2]`` logits ``[cos(g, e_normal), cos(g, mean(e_defects))] / T`` for the unit class embeddings ``e``.

    Args:
        global_embedding: ``[B, D]`` global image features ``g``.
        text: ``[B or 1, C, D]`` unit class embeddings, class 0 normal.
        temperature: Softmax temperature.
        prototype: ``"normalized_mean"`` takes the cosine with the mean defect embedding (renormalised to unit
            length, as the official code does); ``"mean"`` uses the unnormalised mean, ``g·mean(e_k)``, which is
            the mean of the defect logits. The two differ by the factor ``|mean(e_k)|`` on the anomalous logit.
    """
    if prototype == "mean":
        logits = class_logits(global_embedding, text, temperature)
        return torch.stack([logits[:, 0], logits[:, 1:].mean(dim=1)], dim=1)
    defect_mean = l2_normalize(text[:, 1:].float().mean(dim=1, keepdim=True))
    return class_logits(global_embedding, torch.cat([text[:, :1].float(), defect_mean], dim=1), temperature)


def defect_class_map(layer_probs: Sequence[Tensor], threshold: float) -> Tensor:
    """``[B, H, W]`` defect class map: 0 (normal) unless the layer-mean anomaly probability exceeds ``threshold``.

    Anomalous pixels get the most likely defect class (1..C-1) of the layer-mean probabilities.
    """
    with torch.no_grad():
        mean_probs = torch.stack([p.float() for p in layer_probs]).mean(dim=0)
        defect = mean_probs[:, 1:]
        return torch.where(defect.sum(dim=1) > threshold, 1 + defect.argmax(dim=1), 0)


@HEADS.register("multiclass")
class MultiClassHead(ScoringHead):
    """Multi-class (defect-type) scoring: mean-defect image score, summed defect-probability maps, class map.

    - Image: ``softmax([cos(g, e_normal), cos(g, mean(e_defects))] / T)[1]`` with the global feature ``g``;
      ``Scores.image_logits`` are these two logits (``[B, 2]``, not ``[B, C]``), so ``image_ce`` trains exactly
      DAPO's image decision.
    - Pixel: per layer, each (q-k path) patch token goes through that layer's ``Linear(vision_width, embed_dim)``,
      then a softmax over all C classes with temperature T, upsampled bilinearly with ``align_corners=True``; the
      map is the sum of the defect probabilities, summed over layers, with no Gaussian by default.
      ``layer_probs`` keep all C classes for the losses.
    - ``class_map``: the argmax over defect classes of the layer-mean probabilities, where their sum exceeds
      ``class_threshold``; 0 elsewhere.

    The linear maps are this head's trainable parameters (DAPO: 4 x (1024 x 768 + 768)). They need raw patch
    tokens: build the backbone with ``project_patches: false``.

    Args:
        temperature: Softmax temperature over cosine similarities (DAPO: 0.07).
        layers: Backbone layers the maps belong to, in order; must equal the features' layers.
        vision_width: Input width of the maps (the image tower's width: 1024 for ViT-L/14); ``None`` (default)
            takes it from the backbone.
        embed_dim: Output width of the maps (the joint image-text dimension: 768 for ViT-L/14); ``None`` (default)
            takes it from the backbone.
        linear_maps: ``False`` skips the maps and compares already projected tokens (``project_patches: true``).
        aggregation: How per-layer maps combine (DAPO: ``"sum"``).
        sigma: Gaussian smoothing of the map at evaluation (DAPO: 0, none).
        upsample: Interpolation of the patch probabilities to image size.
        class_threshold: Anomaly probability above which a pixel gets a defect class in ``class_map``.
        smoothing_border: Border of the Gaussian smoothing when ``sigma > 0``: ``"symmetric"`` (scipy's
            ``reflect``, the edge pixel repeated) or ``"reflect"`` (torch's; zsad's earlier behaviour).
        align_corners: Of the bilinear/bicubic upsampling (DAPO's code: ``True``; ``False`` is the AnomalyCLIP
            family's convention, zsad's earlier choice here).
        defect_prototype: The anomalous image logit (:func:`binary_image_logits`): ``"normalized_mean"`` (DAPO's
            code) or ``"mean"`` (the mean of the defect cosines, zsad's earlier choice).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        layers: Sequence[int] = (6, 12, 18, 24),
        vision_width: int | None = None,
        embed_dim: int | None = None,
        linear_maps: bool = True,
        aggregation: Aggregation = "sum",
        sigma: float = 0.0,
        upsample: UpsampleMode = "bilinear",
        class_threshold: float = 0.5,
        smoothing_border: SmoothingBorder = "symmetric",
        align_corners: bool = True,
        defect_prototype: DefectPrototype = "normalized_mean",
    ) -> None:
        super().__init__()
        check_temperature_and_sigma(temperature, sigma, smoothing_border)
        if defect_prototype not in DEFECT_PROTOTYPES:
            raise ConfigError(
                f"defect_prototype='{defect_prototype}' is unknown; use one of {list(DEFECT_PROTOTYPES)}."
            )
        if linear_maps and (not layers or min(vision_width or 1, embed_dim or 1) < 1):
            raise ConfigError(f"layers={list(layers)}, vision_width and embed_dim must be non-empty and positive.")
        self.temperature = temperature
        self.layers = tuple(layers)
        self.vision_width = vision_width
        self.embed_dim = embed_dim
        self.aggregation = aggregation
        self.sigma = sigma
        self.smoothing_border = smoothing_border
        self.upsample = upsample
        self.class_threshold = class_threshold
        self.align_corners = align_corners
        self.defect_prototype = defect_prototype
        self.linear_maps = linear_maps
        self.patch_maps: nn.ModuleList | None = None
        if linear_maps and vision_width is not None and embed_dim is not None:
            self._create_maps()

    def _create_maps(self) -> None:
        self.patch_maps = nn.ModuleList(nn.Linear(self.vision_width, self.embed_dim) for _ in self.layers)

    def setup_backbone(self, backbone: Backbone) -> None:
        """Size the per-layer maps from the backbone, unless configured."""
        if not self.linear_maps or self.patch_maps is not None:
            return
        self.vision_width = self.vision_width or backbone.vision_width
        self.embed_dim = self.embed_dim or backbone.embed_dim
        self._create_maps()

    def _dense_tokens(self, features: Features) -> tuple[Tensor, ...]:
        """Patch tokens in the joint space: through the per-layer maps, or as given without maps."""
        if self.patch_maps is None:
            if self.linear_maps:
                raise ConfigError("The head's maps are unsized: set vision_width and embed_dim, or use a ZSADModule.")
            return features.dense_tokens
        if tuple(features.layers) != self.layers:
            raise ConfigError(
                f"The head has linear maps for layers {list(self.layers)} but the backbone gives layers "
                f"{list(features.layers)}; set the head's layers to the backbone's."
            )
        width = features.patch_tokens[0].shape[-1]
        if width != self.vision_width:
            hint = " Build the backbone with project_patches: false." if width == self.embed_dim else ""
            raise ConfigError(
                f"Patch tokens have width {width} but the head's maps expect vision_width={self.vision_width}.{hint}"
            )
        return tuple(linear(tokens) for linear, tokens in zip(self.patch_maps, features.patch_tokens, strict=True))

    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch."""
        if text.num_classes < 2:
            raise ConfigError("The multiclass head needs a normal class and at least one defect class.")
        if self.patch_maps is not None and text.embeddings.shape[-1] != self.embed_dim:
            raise ConfigError(
                f"Text embeddings have dimension {text.embeddings.shape[-1]} but the head's maps give "
                f"embed_dim={self.embed_dim}; set embed_dim to the backbone's joint dimension."
            )
        dense_tokens = self._dense_tokens(features)  # checks the patch widths first: the clearer message
        image_logits = binary_image_logits(
            features.global_embedding, text.embeddings, self.temperature, self.defect_prototype
        )
        upsample = {"mode": self.upsample, "align_corners": self.align_corners}
        layer_probs = tuple(
            patch_probabilities(tokens, text.for_layer(i), self.temperature, features.grid, image_size, **upsample)
            for i, tokens in enumerate(dense_tokens)
        )
        anomaly_map = aggregate_layers([p[:, 1:].sum(dim=1) for p in layer_probs], self.aggregation)
        anomaly_map = gaussian_smooth(anomaly_map, self.smoothing_sigma, self.smoothing_border)
        return Scores(
            image_logits=image_logits,
            image_score=image_logits.softmax(dim=-1)[:, 1],
            layer_probs=layer_probs,
            anomaly_map=anomaly_map,
            class_map=defect_class_map(layer_probs, self.class_threshold),
        )
