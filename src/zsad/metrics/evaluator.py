"""Evaluation of a test loop: scores in, per-category metrics and macro means out, correct under DDP."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from zsad.data.transforms import load_mask
from zsad.metrics.curves import binary_metrics
from zsad.metrics.image_state import ImageScoreStore
from zsad.metrics.native_state import NativePixelStore, native_pixel_metrics
from zsad.metrics.pixel_state import PIXEL_METRIC_NAMES, PixelScoreStore, compute_pixel_metrics
from zsad.metrics.results import ImageScore, Picture, Results, macro_mean
from zsad.structures import Scores
from zsad.viz.selection import PictureKeeper

IMAGE_METRIC_NAMES = ("image_auroc", "image_ap", "image_f1max")
_CURVE_KEYS = {"image_auroc": "auroc", "image_ap": "average_precision", "image_f1max": "f1_max"}
Group = tuple[str, str]
Resolution = Literal["eval", "native"]
T = TypeVar("T")


class Evaluator(nn.Module):
    """Collects image scores and anomaly maps per (dataset, category) and computes exact metrics.

    The stores are torchmetrics states, so under DDP every process's samples are gathered before computing, and
    samples that the distributed sampler repeats are counted once (by their dataset index). Category ids must be
    the same on every process: give the full list of groups to :meth:`reset` (the module takes it from the
    datamodule's target records).

    Args:
        pixel_metrics: Pixel metric names (see :data:`~zsad.metrics.pixel_state.PIXEL_METRIC_NAMES`); both AUPRO
            variants by default, each named in every table.
        fpr_limit: FPR limit of AUPRO.
        half_precision: Store maps as float16 (halves memory, lossy).
        resolution: ``"eval"`` computes pixel metrics on the square evaluation-size maps and masks, as every
            reference repository does; ``"native"`` upsamples each map (bilinear) to its image's own size and
            compares it with the mask read from disk at that size.
    """

    def __init__(
        self,
        pixel_metrics: Sequence[str] = PIXEL_METRIC_NAMES,
        fpr_limit: float = 0.3,
        half_precision: bool = False,
        resolution: Resolution = "eval",
    ) -> None:
        super().__init__()
        self.pixel_metrics = tuple(pixel_metrics)
        self.fpr_limit = fpr_limit
        self.resolution = resolution
        self.images = ImageScoreStore()
        self.pixels = PixelScoreStore(half_precision=half_precision)
        self.native = NativePixelStore()
        self.reset()

    def reset(self, groups: Sequence[Group] | None = None) -> None:
        """Forget everything; ``groups`` fixes the category ids (required for identical ids across processes)."""
        self.images.reset()
        self.pixels.reset()
        self.native.reset()
        self.groups: list[Group] = sorted(set(groups or []))
        self._ids = {group: i for i, group in enumerate(self.groups)}
        self._pictures: dict[Group, PictureKeeper] = {}
        self._skipped: list[dict[str, str]] = []
        self._paths: dict[int, str] = {}  # sample index -> image path, for the per-image scores of Results.images

    def _group_id(self, group: Group) -> int:
        if group not in self._ids:
            if dist.is_available() and dist.is_initialized():
                raise RuntimeError(f"{group} was not declared to Evaluator.reset; ids would differ across processes")
            self._ids[group] = len(self.groups)
            self.groups.append(group)
        return self._ids[group]

    def skip(self, skipped: Sequence[tuple[str, str]]) -> None:
        """Record samples the loader could not read."""
        self._skipped.extend({"path": path, "problem": problem} for path, problem in skipped)

    def update(
        self, scores: Scores, batch: dict[str, Any], keep_pictures: int = 0, class_names: Sequence[str] = ()
    ) -> None:
        """Add one scored batch (keys ``label``, ``mask``, ``category``, ``dataset``; ``index`` if sharded).

        ``keep_pictures`` images per category keep their maps for pictures (see :mod:`zsad.viz.selection`);
        ``class_names`` name the classes of ``scores.class_map`` in those pictures.
        """
        size = scores.image_score.shape[0]
        datasets = batch.get("dataset") or [""] * size
        ids = torch.tensor([self._group_id((d, c)) for d, c in zip(datasets, batch["category"], strict=True)])
        indices = batch.get("index")
        if indices is None:  # one process and no dataset index: the order of arrival identifies samples
            start = sum(len(part) for part in self.images.scores)
            indices = torch.arange(start, start + size)
        self.images.update(scores.image_score, batch["label"], ids, indices)
        if batch.get("path") is not None:
            self._paths.update(zip(indices.tolist(), batch["path"], strict=True))
        if self.pixel_metrics and self.resolution == "native":
            for i in range(size):
                anomaly_map, mask = native_map_and_mask(scores.anomaly_map[i], batch, i)
                self.native.update(anomaly_map, mask, int(ids[i]), int(indices[i]))
        elif self.pixel_metrics:
            self.pixels.update(scores.anomaly_map.float(), batch["mask"], ids, indices)
        if keep_pictures:
            self._keep_pictures(scores, batch, datasets, keep_pictures, tuple(class_names))

    def _keep_pictures(
        self, scores: Scores, batch: dict[str, Any], datasets: list[str], limit: int, class_names: tuple[str, ...]
    ) -> None:
        """Offer each image to its category's keeper; only the kept ones are copied off the device."""
        masks = batch["mask"].squeeze(1) if batch["mask"].dim() == 4 else batch["mask"]

        def picture(i: int, dataset: str) -> Picture:
            class_map = scores.class_map
            return Picture(
                image=batch["image"][i].detach().float().cpu(),
                mask=masks[i].detach().cpu(),
                anomaly_map=scores.anomaly_map[i].detach().float().cpu(),
                score=float(scores.image_score[i]),
                path=batch["path"][i],
                category=batch["category"][i],
                defect_type=batch["defect_type"][i],
                dataset=dataset,
                label=int(batch["label"][i] != 0),
                class_map=None if class_map is None else class_map[i].detach().to("cpu", torch.int16),
                class_names=class_names if class_map is not None else (),
            )

        for i, (dataset, category) in enumerate(zip(datasets, batch["category"], strict=True)):
            keeper = self._pictures.setdefault((dataset, category), PictureKeeper(limit))
            keeper.offer(bool(batch["label"][i] != 0), batch["defect_type"][i], partial(picture, i, dataset))

    def compute(self) -> Results:
        """Metrics per (dataset, category), macro means per dataset and overall; undefined values left out."""
        image_scores = self.images.compute()
        if self.resolution == "native":
            pixel_values = {
                group: native_pixel_metrics(maps, masks, self.pixel_metrics, self.fpr_limit)
                for group, (maps, masks) in self.native.compute().items()
            }
        else:
            pixel_values = compute_pixel_metrics(self.pixels, None, self.pixel_metrics, self.fpr_limit)
        per_category: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        counts: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        undefined: dict[str, list[str]] = defaultdict(list)
        images: list[ImageScore] = []
        paths = dict(_gather_lists(list(self._paths.items())))
        for group_id, (scores, labels, indices) in sorted(image_scores.items(), key=lambda item: self.groups[item[0]]):
            dataset, category = self.groups[group_id]
            images.extend(
                ImageScore(dataset, category, paths.get(index, ""), min(label, 1), score)
                for index, label, score in zip(indices.tolist(), labels.tolist(), scores.tolist(), strict=True)
            )
            values = _image_metrics(scores, labels)
            values.update(pixel_values.get(group_id, {}))
            for name, value in list(values.items()):
                if value is None:
                    undefined[name].append(f"{dataset}/{category}")
                    del values[name]
            per_category[dataset][category] = values  # type: ignore[assignment]
            counts[dataset][category] = {"normal": int((labels == 0).sum()), "anomalous": int((labels == 1).sum())}
        for name, where in undefined.items():
            warnings.warn(
                f"{name} is undefined (only one class present) for {where}; left out of the means.", stacklevel=2
            )
        names = [*IMAGE_METRIC_NAMES, *self.pixel_metrics]
        per_dataset = {d: macro_mean(list(cats.values()), names) for d, cats in per_category.items()}
        return Results(
            per_category=dict(per_category),
            per_dataset=per_dataset,
            mean=macro_mean(list(per_dataset.values()), names),
            undefined=dict(undefined),
            counts=dict(counts),
            skipped=_gather_lists(self._skipped),
            pictures=[p for group in sorted(self._pictures) for p in self._pictures[group].kept],
            images=images,
        )


def native_map_and_mask(anomaly_map: Tensor, batch: dict[str, Any], i: int) -> tuple[Tensor, Tensor]:
    """Sample ``i``'s map upsampled to its image's size, and its mask read from disk at that size."""
    height, width = (int(v) for v in batch["native_size"][i])
    native = F.interpolate(anomaly_map[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    mask_path = batch["mask_path"][i]
    if not mask_path:
        return native[0, 0], torch.zeros(height, width, dtype=torch.bool)
    mask = load_mask(mask_path, int(batch["mask_threshold"][i]))
    return native[0, 0], torch.from_numpy(np.asarray(mask) > 0)


def _image_metrics(scores: Tensor, labels: Tensor) -> dict[str, float | None]:
    curves = binary_metrics(scores, labels.clamp(max=1))
    return {name: curves[key] for name, key in _CURVE_KEYS.items()}


def _gather_lists(local: list[T]) -> list[T]:
    """Concatenate a small Python list across processes (no-op without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(local)
    gathered: list[list[T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [item for part in gathered for item in (part or [])]
