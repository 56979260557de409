"""``AnomalyMapPictures``: after ``test``, save a figure per kept test image and hand a sample to W&B.

Use it from YAML::

    trainer:
      callbacks:
        - class_path: zsad.viz.callback.AnomalyMapPictures
          init_args: {max_per_category: 8}
"""

from __future__ import annotations

from pathlib import Path

import lightning as L  # noqa: N812
from lightning.pytorch.callbacks import Callback

from zsad.data.transforms import ImageTransform
from zsad.errors import ConfigError
from zsad.metrics.results import Picture
from zsad.viz.pictures import by_category, picture_path, picture_scales, save_pictures
from zsad.viz.scales import ScaleRule, check_scale_rule, module_range
from zsad.viz.selection import SELECTIONS, Selection, select_pictures
from zsad.workflow.tracking import wandb_loggers


class AnomalyMapPictures(Callback):
    """Saves ``<log_dir>/<folder>/<dataset>/<category>/<defect>_<image>.png`` at the end of ``test``.

    Each figure is image | ground truth | anomaly-map overlay | prediction at the category's pixel threshold (the
    run's, ``--results.threshold_rule``; without one, the F1-optimal threshold over its pictured images), plus the
    predicted defect types for methods with a class map (DAPO); see :mod:`zsad.viz.panels`. Overlays share one colour
    scale per run (or per category, or the head's documented range; :mod:`zsad.viz.scales`) shown by a colour bar.
    The module keeps the maps of at most ``max_per_category`` images per category (it raises
    :attr:`~zsad.module.ZSADModule.max_pictures` to that for the test and restores it afterwards): a mix of normal
    and anomalous images of different defect types, or the worst-scored ones (:mod:`zsad.viz.selection`). When a
    W&B logger is attached, the ``logged_per_category`` figures of each category (again a mix) also go to the run as
    ``wandb.Image`` under ``test/pictures/<dataset>/<category>``.

    Under DDP, each process keeps pictures of the images it scored and rank 0 saves its own.

    Args:
        max_per_category: Most figures per category.
        folder: Sub-folder of the trainer's log folder.
        logged_per_category: Figures per category sent to W&B (0 sends none).
        scale: Colour scale of the overlays: ``"run"`` (lowest to highest map value of the whole test),
            ``"category"`` (the same per category) or ``"range"`` (the head's documented range, e.g. 0..4 for
            AnomalyCLIP's sum of four layers).
        vmin: Map value drawn with the lowest colour, replacing the scale's low end.
        vmax: Map value drawn with the highest colour, replacing the scale's high end.
        selection: Which images keep their maps: ``"mixed"`` or ``"worst"`` (highest-scoring normal and
            lowest-scoring anomalous images).

    Raises:
        ConfigError: For a limit below 1, a negative ``logged_per_category``, an unknown scale or selection.
    """

    def __init__(
        self,
        max_per_category: int = 8,
        folder: str = "pictures",
        logged_per_category: int = 2,
        scale: ScaleRule = "run",
        vmin: float | None = None,
        vmax: float | None = None,
        selection: Selection = "mixed",
    ) -> None:
        if max_per_category < 1:
            raise ConfigError(
                f"AnomalyMapPictures max_per_category={max_per_category}: give at least 1, or drop the callback."
            )
        if logged_per_category < 0:
            raise ConfigError(f"AnomalyMapPictures logged_per_category={logged_per_category}: give 0 or more.")
        check_scale_rule(scale)
        if selection not in SELECTIONS:
            raise ConfigError(f"AnomalyMapPictures selection='{selection}': use one of {list(SELECTIONS)}.")
        self.max_per_category = max_per_category
        self.scale = scale
        self.fixed = (vmin, vmax)
        self.selection = selection
        self.folder = folder
        self.logged_per_category = logged_per_category
        self.written: list[Path] = []
        self.folder_path: Path | None = None
        self._module_limit: int | None = None
        self._saved = False

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Make the module keep enough pictures for this test."""
        if not hasattr(pl_module, "max_pictures"):
            raise ConfigError(
                f"AnomalyMapPictures needs a ZSADModule (with max_pictures); got {type(pl_module).__name__}."
            )
        self._module_limit = pl_module.max_pictures
        self._saved = False
        self.written = []
        pl_module.max_pictures = max(pl_module.max_pictures, self.max_per_category)
        evaluator = getattr(pl_module, "evaluator", None)
        if evaluator is not None:
            evaluator.picture_selection = self.selection

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the figures of the finished test and send a sample to W&B."""
        self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Path]:
        """Save the figures of the finished test once; a second call returns the same files.

        The result gallery calls it when it needs the figures before this callback's own ``on_test_end``.
        """
        folder = Path(trainer.log_dir or trainer.default_root_dir) / self.folder  # a broadcast: every rank asks
        self.folder_path = folder
        results = getattr(pl_module, "test_results", None)
        if self._saved or results is None or not trainer.is_global_zero:
            return self.written
        self._saved = True
        pictures = select_pictures(results.pictures, self.max_per_category, self.selection)
        scales = picture_scales(pictures, self.scale, results.map_ranges, module_range(pl_module), self.fixed)
        transform = image_transform(trainer)
        self.written = save_pictures(pictures, folder, transform, True, scales, results.thresholds)
        if self.logged_per_category:
            self._log_to_wandb(trainer, pictures, folder)
        return self.written

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give the module back its own picture limit."""
        if self._module_limit is not None:
            pl_module.max_pictures = self._module_limit
            self._module_limit = None

    def _log_to_wandb(self, trainer: L.Trainer, pictures: list[Picture], folder: Path) -> None:
        loggers = wandb_loggers(trainer.loggers)
        for (dataset, category), group in by_category(pictures).items():
            sample = select_pictures(group, self.logged_per_category)  # normal and anomalous alike
            paths = [str(picture_path(folder, picture, per_dataset=True)) for picture in sample]
            captions = [Path(path).name for path in paths]
            for logger in loggers:
                logger.log_image(key=f"test/pictures/{dataset}/{category}", images=paths, caption=captions)


def image_transform(trainer: L.Trainer) -> ImageTransform | None:
    """The transform of the test dataset (to undo its normalisation), or ``None`` for the default statistics."""
    loaders = trainer.test_dataloaders
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    for loader in loaders:
        transform = getattr(getattr(loader, "dataset", None), "image_transform", None)
        if isinstance(transform, ImageTransform):
            return transform
    return None
