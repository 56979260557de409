"""Which pixels a pixel loss counts as anomalous: the batch's binary mask, or DAPO's stricter training target.

The data pipeline resizes each 0/255 source mask bilinearly to the image size (``batch["mask_level"]``, uint8) and
binarises it at one half (``batch["mask"]``; :class:`~zsad.data.transforms.MaskTransform`), the convention of the
reference repositories' test code. DAPO's training code casts the resized mask to an integer before any threshold
instead, so only pixels whose resized value is exactly 1.0 count as defect and the soft ring along every defect
border counts as normal: ``mask_level == 255``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from torch import Tensor

from zsad.errors import ConfigError
from zsad.losses.base import pixel_targets

MaskTarget = Literal["binary", "exact_one"]
"""``"binary"``: the batch's mask (resized, then binarised at 0.5). ``"exact_one"``: only pixels whose bilinearly
resized source mask is exactly 1.0 (DAPO's training code)."""
MASK_TARGETS: tuple[str, ...] = get_args(MaskTarget)
FULL_LEVEL = 255


def check_mask_target(value: str) -> None:
    """Refuse an unknown mask target.

    Raises:
        ConfigError: ``value`` is not one of :data:`MASK_TARGETS`.
    """
    if value not in MASK_TARGETS:
        raise ConfigError(f"mask_target='{value}' is unknown; use one of {list(MASK_TARGETS)}.")


def mask_targets(batch: dict[str, Any], target: MaskTarget) -> Tensor:
    """``[B, H, W]`` float 0/1 anomalous pixels of a batch under the rule ``target``.

    A batch without ``mask_level`` (built by hand rather than by zsad's datasets) has only its 0/1 ``mask``: a mask
    that was never resized has no soft border, so both rules then give that mask.
    """
    binary = pixel_targets(batch).round()
    levels = batch.get("mask_level")
    if target == "binary" or levels is None:
        return binary
    levels = levels.squeeze(1) if levels.dim() == 4 else levels
    return (levels == FULL_LEVEL).to(binary.dtype)
