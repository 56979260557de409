"""Writing evaluation results: ``results.json``, the per-image ``scores.csv`` and a printed table."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import Callback

from zsad import __version__
from zsad.metrics.results import ImageScore, Results
from zsad.workflow.atomic import atomic_write_text

SCORE_COLUMNS = ("dataset", "category", "path", "label", "score")
"""Columns of ``scores.csv``: one row per test image, label 0 (normal) or 1 (anomalous)."""


def environment() -> dict[str, str]:
    """Versions that results depend on."""
    import open_clip

    return {
        "zsad": __version__,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }


def results_document(results: Results, model_config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
    """Everything ``results.json`` holds: metrics, the components that produced them, and versions."""
    return {**results.to_dict(), "model": model_config, "environment": environment(), **(extra or {})}


def write_results(path: str | Path, document: dict[str, Any]) -> Path:
    """Write a results document as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def scores_csv(images: Iterable[ImageScore]) -> str:
    """The text of ``scores.csv``: a header of :data:`SCORE_COLUMNS`, then one row per image."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    # 9 significant digits round-trip a float32 score exactly
    writer.writerows((i.dataset, i.category, i.path, i.label, f"{i.score:.9g}") for i in images)
    return buffer.getvalue()


def run_seed() -> int | None:
    """The seed Lightning's ``seed_everything`` set for this process, or ``None`` when unseeded."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


class ResultsWriter(Callback):
    """After ``test``, prints the per-category table and writes ``results.json`` and ``scores.csv`` to the log folder.

    Both files are written atomically, side by side: ``scores.csv`` holds every test image's score and label
    (columns :data:`SCORE_COLUMNS`), which ``zsad report`` draws ROC and PR curves from.

    Args:
        filename: Name of the JSON file.
        scores_filename: Name of the per-image scores file, relative to the JSON file's folder.
    """

    def __init__(self, filename: str = "results.json", scores_filename: str = "scores.csv") -> None:
        self.filename = filename
        self.scores_filename = scores_filename
        self.last_path: Path | None = None
        self.last_scores_path: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write and print the results of the finished test loop."""
        results = getattr(pl_module, "test_results", None)
        # log_dir broadcasts across processes under DDP, so every rank must read it before rank 0 goes on alone
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if results is None or not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        extra = {
            "protocol": datamodule.protocol() if hasattr(datamodule, "protocol") else None,
            "seed": run_seed(),
        }
        path = folder / self.filename  # an absolute filename (set by `zsad grid`) replaces the log folder
        # scores first: a results.json that exists always has its scores.csv beside it
        self.last_scores_path = atomic_write_text(path.parent / self.scores_filename, scores_csv(results.images))
        self.last_path = write_results(path, results_document(results, pl_module.component_specs(), extra))
        print(f"\n{results.table()}\n\nresults written to {self.last_path}")
