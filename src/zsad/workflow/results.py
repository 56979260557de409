"""Writing evaluation results: ``results.json``, the per-image ``scores.csv`` and a printed table."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import Callback

from zsad import __version__
from zsad.checkpoints.provenance import run_seed
from zsad.distributed import gather_from_processes
from zsad.errors import WriteError
from zsad.metrics.results import ImageScore, Results
from zsad.metrics.thresholds import ThresholdKind
from zsad.module import ZSADModule, count_trainable
from zsad.workflow.atomic import atomic_write_files, atomic_write_text
from zsad.workflow.raw_maps import MapFormat
from zsad.workflow.run_outputs import RunOutputOptions, RunOutputs

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


def scores_record(path: Path, text: str, results_path: Path) -> dict[str, Any]:
    """What ``results.json`` records of its ``scores.csv``, so that a reader can tell that the two belong together.

    The two files are each replaced atomically, but not together: a kill between the two renames would leave one
    run's ``results.json`` beside another run's ``scores.csv``. ``zsad report`` compares the SHA-256 recorded here
    with the file's (:func:`zsad.workflow.report.runs.check_scores_pair`).

    Args:
        path: The ``scores.csv`` file.
        text: Its content.
        results_path: The ``results.json`` it belongs to.

    Returns:
        ``{file, sha256, images}``: the file name relative to ``results.json``'s folder (absolute when elsewhere),
        the SHA-256 of its bytes and its number of rows.
    """
    name = path.relative_to(results_path.parent) if path.is_relative_to(results_path.parent) else path
    rows = text.count("\n") - 1
    return {"file": str(name), "sha256": hashlib.sha256(text.encode()).hexdigest(), "images": rows}


def trainable_count(module: L.LightningModule) -> int:
    """Trainable scalars of the evaluated model (0 for a training-free method such as WinCLIP)."""
    if isinstance(module, ZSADModule):
        return count_trainable(module)
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


class ResultsWriter(Callback):
    """After ``test``, prints the per-category table and writes ``results.json`` and ``scores.csv`` to the log folder.

    Both files are written atomically, side by side: ``scores.csv`` holds every test image's score and label
    (columns :data:`SCORE_COLUMNS`), which ``zsad report`` draws ROC and PR curves from; ``results.json`` records
    the SHA-256 of that ``scores.csv`` (:func:`scores_record`). The table is printed before anything is written, so
    a full disk loses no result.

    After ``predict`` over a datamodule, writes the image scores to ``scores.csv`` in the log folder (same columns;
    unreadable images are listed, not scored) and says where.

    It also chooses thresholds, writes raw maps and the result gallery on request (:mod:`zsad.workflow.run_outputs`).

    Args:
        filename: Name of the JSON file.
        scores_filename: Name of the per-image scores file, relative to the JSON file's folder.
        threshold_rule: How image and pixel thresholds are chosen per category: ``f1`` (F1-optimal on the test
            images: tuned on the target set, and labelled so), ``normal_quantile``, ``fixed``, ``from_run`` (another
            run's, e.g. one on a labelled validation set) or ``none`` (docs/metrics.md).
        threshold_quantile: Quantile of the normal images' scores for ``normal_quantile``.
        image_threshold: Image threshold of ``fixed``.
        pixel_threshold: Pixel threshold of ``fixed``.
        thresholds_from: The ``results.json`` whose per-category thresholds ``from_run`` uses.
        maps: Raw maps of every test image: ``none``, ``npy`` (float32) or ``png16`` (16-bit PNG, scale recorded).
        maps_folder: Their folder, relative to the JSON file's folder.
        html: Write ``gallery.html`` (a self-contained result gallery) beside the JSON file.
        html_pictures: Figures per category for the gallery when no ``AnomalyMapPictures`` callback is attached
            (the worst-scored normal and anomalous images).
    """

    def __init__(
        self,
        filename: str = "results.json",
        scores_filename: str = "scores.csv",
        threshold_rule: ThresholdKind = "f1",
        threshold_quantile: float = 0.99,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        thresholds_from: str | None = None,
        maps: MapFormat = "none",
        maps_folder: str = "maps",
        html: bool = False,
        html_pictures: int = 8,
    ) -> None:
        self.filename = filename
        self.scores_filename = scores_filename
        self.outputs = RunOutputs(
            RunOutputOptions(
                threshold_rule, threshold_quantile, image_threshold, pixel_threshold, thresholds_from, maps,
                maps_folder, html, html_pictures,
            )
        )  # fmt: skip
        self.last_path: Path | None = None
        self.last_scores_path: Path | None = None
        self._predicted: list[ImageScore] = []
        self._unreadable: list[tuple[str, str]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Set up the thresholds, raw maps and gallery pictures of this test."""
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank asks
        self.outputs.start(trainer, pl_module, folder / self.filename)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write the raw maps of the batch, when asked for."""
        self.outputs.batch_end(pl_module, outputs)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Undo what the gallery's pictures changed on the module."""
        self.outputs.teardown(trainer, pl_module, stage)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Print and write the results of the finished test loop."""
        results = getattr(pl_module, "test_results", None)
        # log_dir broadcasts across processes under DDP, so every rank must read it before rank 0 goes on alone
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if results is None:
            return
        if not trainer.is_global_zero:
            self.outputs.end(trainer, pl_module, folder / self.filename)  # the pictures' collective
            return
        print(f"\n{results.table()}\n", flush=True)  # first: a failed write below must not lose the numbers
        datamodule = getattr(trainer, "datamodule", None)
        path = folder / self.filename  # an absolute filename (set by `zsad grid`) replaces the log folder
        scores_path = path.parent / self.scores_filename
        text = scores_csv(results.images)
        extra = {
            "protocol": datamodule.protocol() if hasattr(datamodule, "protocol") else None,
            "seed": run_seed(),
            "checkpoint": getattr(pl_module, "evaluated_checkpoint", None),
            "trainable_parameters": trainable_count(pl_module),
            "scores": scores_record(scores_path, text, path),
        }
        document = results_document(results, pl_module.component_specs(), extra)
        results_text = json.dumps(document, indent=2, sort_keys=False) + "\n"
        try:
            # both written before either is renamed (a full disk changes neither); scores renamed first, so that a
            # results.json that exists has its scores.csv beside it, whose SHA-256 it records
            self.last_scores_path, self.last_path = atomic_write_files(
                [(scores_path, text.encode()), (path, results_text.encode())]
            )
        except WriteError as error:
            error.args = (f"{error} The results are in the table above.",)
            raise
        print(f"results written to {self.last_path}")
        for line in self.outputs.end(trainer, pl_module, path):
            print(line)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start collecting a fresh prediction run's scores."""
        self._predicted, self._unreadable = [], []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the image scores of a predicted batch (with the batch's dataset, category, path and label)."""
        scores, unreadable = predicted_scores(outputs, batch)
        self._predicted.extend(scores)
        self._unreadable.extend(unreadable)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the predicted scores (gathered from every process) to ``scores.csv`` in the log folder."""
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        gathered = gather_from_processes((self._predicted, self._unreadable))
        if not trainer.is_global_zero:
            return
        images = unique_images(image for scores, _ in gathered for image in scores)
        unreadable = sorted({item for _, skipped in gathered for item in skipped})
        for path, problem in unreadable:
            print(f"skipped {path}: {problem}")
        self.last_scores_path = atomic_write_text(
            (folder / self.filename).parent / self.scores_filename, scores_csv(images)
        )
        skipped = f" ({len(unreadable)} unreadable, listed above)" if unreadable else ""
        print(f"predictions of {len(images)} images{skipped} written to {self.last_scores_path}")


def predicted_scores(outputs: Any, batch: Any) -> tuple[list[ImageScore], list[tuple[str, str]]]:
    """The image scores of one ``predict_step`` output, and the ``(path, problem)`` of unreadable samples.

    Args:
        outputs: ``ZSADModule.predict_step``'s dict (``image_score`` per sample).
        batch: The batch it scored (``path``; ``dataset``, ``category``, ``label`` and ``valid`` where present).
    """
    if not isinstance(outputs, dict) or "image_score" not in outputs or not isinstance(batch, dict):
        return [], []
    values = outputs["image_score"].detach().float().cpu().tolist()
    count = len(values)

    def column(key: str, default: Any) -> list[Any]:
        value = batch.get(key)
        if value is None:
            return [default] * count
        return value.tolist() if isinstance(value, torch.Tensor) else list(value)

    paths, datasets, categories = column("path", ""), column("dataset", ""), column("category", "")
    labels, valid, problems = column("label", ""), column("valid", True), column("problem", "")
    scores, unreadable = [], []
    for index, value in enumerate(values):
        if not valid[index]:  # a placeholder image stands in for an unreadable file: its score means nothing
            unreadable.append((str(paths[index]), str(problems[index])))
            continue
        label = labels[index]
        scores.append(ImageScore(str(datasets[index]), str(categories[index]), str(paths[index]), label, value))
    return scores, unreadable


def unique_images(images: Iterable[ImageScore]) -> list[ImageScore]:
    """Images in order, each once (a distributed sampler repeats samples to give every process as many)."""
    seen: dict[tuple[str, str, str], ImageScore] = {}
    for image in images:
        seen.setdefault((image.dataset, image.category, image.path), image)
    return list(seen.values())
