"""Evaluation of a test loop: scores in, per-category metrics and macro means out, correct under DDP."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from zsad.data.transforms import load_mask
from zsad.distributed import concatenate_from_processes, in_process_group
from zsad.errors import NonFiniteScoreError
from zsad.metrics.curves import binary_metrics
from zsad.metrics.image_state import ImageScoreStore
from zsad.metrics.native_state import NativePixelStore, native_pixel_metrics
from zsad.metrics.pixel_state import PIXEL_METRIC_NAMES, PixelScoreStore, compute_pixel_metrics
from zsad.metrics.results import ImageScore, Picture, Results, macro_mean
from zsad.metrics.thresholds import ThresholdRule, category_thresholds, thresholds_document
from zsad.metrics.undefined import image_undefined_reason
from zsad.structures import Scores
from zsad.viz.selection import PictureKeeper, Selection

IMAGE_METRIC_NAMES = ("image_auroc", "image_ap", "image_f1max")
_CURVE_KEYS = {"image_auroc": "auroc", "image_ap": "average_precision", "image_f1max": "f1_max"}
Group = tuple[str, str]
Resolution = Literal["eval", "native"]


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

    Attributes:
        threshold_rule: When set (``zsad test`` sets it from its ``--results.threshold_*`` options), :meth:`compute`
            also chooses image and pixel thresholds per category and reports their F1, precision and recall
            (:mod:`zsad.metrics.thresholds`).
        picture_selection: Which images keep their maps for pictures: ``"mixed"`` or ``"worst"``
            (:class:`~zsad.viz.selection.PictureKeeper`).
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
        self.threshold_rule: ThresholdRule | None = None
        self.picture_selection: Selection = "mixed"
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
        self._map_ranges: dict[Group, tuple[float, float]] = {}  # lowest and highest map value per category

    def _group_id(self, group: Group) -> int:
        if group not in self._ids:
            if in_process_group():
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

        Raises:
            NonFiniteScoreError: An image score or map value is NaN or infinite (nothing of the batch is stored).
        """
        size = scores.image_score.shape[0]
        datasets = batch.get("dataset") or [""] * size
        check_finite(scores, batch, datasets)
        ids = torch.tensor([self._group_id((d, c)) for d, c in zip(datasets, batch["category"], strict=True)])
        indices = batch.get("index")
        if indices is None:  # one process and no dataset index: the order of arrival identifies samples
            start = sum(len(part) for part in self.images.scores)
            indices = torch.arange(start, start + size)
        self.images.update(scores.image_score, batch["label"], ids, indices)
        self._track_map_ranges(scores.anomaly_map, datasets, batch["category"])
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

    def _track_map_ranges(self, maps: Tensor, datasets: Sequence[str], categories: Sequence[str]) -> None:
        """Widen each category's lowest and highest map value by this batch's (one device sync per batch)."""
        flat = maps.detach().reshape(maps.shape[0], -1)
        lows, highs = flat.amin(dim=1).float().cpu().tolist(), flat.amax(dim=1).float().cpu().tolist()
        for group, low, high in zip(zip(datasets, categories, strict=True), lows, highs, strict=True):
            old_low, old_high = self._map_ranges.get(group, (low, high))
            self._map_ranges[group] = (min(old_low, low), max(old_high, high))

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
            keeper = self._pictures.setdefault((dataset, category), PictureKeeper(limit, self.picture_selection))
            anomalous, score = bool(batch["label"][i] != 0), float(scores.image_score[i])
            keeper.offer(anomalous, batch["defect_type"][i], partial(picture, i, dataset), score)

    def compute(self) -> Results:
        """Metrics per (dataset, category), macro means per dataset and overall; undefined values left out."""
        image_scores = self.images.compute()
        thresholds = self._thresholds(image_scores)
        pixel_reasons: dict[Any, dict[str, str]] = {}
        if self.resolution == "native":
            pixel_values = {}
            for group, (maps, masks) in self.native.compute().items():
                reasons = pixel_reasons.setdefault(group, {})
                pixel_values[group] = native_pixel_metrics(maps, masks, self.pixel_metrics, self.fpr_limit, reasons)
        else:
            pixel_values = compute_pixel_metrics(self.pixels, None, self.pixel_metrics, self.fpr_limit, pixel_reasons)
        per_category: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        counts: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        undefined: dict[str, dict[str, str]] = defaultdict(dict)
        images: list[ImageScore] = []
        paths = dict(concatenate_from_processes(list(self._paths.items())))
        for group_id, stored in sorted(image_scores.items(), key=lambda item: self.groups[item[0]]):
            dataset, category = self.groups[group_id]
            scores, labels, indices = stored.scores, stored.labels, stored.sample_indices
            images.extend(
                ImageScore(dataset, category, paths.get(index, ""), min(label, 1), score)
                for index, label, score in zip(indices.tolist(), labels.tolist(), scores.tolist(), strict=True)
            )
            values = _image_metrics(scores, labels)
            reasons = {name: image_undefined_reason(labels) for name, value in values.items() if value is None}
            values.update(pixel_values.get(group_id, {}))
            reasons.update(pixel_reasons.get(group_id, {}))
            for name, value in list(values.items()):
                if value is None:
                    undefined[name][f"{dataset}/{category}"] = reasons.get(name, "no value")
                    del values[name]
            per_category[dataset][category] = values  # type: ignore[assignment]
            counts[dataset][category] = {"normal": int((labels == 0).sum()), "anomalous": int((labels != 0).sum())}
        for name, where in undefined.items():
            listed = "; ".join(f"{group} ({reason})" for group, reason in where.items())
            warnings.warn(f"{name} is undefined for {listed}; left out of the means.", stacklevel=2)
        names = [*IMAGE_METRIC_NAMES, *self.pixel_metrics]
        per_dataset = {d: macro_mean(list(cats.values()), names) for d, cats in per_category.items()}
        return Results(
            per_category=dict(per_category),
            per_dataset=per_dataset,
            mean=macro_mean(list(per_dataset.values()), names),
            undefined=dict(undefined),
            counts=dict(counts),
            skipped=_unique(concatenate_from_processes(self._skipped)),
            pictures=[p for group in sorted(self._pictures) for p in self._pictures[group].kept],
            images=images,
            thresholds=thresholds,
            map_ranges=self._gathered_map_ranges(),
        )

    def _gathered_map_ranges(self) -> dict[str, dict[str, list[float]]]:
        """``{dataset: {category: [lowest, highest]}}`` map value, over every process."""
        ranges: dict[str, dict[str, list[float]]] = defaultdict(dict)
        for (dataset, category), (low, high) in concatenate_from_processes(list(self._map_ranges.items())):
            known = ranges[dataset].get(category, [low, high])
            ranges[dataset][category] = [min(known[0], low), max(known[1], high)]
        return {dataset: dict(sorted(categories.items())) for dataset, categories in sorted(ranges.items())}

    def _thresholds(self, image_scores: dict[int, Any]) -> dict[str, Any] | None:
        """Per category, the thresholds :attr:`threshold_rule` chooses and what they give (``None`` without a rule).

        Pixel thresholds are chosen over the category's stored maps (none without pixel metrics).
        """
        rule = self.threshold_rule
        if rule is None or rule.kind == "none":
            return None
        pixels: dict[int, Any] = {}
        if self.pixel_metrics:
            pixels = self.native.compute() if self.resolution == "native" else self.pixels.compute()
        per_category: dict[str, dict[str, Any]] = defaultdict(dict)
        for group_id, stored in sorted(image_scores.items(), key=lambda item: self.groups[item[0]]):
            dataset, category = self.groups[group_id]
            maps = masks = None
            if group_id in pixels:
                entry = pixels[group_id]
                maps, masks = entry if isinstance(entry, tuple) else (entry.maps(), entry.masks())
            per_category[dataset][category] = category_thresholds(
                rule, (dataset, category), stored.scores, stored.labels, maps, masks
            )
            del maps, masks  # one category's maps at a time
        return thresholds_document(rule, dict(per_category))


