"""The interface every prompt synthesizer implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable

import torch
from torch import nn

from zsad.backbones.base import Backbone
from zsad.backbones.text import DeepPromptHook, TextEncoder
from zsad.components import Component
from zsad.prompts.cache import PromptCache, autocast_state, module_tensors, tensor_state
from zsad.structures import Features, TextFeatures


class PromptSynthesizer(Component, nn.Module, ABC):
    """Learns (or builds) the class text embeddings a scoring head compares with image features.

    Parameters whose shapes depend on the text tower are created in :meth:`setup`, which the module calls once
    with the backbone's text encoder before training or checkpoint loading.
    """

    image_conditioned: bool = True
    """Whether the prompts depend on the image. ``False`` lets :meth:`synthesize` encode them once per evaluation
    and reuse them for every batch; a synthesizer must set it only when its output depends on nothing but its own
    parameters and buffers, the text encoder, (with :attr:`reads_class_names`) the object names and (with
    :attr:`reads_dataset`) the datasets."""

    reads_class_names: bool = False
    """Whether the prompts depend on ``Features.class_names`` (WinCLIP): reuse is then per tuple of names."""

    @property
    def reads_dataset(self) -> bool:
        """Whether the prompts of a batch depend on its dataset (``Features.datasets``; DAPO's per-dataset test words).

        The module then scores the images of each dataset in a batch separately, so that every call sees one.
        """
        return False

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

    def synthesize(self, features: Features, text: TextEncoder) -> TextFeatures:
        """The class embeddings for a batch, computed once per evaluation when they cannot differ between batches.

        Image-independent prompts (``image_conditioned`` false) are reused only in eval mode with gradients off,
        and only while this synthesizer's and the text encoder's tensors are unchanged (see
        :mod:`zsad.prompts.cache`); otherwise this is ``self(features, text)``.
        """
        if self.image_conditioned or self.training or torch.is_grad_enabled():
            return self(features, text)
        tensors = module_tensors(self, text)
        device = tensors[0].device if tensors else torch.device("cpu")
        state = (id(text), autocast_state(device), *tensor_state(tensors))
        return self.prompt_cache.fetch(state, self.reuse_key(features), lambda: self(features, text))

    def reuse_key(self, features: Features) -> Hashable:
        """What else the prompts of a batch depend on: its names and size, its datasets (each when read)."""
        names = (features.class_names, features.batch_size) if self.reads_class_names else None
        return (names, features.dataset) if self.reads_dataset else names

    @property
    def prompt_cache(self) -> PromptCache:
        """The embeddings kept by :meth:`synthesize` (created on first use; never saved in checkpoints)."""
        cache = self.__dict__.get("_prompt_cache")
        if cache is None:
            cache = self.__dict__["_prompt_cache"] = PromptCache()
        return cache

    def train(self, mode: bool = True) -> PromptSynthesizer:
        """Switch mode and forget reusable embeddings: the next evaluation encodes its prompts afresh."""
        self.prompt_cache.clear()
        return super().train(mode)
