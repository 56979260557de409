"""Writing evaluation results: ``results.json`` and a printed table."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import Callback

from zsad import __version__
from zsad.metrics.results import Results


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
        temporary = handle.name
    os.replace(temporary, path)
    return path


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


class ResultsWriter(Callback):
    """After ``test``, prints the per-category table and writes ``results.json`` to the trainer's log folder.

    Args:
        filename: Name of the JSON file.
    """

    def __init__(self, filename: str = "results.json") -> None:
        self.filename = filename
        self.last_path: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write and print the results of the finished test loop."""
        results = getattr(pl_module, "test_results", None)
        if results is None or not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        datamodule = getattr(trainer, "datamodule", None)
        extra = {
            "protocol": datamodule.protocol() if hasattr(datamodule, "protocol") else None,
            "seed": os.environ.get("PL_GLOBAL_SEED"),
        }
        self.last_path = write_results(
            folder / self.filename, results_document(results, pl_module.component_specs(), extra)
        )
        print(f"\n{results.table()}\n\nresults written to {self.last_path}")