def check_finite(scores: Scores, batch: dict[str, Any], datasets: Sequence[str]) -> None:
    """Refuse a batch whose image scores or anomaly maps hold NaN or infinity, naming the first such image.

    No metric is defined for them: NaN has no order, and an infinite pixel leaves the cflow AUPRO no thresholds.

    Raises:
        NonFiniteScoreError: The message names the image, its category, and what is not finite.
    """
    image_scores = scores.image_score.detach().reshape(-1)
    maps = scores.anomaly_map.detach().reshape(image_scores.numel(), -1)
    finite = torch.isfinite(image_scores) & torch.isfinite(maps).all(dim=1)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero().flatten().tolist()
    i = bad[0]
    paths = batch.get("path")
    image = f"image '{paths[i]}'" if paths is not None else f"image {i} of the batch"
    if not bool(torch.isfinite(image_scores[i])):
        what = f"its image score is {float(image_scores[i])}"
    else:
        pixel_map = maps[i]
        counts = {"NaN": int(pixel_map.isnan().sum()), "inf": int(pixel_map.isinf().sum())}
        found = " and ".join(f"{count} {kind}" for kind, count in counts.items() if count)
        what = f"its anomaly map holds {found} of {pixel_map.numel()} pixels"
    others = f" ({len(bad) - 1} more image(s) of this batch too)" if len(bad) > 1 else ""
    raise NonFiniteScoreError(
        f"The model scored {image} ({datasets[i] or 'dataset'}/{batch['category'][i]}) with non-finite values: {what}"
        f"{others}. No metric is defined for NaN or inf scores. Usually training diverged (lower the learning rate, "
        f"check the checkpoint) or half precision overflowed (evaluate in 32-bit precision)."
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


def _unique(skipped: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each skipped file once, in first-seen order (the distributed sampler may repeat a sample on two processes)."""
    return list({(entry["path"], entry["problem"]): entry for entry in skipped}.values())
