"""The one place where images and masks are preprocessed (methods.md §1).

Images: square resize to the evaluation size with bicubic interpolation (no aspect preservation), scaling to
[0, 1], OpenAI CLIP normalisation. Masks: binarised at the source (any value above ``mask_threshold``), resized
bilinearly, then thresholded at 0.5.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF  # noqa: N812

from zsad.errors import ConfigError, DataError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What Pillow raises for a missing, truncated, oversized or malformed file."""


def read_error(kind: str, path: str | Path, error: Exception) -> DataError:
    """The error for an image or mask that cannot be read, naming the file (and a broken link's target)."""
    path = Path(path)
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return DataError(f"Cannot read {kind} '{path}': it is a symbolic link loop. Fix or remove the link.")
    if path.is_symlink() and not path.exists():
        return DataError(
            f"Cannot read {kind} '{path}': it is a broken symbolic link to '{os.readlink(path)}', which does not "
            f"exist. Fix or remove the link."
        )
    return DataError(f"Cannot read {kind} '{path}': {error}. Replace or remove the file.")


def _stretch_to_8_bit(array: np.ndarray) -> Image.Image:
    """Map the finite range of a 16/32-bit or float image linearly onto 0..255 (non-finite pixels become 0)."""
    finite = np.isfinite(array)
    if not finite.any():
        return Image.fromarray(np.zeros(array.shape, np.uint8))
    low, high = float(array[finite].min()), float(array[finite].max())
    scaled = (np.where(finite, array, low) - low) / ((high - low) or 1.0) * 255.0
    return Image.fromarray(scaled.astype(np.uint8))


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image of any mode (L, P, RGBA, CMYK, 16-bit, float) as 8-bit RGB.

    16-bit, 32-bit integer and float images are stretched linearly from their minimum to their maximum; transparent
    pixels (alpha channel, transparent palette index or colour key) are composited over black.

    Raises:
        DataError: If the file is missing, truncated or not an image; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                image = _stretch_to_8_bit(np.asarray(image, dtype=np.float64))
            # "transparency" is a palette index, or a colour key of an L/RGB PNG: both become alpha
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            return image.convert("RGB")
    except READ_ERRORS as error:
        raise read_error("image", path, error) from error


def load_mask(path: str | Path, threshold: int = 0) -> Image.Image:
    """Open a mask as a 0/255 L-mode image; pixels above ``threshold`` are anomalous.

    Use ``threshold=0`` for PNG masks (MVTec 3D-AD uses 253/254/255) and 127 for JPEG masks (Kvasir-SEG).

    Raises:
        DataError: If the file is missing, truncated or not an image; the message names the file.
    """
    try:
        with Image.open(path) as mask:
            values = np.asarray(mask.convert("L"))
    except READ_ERRORS as error:
        raise read_error("mask", path, error) from error
    return Image.fromarray(((values > threshold) * 255).astype(np.uint8))


class ImageTransform:
    """Resize (bicubic by default), to tensor, normalise.

    Args:
        size: Output side in pixels.
        interpolation: ``"bicubic"`` (reference) or ``"bilinear"`` (any torchvision ``InterpolationMode`` value).
        mean: Normalisation mean (OpenAI CLIP by default).
        std: Normalisation std.

    Raises:
        ConfigError: If ``interpolation`` is not an interpolation mode.
    """

    def __init__(
        self,
        size: int,
        interpolation: str = "bicubic",
        mean: tuple[float, float, float] = OPENAI_MEAN,
        std: tuple[float, float, float] = OPENAI_STD,
    ) -> None:
        self.size = size
        try:
            self.interpolation = InterpolationMode(interpolation)
        except ValueError as error:
            valid = ", ".join(repr(mode.value) for mode in InterpolationMode)
            raise ConfigError(f"Unknown interpolation {interpolation!r}. Use one of {valid}.") from error
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, image: Image.Image) -> Tensor:
        """Transform a PIL RGB image to a normalised ``[3, size, size]`` tensor."""
        image = TF.resize(image, [self.size, self.size], interpolation=self.interpolation)
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)

    def denormalize(self, images: Tensor) -> Tensor:
        """Undo the normalisation (for pictures): ``[..., 3, H, W]`` in [0, 1]."""
        mean = torch.tensor(self.mean, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(3, 1, 1)
        return (images * std + mean).clamp(0, 1)


class MaskTransform:
    """Resize a 0/255 mask bilinearly and threshold at 0.5: ``[1, size, size]`` float tensor of 0/1.

    :meth:`levels` gives the resized mask before the threshold, for losses with another rule (DAPO's training code
    counts only pixels whose resized value is exactly 255).
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, mask: Image.Image) -> Tensor:
        """Transform a binary PIL mask."""
        return binary_mask(self.levels(mask))

    def levels(self, mask: Image.Image) -> Tensor:
        """The bilinearly resized 0/255 mask as ``[1, size, size]`` uint8 (255: fully inside the defect)."""
        resized = TF.resize(mask, [self.size, self.size], interpolation=InterpolationMode.BILINEAR)
        return TF.pil_to_tensor(resized)


def binary_mask(levels: Tensor) -> Tensor:
    """0/1 float mask of resized levels, thresholded at one half (``level / 255 > 0.5``, the reference code's rule)."""
    return (levels.float() / 255 > 0.5).float()
