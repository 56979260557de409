"""Bounded-memory accumulation of anomaly maps and masks for several categories, ready for DDP.

Memory: a map costs 4 bytes per pixel (2 with ``half_precision``) and a mask 1 bit (packed 8 pixels to a byte);
nothing else grows with the data. Metrics are computed one category at a time, so the peak is the stored maps plus
one category's working set: its maps and masks gathered into tensors and the sort keys of :mod:`zsad.metrics.curves`,
about 20 bytes per pixel of that category.

Under DDP, torchmetrics gathers the list states (``dist_reduce_fx="cat"``) into one tensor per state on every rank
before :meth:`PixelScoreStore.compute`, which briefly holds all ranks' maps. The ``DistributedSampler`` pads the last
batches by repeating samples; every map carries its global sample index and repeats are counted once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from zsad.metrics.aupro import aupro_cflow, aupro_exact
from zsad.metrics.curves import binary_metrics
from zsad.metrics.undefined import pixel_undefined_reason

CURVE_METRICS = {"pixel_auroc": "auroc", "pixel_ap": "average_precision", "pixel_f1max": "f1_max"}
"""Pixel metric name -> key of :func:`~zsad.metrics.curves.binary_metrics` (all three come from one sort)."""
PIXEL_METRIC_NAMES = (*CURVE_METRICS, "pixel_aupro", "pixel_aupro_cflow")
"""``pixel_aupro`` is :func:`~zsad.metrics.aupro.aupro_exact`; ``pixel_aupro_cflow`` the cflow-ad variant."""
_BIT_POSITIONS = torch.arange(8, dtype=torch.uint8)


class CategoryPixels:
    """The stored maps of one category; they are gathered into one tensor only when asked for.

    Keeping the selection rather than the tensors lets a caller hold every category's entry while only one
    category's copy exists at a time. (A plain class, not a dataclass: torchmetrics walks into dataclasses that
    ``compute`` returns and would deep-copy the stored maps.)

    Args:
        map_parts: Stored map tensors ``[B, H, W]`` (float32 or float16), shared with the store.
        mask_parts: Stored packed masks ``[B, ceil(H·W / 8)]`` uint8 (see :func:`pack_masks`), aligned with
            ``map_parts``.
        rows: Rows of this category in the concatenation of the parts, in global sample-index order, repeats removed.
        part_starts: First row of each part in that concatenation.
    """

    def __init__(
        self, map_parts: Sequence[Tensor], mask_parts: Sequence[Tensor], rows: Tensor, part_starts: Tensor
    ) -> None:
        self.map_parts, self.mask_parts = tuple(map_parts), tuple(mask_parts)
        self.rows, self.part_starts = rows, part_starts

    def __len__(self) -> int:
        return self.rows.numel()

    def maps(self) -> Tensor:
        """A new float32 ``[N, H, W]`` tensor of this category's maps (``.flatten()`` gives the pixel scores)."""
        return _gather(self.map_parts, self.rows, self.part_starts, lambda part: part.to("cpu", torch.float32))

    def masks(self) -> Tensor:
        """A new bool ``[N, H, W]`` tensor of this category's masks, aligned with :meth:`maps`."""
        shape = tuple(self.map_parts[0].shape[1:])
        return _gather(self.mask_parts, self.rows, self.part_starts, lambda part: unpack_masks(part.cpu(), shape))


