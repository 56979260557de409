"""Training losses; each is a registered, weighted component."""

from zsad.losses.base import Loss
from zsad.losses.cops import CenterLoss, KLLoss, ReconstructionLoss
from zsad.losses.image import ImageCrossEntropy
from zsad.losses.multiclass import MultiClassFocalLoss
from zsad.losses.pixel import DiceLoss, FocalLoss

__all__ = [
    "CenterLoss",
    "DiceLoss",
    "FocalLoss",
    "ImageCrossEntropy",
    "KLLoss",
    "Loss",
    "MultiClassFocalLoss",
    "ReconstructionLoss",
]
