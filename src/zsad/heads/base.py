"""The interface every scoring head implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from zsad.backbones.base import Backbone
from zsad.components import Component
from zsad.structures import Features, Scores, TextFeatures


class ScoringHead(Component, nn.Module, ABC):
    """Compares image features with class text embeddings and gives image scores and pixel maps."""

    def setup_backbone(self, backbone: Backbone) -> None:
        """Create parameters whose sizes depend on the backbone (e.g. DAPO's per-layer maps); called once."""

    @abstractmethod
    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch; maps are returned at ``image_size``."""
