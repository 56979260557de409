"""The interface every prompt synthesizer implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from zsad.backbones.base import Backbone
from zsad.backbones.text import DeepPromptHook, TextEncoder
from zsad.components import Component
from zsad.structures import Features, TextFeatures


class PromptSynthesizer(Component, nn.Module, ABC):
    """Learns (or builds) the class text embeddings a scoring head compares with image features.

    Parameters whose shapes depend on the text tower are created in :meth:`setup`, which the module calls once
    with the backbone's text encoder before training or checkpoint loading.
    """

    image_conditioned: bool = False
    """Whether the prompts depend on the image (then they cannot be computed once per evaluation)."""

    def setup_backbone(self, backbone: Backbone) -> None:
        """Read sizes from the backbone (e.g. the image tower's width); called once, before :meth:`setup`."""

    def setup(self, text: TextEncoder) -> None:
        """Create text-width-dependent parameters and buffers; called once by the module."""

    def vision_prompts(self) -> DeepPromptHook | None:
        """Learned tokens for the image tower (DAPO), or ``None``: then the frozen features can be cached."""
        return None

    @abstractmethod
    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """Return the class embeddings for this batch."""
