"""Experiment tracking: the resolved CLI config and the test results go to the trainer's loggers.

Every logger receives the resolved config (``log_hyperparams``); Weights & Biases receives it as the run's config,
and after ``test`` the per-category metrics and macro means in the run summary plus a results table. Nothing here
imports ``wandb`` unless a :class:`~lightning.pytorch.loggers.WandbLogger` is attached, so runs with other loggers
or none are unaffected. See docs/tracking.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L  # noqa: N812
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger

from zsad.metrics.results import MEAN, Results

RESULTS_TABLE = "results"
"""Key (after the stage prefix) of the W&B results table."""


def wandb_loggers(loggers: Sequence[Logger]) -> list[WandbLogger]:
    """The W&B loggers among ``loggers`` (usually ``trainer.loggers``)."""
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def anchor_wandb_folders(loggers: Sequence[Logger]) -> None:
    """Make each W&B logger's folder absolute before its run starts.

    wandb writes the run files from a service process that may outlive the run, and that process resolves a
    relative folder against its own working directory: a second CLI call in the same Python process from another
    folder (a notebook, a test) would otherwise write its ``.wandb`` file under the first call's folder.
    """
    for logger in wandb_loggers(loggers):
        folder = logger._wandb_init.get("dir")  # Lightning keeps the init arguments until the run starts
        if folder is not None and logger._experiment is None:
            logger._wandb_init["dir"] = logger._save_dir = os.path.abspath(folder)


def log_config(loggers: Sequence[Logger], config: dict[str, Any]) -> None:
    """Send the resolved config to every logger: W&B as the run's config, others through ``log_hyperparams``.

    W&B gets the nested dict as it is (``allow_val_change``: a resumed run may be re-configured), so that every
    option is a filterable ``model.prompt.init_args.n_ctx``-style key of the run.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update(config, allow_val_change=True)
        else:
            logger.log_hyperparams(config)


def results_table(results: Results) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the results table: one row per category, then each dataset's mean and the overall mean.

    Undefined metrics are ``None`` (empty cells).
    """
    metrics = list(dict.fromkeys(m for values in results.per_dataset.values() for m in values))
    rows = []
    for dataset, categories in results.per_category.items():
        rows.extend([dataset, category, *(values.get(m) for m in metrics)] for category, values in categories.items())
        rows.append([dataset, MEAN, *(results.per_dataset.get(dataset, {}).get(m) for m in metrics)])
    if len(results.per_dataset) > 1:
        rows.append([MEAN, MEAN, *(results.mean.get(m) for m in metrics)])
    return ["dataset", "category", *metrics], rows


def log_results(loggers: Sequence[Logger], results: Results, stage: str = "test") -> None:
    """Put evaluation results into every W&B run: summary keys and a table; other loggers are left alone.

    Summary keys are ``<stage>/<dataset>/<category>/<metric>``, ``<stage>/<dataset>/mean/<metric>`` and
    ``<stage>/mean/<metric>`` (the names the module logs them under), the table is ``<stage>/results``.
    """
    runs = [logger.experiment for logger in wandb_loggers(loggers)]
    if not runs:
        return
    import wandb

    summary = {f"{stage}/{key}": value for key, value in results.flat().items()}
    columns, rows = results_table(results)
    for run in runs:
        run.summary.update(summary)
        run.log({f"{stage}/{RESULTS_TABLE}": wandb.Table(columns=columns, data=rows)})


def resolved_config(parser: Any, config: Any) -> dict[str, Any]:
    """The fully resolved config of a LightningCLI run as plain data (what ``config.yaml`` holds)."""
    return yaml.safe_load(parser.dump(config, skip_none=False))


class TrackingSaveConfig(SaveConfigCallback):
    """LightningCLI's config saver, which also tracks the run.

    It still writes ``config.yaml`` to the log folder; in addition (on rank 0) the resolved config goes to every
    logger (:func:`log_config`), and after ``test`` the results go to W&B (:func:`log_results`).
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Send the resolved config to the trainer's loggers (called once, on rank 0, at set-up)."""
        if trainer.loggers:
            log_config(trainer.loggers, resolved_config(self.parser, self.config))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Send the test results of the module (``test_results``) to W&B."""
        results = getattr(pl_module, "test_results", None)
        if results is not None and trainer.is_global_zero:
            log_results(trainer.loggers, results, "test")
