"""Anomaly maps and masks at each image's own (native) resolution, for metrics that avoid the square resize.

The reference repositories compute metrics at 518 x 518 after warping every image to a square (methods.md §10);
anomalib-style evaluations upsample maps back to each image's size instead, which changes pixel numbers, most of
all AUPRO and F1 on small defects. Images of one category may differ in size (medical sets), so maps are stored
flattened, one per sample, with their shape; AUPRO regions are labelled per image and numbered across the category.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from zsad.metrics.aupro import aupro_cflow, aupro_exact, connected_regions
from zsad.metrics.curves import binary_metrics
from zsad.metrics.pixel_state import (
    CURVE_METRICS,
    first_occurrences,
    pack_masks,
    state_parts,
    undefined_reasons,
    unpack_masks,
)


class NativePixelStore(Metric):
    """Keeps one flattened map, packed mask and shape per sample; DDP gathers the list states.

    Boundaries between samples are recovered from the shapes, which are gathered in the same order as the maps.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    maps: list[Tensor]
    masks: list[Tensor]
    shapes: list[Tensor]
    category_ids: list[Tensor]
    sample_indices: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("maps", "masks", "shapes", "category_ids", "sample_indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, anomaly_map: Tensor, mask: Tensor, category_id: int, sample_index: int) -> None:
        """Add one sample: ``[H, W]`` map and mask at the image's native size."""
        device = anomaly_map.device
        self.maps.append(anomaly_map.detach().float().reshape(-1).clone())
        self.masks.append(pack_masks(mask.bool()[None]).reshape(-1).to(device))
        self.shapes.append(torch.tensor([list(anomaly_map.shape)], device=device))
        self.category_ids.append(torch.tensor([category_id], device=device))
        self.sample_indices.append(torch.tensor([sample_index], device=device))

    def compute(self) -> dict[int, tuple[list[Tensor], list[Tensor]]]:
        """``{category id: (maps, masks)}``, lists of ``[H, W]`` tensors in sample-index order, each sample once."""
        if not state_parts(self.maps):
            return {}
        maps, masks = torch.cat(state_parts(self.maps)).cpu(), torch.cat(state_parts(self.masks)).cpu()
        shapes = torch.cat(state_parts(self.shapes)).cpu()
        categories = torch.cat(state_parts(self.category_ids)).cpu()
        pixels = shapes.prod(dim=1)
        map_ends, mask_ends = pixels.cumsum(0), ((pixels + 7) // 8).cumsum(0)
        result: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        for row in first_occurrences(torch.cat(state_parts(self.sample_indices)).cpu()).tolist():
            shape = tuple(shapes[row].tolist())
            flat_map = maps[map_ends[row] - pixels[row] : map_ends[row]]
            packed = masks[mask_ends[row] - (pixels[row] + 7) // 8 : mask_ends[row]]
            entry = result.setdefault(int(categories[row]), ([], []))
            entry[0].append(flat_map.view(shape))
            entry[1].append(unpack_masks(packed[None], shape)[0])
        return result


def native_pixel_metrics(
    maps: list[Tensor],
    masks: list[Tensor],
    metrics: tuple[str, ...],
    fpr_limit: float = 0.3,
    reasons: dict[str, str] | None = None,
) -> dict[str, float | None]:
    """Pixel metrics over images of (possibly) different sizes; regions never span two images.

    ``reasons``, if given, receives why each undefined (``None``) value is undefined.
    """
    scores = torch.cat([m.reshape(-1) for m in maps])
    regions, offset = [], 0
    for mask in masks:
        labelled = connected_regions(torch.atleast_2d(mask)).long()  # a 1 x 1 image's mask may come back 0-d
        regions.append(torch.where(labelled > 0, labelled + offset, labelled).reshape(-1))
        offset += int(labelled.max())
    region_ids = torch.cat(regions)
    values: dict[str, float | None] = {}
    if any(name in CURVE_METRICS for name in metrics):
        curves = binary_metrics(scores, region_ids > 0)
        values.update({name: curves[key] for name, key in CURVE_METRICS.items() if name in metrics})
    if "pixel_aupro" in metrics:
        values["pixel_aupro"] = aupro_exact(scores, None, fpr_limit, regions=region_ids)
    if "pixel_aupro_cflow" in metrics:
        values["pixel_aupro_cflow"] = aupro_cflow(scores, None, fpr_limit, regions=region_ids)
    if reasons is not None:
        reasons.update(undefined_reasons(values, scores, region_ids > 0, fpr_limit))
    return values
