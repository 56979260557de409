"""The interface every backbone implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from zsad.backbones.text import DeepPromptHook, TextEncoder
from zsad.components import Component
from zsad.structures import Features


class Backbone(Component, nn.Module, ABC):
    """A frozen vision-language model: images to :class:`~zsad.structures.Features`, plus a text encoder.

    Backbones stay in eval mode and never train; their weights are never written to zsad checkpoints.
    """

    text: TextEncoder
    image_size: tuple[int, int]
    layers: tuple[int, ...]
    embed_dim: int
    vision_width: int
    """Token width of the image tower (1024 for ViT-L/14), the width of raw patch tokens."""

    @abstractmethod
    def forward(self, images: Tensor, deep_prompts: DeepPromptHook | None = None) -> Features:
        """Extract features from normalised ``[B, 3, H, W]`` images, optionally with learned visual tokens."""

    def train(self, mode: bool = True) -> Backbone:
        """Keep the frozen backbone in eval mode whatever the trainer asks."""
        return super().train(False)

    def cache_key(self) -> dict:
        """Everything that determines the features, for feature caches."""
        return self.spec()
