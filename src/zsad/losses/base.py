"""The interface every loss implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from zsad.components import Component
from zsad.structures import Scores, TextFeatures


class Loss(Component, nn.Module, ABC):
    """A weighted training objective over a head's :class:`~zsad.structures.Scores`.

    Args:
        weight: Multiplier applied to the value (e.g. 4 for AnomalyCLIP's pixel losses).
    """

    consumes: ClassVar[tuple[str, ...]] = ()
    """Names of :attr:`TextFeatures.terms <zsad.structures.TextFeatures.terms>` this loss weights."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """Return ``weight * value``."""
        return self.weight * self.value(scores, batch, text)

    @abstractmethod
    def value(self, scores: Scores, batch: dict[str, Any], text: TextFeatures) -> Tensor:
        """The unweighted loss."""


def pixel_targets(batch: dict[str, Any]) -> Tensor:
    """Binary ground-truth masks ``[B, H, W]`` as floats."""
    mask = batch["mask"]
    return (mask.squeeze(1) if mask.dim() == 4 else mask).float()