class PixelScoreStore(Metric):
    """Keeps per-sample anomaly maps and masks of several categories for exact pixel metrics.

    States (lists, concatenated across processes): ``maps`` (float32, or float16 when ``half_precision``),
    ``masks`` (bits packed by :func:`pack_masks`), ``category_ids`` and ``sample_indices`` (int64, one per map).

    Args:
        half_precision: Store maps as float16: halves their memory but is lossy (about 3 significant digits), which
            merges nearby scores into ties and can change every metric slightly. Off by default.
        **kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``compute_on_cpu=True`` to move states off the GPU).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    maps: list[Tensor]
    masks: list[Tensor]
    category_ids: list[Tensor]
    sample_indices: list[Tensor]

    def __init__(self, half_precision: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_dtype = torch.float16 if half_precision else torch.float32
        for name in ("maps", "masks", "category_ids", "sample_indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, maps: Tensor, masks: Tensor, category_ids: Tensor, sample_indices: Tensor) -> None:
        """Add one batch.

        Args:
            maps: ``[B, H, W]`` or ``[B, 1, H, W]`` anomaly maps; every map of the store has the same ``H, W``.
            masks: Same shape; nonzero (or True) is anomalous.
            category_ids: ``[B]`` integer category of each map.
            sample_indices: ``[B]`` global dataset index of each map, the same on every process for one sample.
        """
        maps = maps.detach().squeeze(1) if maps.dim() == 4 else maps.detach()
        masks = masks.detach().squeeze(1) if masks.dim() == 4 else masks.detach()
        if maps.dim() != 3 or maps.shape != masks.shape:
            raise ValueError(
                f"expected maps and masks of one [B, H, W] shape, got {tuple(maps.shape)} and {tuple(masks.shape)}"
            )
        category_ids = torch.as_tensor(category_ids, device=maps.device).reshape(-1).long()
        sample_indices = torch.as_tensor(sample_indices, device=maps.device).reshape(-1).long()
        if not maps.shape[0] == category_ids.numel() == sample_indices.numel():
            raise ValueError("maps, category_ids and sample_indices must have one entry per sample")
        self.maps.append(maps.to(dtype=self.score_dtype, copy=True))  # never alias a tensor the caller may reuse
        self.masks.append(pack_masks(masks if masks.dtype == torch.bool else masks != 0))
        self.category_ids.append(category_ids)
        self.sample_indices.append(sample_indices)

    def compute(self) -> dict[int, CategoryPixels]:
        """Per category id (ascending), its stored maps and masks, each global sample index counted once."""
        map_parts, mask_parts = state_parts(self.maps), state_parts(self.masks)
        if not map_parts:
            return {}
        categories = torch.cat(state_parts(self.category_ids)).cpu()
        kept = first_occurrences(torch.cat(state_parts(self.sample_indices)).cpu())
        lengths = torch.tensor([len(part) for part in map_parts])
        part_starts = torch.cumsum(lengths, 0) - lengths
        kept_categories = categories[kept]
        return {
            int(category): CategoryPixels(map_parts, mask_parts, kept[kept_categories == category], part_starts)
            for category in torch.unique(kept_categories)
        }


def compute_pixel_metrics(
    store: PixelScoreStore,
    names: Sequence[str] | Mapping[int, str] | None = None,
    metrics: Sequence[str] = PIXEL_METRIC_NAMES,
    fpr_limit: float = 0.3,
    reasons: dict[Any, dict[str, str]] | None = None,
) -> dict[str | int, dict[str, float | None]]:
    """Every requested pixel metric per category, one category in memory at a time.

    Args:
        store: The filled store (synchronised across processes by its ``compute``).
        names: Category name per id (a sequence indexed by id, or a mapping); ``None`` keys the result by id.
        metrics: Names from :data:`PIXEL_METRIC_NAMES`.
        fpr_limit: FPR limit of both AUPRO variants.
        reasons: If given, filled like the result with why each undefined (``None``) value is undefined
            (:func:`~zsad.metrics.undefined.pixel_undefined_reason`), e.g. ``{"bottle": {"pixel_aupro": "..."}}``.

    Returns:
        ``{category: {metric: value}}``; a value is ``None`` where the metric is undefined for that category.
    """
    unknown = set(metrics) - set(PIXEL_METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown pixel metrics {sorted(unknown)}; choose from {list(PIXEL_METRIC_NAMES)}")
    results: dict[str | int, dict[str, float | None]] = {}
    for category_id, pixels in store.compute().items():
        maps, masks = pixels.maps(), pixels.masks()
        values: dict[str, float | None] = {}
        if any(name in CURVE_METRICS for name in metrics):
            curves = binary_metrics(maps, masks)
            values.update({name: curves[key] for name, key in CURVE_METRICS.items() if name in metrics})
        if "pixel_aupro" in metrics:
            values["pixel_aupro"] = aupro_exact(maps, masks, fpr_limit)
        if "pixel_aupro_cflow" in metrics:
            values["pixel_aupro_cflow"] = aupro_cflow(maps, masks, fpr_limit)
        key = category_id if names is None else names[category_id]
        if reasons is not None:
            reasons[key] = undefined_reasons(values, maps, masks, fpr_limit)
        del maps, masks  # free this category before gathering the next
        results[key] = values
    return results


def undefined_reasons(
    values: Mapping[str, float | None], scores: Tensor, positive: Tensor, fpr_limit: float
) -> dict[str, str]:
    """Why each ``None`` of ``values`` is undefined, for these pixel scores and masks (true = anomalous)."""
    return {
        name: pixel_undefined_reason(name, scores, positive, fpr_limit)
        for name, value in values.items()
        if value is None
    }


def state_parts(state: list[Tensor] | Tensor) -> list[Tensor]:
    """A list state is a list locally but one concatenated tensor after a DDP sync."""
    return list(state) if isinstance(state, list) else [state]


def first_occurrences(sample_indices: Tensor) -> Tensor:
    """Positions of the first row of each distinct sample index, ordered by sample index."""
    order = torch.argsort(sample_indices, stable=True)
    ordered = sample_indices[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first]


def pack_masks(masks: Tensor) -> Tensor:
    """``[B, H, W]`` bool to ``[B, ceil(H·W / 8)]`` uint8, pixel ``8k + j`` of a row in bit ``j`` of byte ``k``."""
    flat = masks.reshape(masks.shape[0], -1)
    padding = -flat.shape[1] % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(flat.shape[0], padding)], dim=1)
    bits = flat.view(flat.shape[0], -1, 8).to(torch.uint8) << _BIT_POSITIONS.to(flat.device)
    return bits.sum(dim=-1, dtype=torch.uint8)


def unpack_masks(packed: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_masks`: ``[B, ceil(H·W / 8)]`` uint8 to ``[B, *shape]`` bool."""
    bits = (packed.unsqueeze(-1) >> _BIT_POSITIONS.to(packed.device)) & 1
    pixels = math.prod(shape)
    return bits.view(packed.shape[0], -1)[:, :pixels].bool().view(packed.shape[0], *shape)


def _gather(parts: Sequence[Tensor], rows: Tensor, part_starts: Tensor, decode: Callable[[Tensor], Tensor]) -> Tensor:
    """Rows ``rows`` of the concatenation of ``parts``, decoded part by part without concatenating everything."""
    part_of_row = torch.searchsorted(part_starts, rows, right=True) - 1
    output: Tensor | None = None
    for part in torch.unique(part_of_row).tolist():
        selected = part_of_row == part
        values = decode(parts[part][(rows[selected] - part_starts[part]).to(parts[part].device)])
        if output is None:
            output = values.new_empty((rows.numel(), *values.shape[1:]))
        output[selected] = values
    if output is None:
        raise ValueError("a category without rows cannot be gathered")
    return output
