"""Multi-class (defect-type) scoring with per-layer linear patch maps (DAPO, methods.md §9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zsad.backbones.base import Backbone
from zsad.errors import ConfigError
from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    Aggregation,
    UpsampleMode,
    aggregate_layers,
    check_temperature_and_sigma,
    class_logits,
    gaussian_smooth,
    patch_probabilities,
)
from zsad.registry import HEADS
from zsad.structures import Features, Scores, TextFeatures


def binary_image_logits(global_embedding: Tensor, text: Tensor, temperature: float) -> Tensor:
    """``[B, 2]`` logits ``[g·e_normal, g·mean(e_defects)] / T`` for unit ``g`` and unit class embeddings.

    ``g·mean(e_k)`` is the mean over defect classes of ``g·e_k``, so it is the mean of the defect logits.
    """
    logits = class_logits(global_embedding, text, temperature)
    return torch.stack([logits[:, 0], logits[:, 1:].mean(dim=1)], dim=1)


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

    - Image: ``softmax([g·e_normal, g·mean(e_defects)] / T)[1]`` with the global feature ``g``;
      ``Scores.image_logits`` are these two logits (``[B, 2]``, not ``[B, C]``), so ``image_ce`` trains exactly
      DAPO's image decision.
    - Pixel: per layer, each (q-k path) patch token goes through that layer's ``Linear(vision_width, embed_dim)``,
      then a softmax over all C classes with temperature T; the map is the sum of the defect probabilities,
      summed over layers, with no Gaussian by default. ``layer_probs`` keep all C classes for the losses.
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
    ) -> None:
        super().__init__()
        check_temperature_and_sigma(temperature, sigma)
        if linear_maps and (not layers or min(vision_width or 1, embed_dim or 1) < 1):
            raise ConfigError(f"layers={list(layers)}, vision_width and embed_dim must be non-empty and positive.")
        self.temperature = temperature
        self.layers = tuple(layers)
        self.vision_width = vision_width
        self.embed_dim = embed_dim
        self.aggregation = aggregation
        self.sigma = sigma
        self.upsample = upsample
        self.class_threshold = class_threshold
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
        image_logits = binary_image_logits(features.global_embedding, text.embeddings, self.temperature)
        layer_probs = tuple(
            patch_probabilities(tokens, text.for_layer(i), self.temperature, features.grid, image_size, self.upsample)
            for i, tokens in enumerate(dense_tokens)
        )
        anomaly_map = aggregate_layers([p[:, 1:].sum(dim=1) for p in layer_probs], self.aggregation)
        anomaly_map = gaussian_smooth(anomaly_map, self.smoothing_sigma)
        return Scores(
            image_logits=image_logits,
            image_score=image_logits.softmax(dim=-1)[:, 1],
            layer_probs=layer_probs,
            anomaly_map=anomaly_map,
            class_map=defect_class_map(layer_probs, self.class_threshold),
        )
