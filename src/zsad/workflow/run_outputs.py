"""What ``zsad test`` writes besides ``results.json`` and ``scores.csv``: thresholds, raw maps and the result gallery.

These are options of :class:`~zsad.workflow.results.ResultsWriter` (``--results.<option>`` on the command line):

* ``threshold_rule`` (``f1`` by default), ``threshold_quantile``, ``image_threshold``, ``pixel_threshold``,
  ``thresholds_from``: per-category image and pixel thresholds and the F1, precision and recall they give
  (:mod:`zsad.metrics.thresholds`), printed and recorded in ``results.json`` under ``thresholds``;
* ``maps`` (``none``, ``npy`` or ``png16``): every test image's anomaly map (and DAPO's defect-type map) in
  ``<results folder>/maps/<dataset>/<category>/<defect>_<image stem>.*`` (:mod:`zsad.workflow.raw_maps`), at the
  resolution the pixel metrics use (the evaluation size, or each image's own with ``metric_resolution: native``);
* ``html``: ``gallery.html`` beside ``results.json`` (:mod:`zsad.workflow.gallery`), drawn from the figures of the
  ``AnomalyMapPictures`` callback when one is attached, else from ``html_pictures`` figures per category of the
  worst-scored images.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
import torch.nn.functional as F  # noqa: N812

from zsad.errors import ConfigError
from zsad.metrics.thresholds import THRESHOLD_KINDS, ThresholdKind, ThresholdRule, given_thresholds
from zsad.workflow.raw_maps import MapFormat, check_map_format, write_class_map, write_manifest, write_map

GALLERY_FILE = "gallery.html"


@dataclass(frozen=True)
class RunOutputOptions:
    """The options of :class:`~zsad.workflow.results.ResultsWriter` that this module serves (see there)."""

    threshold_rule: ThresholdKind = "f1"
    threshold_quantile: float = 0.99
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    thresholds_from: str | None = None
    maps: MapFormat = "none"
    maps_folder: str = "maps"
    html: bool = False
    html_pictures: int = 8

    def check(self) -> None:
        """Refuse inconsistent options before the test runs.

        Raises:
            ConfigError: An unknown rule or format, a rule without the values it needs, or too few pictures.
        """
        if self.threshold_rule not in THRESHOLD_KINDS:
            raise ConfigError(f"threshold_rule='{self.threshold_rule}' is unknown; use one of {list(THRESHOLD_KINDS)}.")
        if (self.threshold_rule == "from_run") != (self.thresholds_from is not None):
            raise ConfigError(
                "threshold_rule 'from_run' and thresholds_from go together: give thresholds_from=<results.json of a "
                "run on a labelled validation set> with threshold_rule=from_run."
            )
        given = self.image_threshold is not None or self.pixel_threshold is not None
        if given and self.threshold_rule != "fixed":
            raise ConfigError("image_threshold and pixel_threshold are the values of threshold_rule=fixed; set it.")
        check_map_format(self.maps)
        if self.html and self.html_pictures < 1:
            raise ConfigError(f"html_pictures={self.html_pictures}: give at least 1 figure per category.")

    def rule(self, protocol: dict[str, Any] | None) -> ThresholdRule:
        """The threshold rule, with another run's thresholds read for ``from_run``.

        Args:
            protocol: This run's protocol (whether the other run was tuned on the same test images).

        Raises:
            ConfigError: ``thresholds_from`` is unreadable or records no thresholds.
        """
        if self.threshold_rule != "from_run":
            return ThresholdRule(
                self.threshold_rule, self.threshold_quantile, self.image_threshold, self.pixel_threshold
            )
        path = Path(str(self.thresholds_from))
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"thresholds_from '{path}' cannot be read as a results.json ({error}).") from None
        given = given_thresholds(document) if isinstance(document, dict) else {}
        if not given:
            raise ConfigError(
                f"thresholds_from '{path}' records no thresholds; run `zsad test` on the labelled validation set with "
                "--results.threshold_rule=f1 (the default) first."
            )
        source_targets = (document.get("protocol") or {}).get("targets")
        on_target = source_targets is not None and source_targets == (protocol or {}).get("targets")
        return ThresholdRule("from_run", given=given, source=str(path), source_on_target=on_target)


class RunOutputs:
    """Thresholds, raw maps and the gallery of one ``zsad test``, driven by the results writer's hooks.

    Args:
        options: The options.
    """

    def __init__(self, options: RunOutputOptions) -> None:
        options.check()
        self.options = options
        self.maps_root: Path | None = None
        self.map_files = 0
        self.class_names: dict[str, tuple[str, ...]] = {}  # per dataset: DAPO's test words may follow the dataset
        self._pictures: Any = None  # the AnomalyMapPictures whose figures the gallery shows
        self._own_pictures = False

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule, results_path: Path) -> None:
        """Set the evaluator's threshold rule, the maps folder, and the pictures the gallery needs."""
        datamodule = getattr(trainer, "datamodule", None)
        protocol = datamodule.protocol() if hasattr(datamodule, "protocol") else None
        evaluator = getattr(pl_module, "evaluator", None)
        if evaluator is not None:
            evaluator.threshold_rule = self.options.rule(protocol)
        self.map_files = 0
        self.class_names = {}
        self.maps_root = results_path.parent / self.options.maps_folder if self.options.maps != "none" else None
        if self.options.html:
            self._start_pictures(trainer, pl_module)

    def _start_pictures(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from zsad.viz.callback import AnomalyMapPictures

        attached = [callback for callback in trainer.callbacks if isinstance(callback, AnomalyMapPictures)]
        self._own_pictures = not attached
        if attached:
            self._pictures = attached[0]
            return
        self._pictures = AnomalyMapPictures(self.options.html_pictures, logged_per_category=0, selection="worst")
        self._pictures.on_test_start(trainer, pl_module)

    def batch_end(self, pl_module: L.LightningModule, outputs: Any) -> None:
        """Write the raw maps of one scored batch (every process writes the images it scored).

        ``outputs`` is what ``test_step`` returned: one scored part, or ``{"parts": [...]}`` when the batch was
        scored per dataset.
        """
        if self.maps_root is None or not isinstance(outputs, dict):
            return
        for part in outputs.get("parts", [outputs]):
            if "scores" in part:
                self._write_maps(pl_module, part)

    def _write_maps(self, pl_module: L.LightningModule, outputs: dict[str, Any]) -> None:
        """Write the raw maps (and DAPO's class maps) of one scored part of a batch."""
        scores, batch = outputs["scores"], outputs["batch"]
        native = getattr(pl_module, "metric_resolution", "eval") == "native" and "native_size" in batch
        class_names = tuple(outputs.get("class_names") or ())
        if class_names:
            for dataset in set(batch.get("dataset") or [""]):
                self.class_names[dataset] = class_names
        for index, path in enumerate(batch["path"]):
            stem = map_stem(self.maps_root, batch, index, path)
            anomaly_map = scores.anomaly_map[index].detach().float()
            size = tuple(int(v) for v in batch["native_size"][index]) if native else None
            write_map(stem, resized(anomaly_map, size, "bilinear").cpu().numpy(), self.options.maps)
            if scores.class_map is not None:
                class_map = resized(scores.class_map[index], size, "nearest").cpu().numpy()
                write_class_map(stem, class_map, class_names)
            self.map_files += 1

    def end(self, trainer: L.Trainer, pl_module: L.LightningModule, results_path: Path) -> list[str]:
        """After ``results.json``: the maps' manifest and the gallery. Returns lines to print.

        Every process must call it (the pictures ask for the log folder, a collective under DDP).
        """
        figures: list[Path] = []
        if self._pictures is not None:
            figures = self._pictures.save(trainer, pl_module)
        if not trainer.is_global_zero:
            return []
        results = getattr(pl_module, "test_results", None)
        warn_missing_thresholds(getattr(results, "thresholds", None))
        lines = []
        if self.maps_root is not None:
            resolution = "native" if getattr(pl_module, "metric_resolution", "eval") == "native" else "eval"
            write_manifest(self.maps_root, self.options.maps, resolution, class_names_record(self.class_names))
            lines.append(f"raw maps ({self.options.maps}, {resolution} resolution) written to {self.maps_root}")
        if self.options.html:
            from zsad.workflow.gallery.page import write_run_gallery

            gallery = write_run_gallery(results_path, results_path.parent / GALLERY_FILE, figures)
            lines.append(f"result gallery written to {gallery}")
        return lines

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give the module back its picture limit when this writer raised it."""
        if self._own_pictures and self._pictures is not None:
            self._pictures.teardown(trainer, pl_module, stage)
        self._pictures, self._own_pictures = None, False


def class_names_record(by_dataset: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The manifest's class names: one list when every dataset had the same, else a list per dataset too."""
    distinct = set(by_dataset.values())
    if len(distinct) <= 1:
        return {"class_names": list(next(iter(distinct), ()))}
    return {
        "class_names": [],
        "class_names_by_dataset": {name: list(words) for name, words in sorted(by_dataset.items())},
    }


def map_stem(root: Path, batch: dict[str, Any], index: int, path: str) -> Path:
    """``<root>/<dataset>/<category>/<defect folder>_<image stem>`` (the pictures' naming)."""
    name = Path(path)
    dataset = (batch.get("dataset") or [""] * len(batch["path"]))[index]
    category = batch["category"][index]
    return root / dataset / category / f"{name.parent.name}_{name.stem}"


def resized(values: torch.Tensor, size: tuple[int, ...] | None, mode: str) -> torch.Tensor:
    """An ``[H, W]`` map at ``size`` (unchanged for ``None``): bilinear for maps, nearest for class indices."""
    if size is None or tuple(values.shape[-2:]) == tuple(size):
        return values
    options = {"align_corners": False} if mode == "bilinear" else {}
    result = F.interpolate(values[None, None].float(), size=tuple(size), mode=mode, **options)[0, 0]
    return result if mode == "bilinear" else result.to(values.dtype)


def warn_missing_thresholds(thresholds: dict[str, Any] | None) -> None:
    """Warn about categories that ``from_run`` thresholds do not cover (their predictions are left out)."""
    if not thresholds or thresholds.get("rule") != "from_run":
        return
    missing = [
        f"{dataset}/{category}"
        for dataset, categories in thresholds.get("per_category", {}).items()
        for category, levels in categories.items()
        if (levels.get("image") or {}).get("threshold") is None
    ]
    if missing:
        warnings.warn(
            f"{thresholds.get('source')} has no thresholds for {missing}; they get none. Tune them on a run of the "
            "same categories.",
            stacklevel=2,
        )
