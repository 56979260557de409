"""The interface every scoring head implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from zsad.backbones.base import Backbone
from zsad.components import Component
from zsad.heads.maps import SmoothingBorder
from zsad.structures import Features, Scores, TextFeatures


class ScoringHead(Component, nn.Module, ABC):
    """Compares image features with class text embeddings and gives image scores and pixel maps.

    Attributes:
        sigma: Gaussian smoothing of the final map at evaluation; 0 disables it.
        smoothing_border: Border of that smoothing: ``"symmetric"`` (scipy's ``reflect``, the official code's) or
            ``"reflect"`` (torch's, zsad's earlier behaviour); see :func:`~zsad.heads.maps.gaussian_smooth`.
    """

    sigma: float = 0.0
    smoothing_border: SmoothingBorder = "symmetric"

    @property
    def smoothing_sigma(self) -> float:
        """The smoothing in force: ``sigma`` at evaluation, 0 in training, where the losses need the raw maps."""
        return 0.0 if self.training else self.sigma

    @property
    def reads_dataset(self) -> bool:
        """Whether the scoring of a batch depends on its dataset (``Features.dataset``; CoPS's per-dataset constants).

        The module then scores the images of each dataset in a batch separately, so that every call sees one.
        """
        return False

    def setup_backbone(self, backbone: Backbone) -> None:
        """Create parameters whose sizes depend on the backbone (e.g. DAPO's per-layer maps); called once."""

    @abstractmethod
    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch; maps are returned at ``image_size``."""
