"""A callback that parks a fit at a known step so that a test can kill it there (imported by the zsad subprocess)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.pytorch.callbacks import Callback


class PauseAtStep(Callback):
    """Before the batch after optimizer step ``step`` (whose checkpoint is written), touch ``marker`` and wait.

    Lightning runs checkpoint callbacks after every other callback, so at the next batch's start the checkpoint of
    ``step`` is on disk and the fit is in the middle of its epoch. It parks once: a fit resumed from that
    checkpoint, which reaches ``step`` again with ``marker`` already there, goes on.
    """

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Park forever once ``step`` optimizer steps are done, unless ``marker`` says it parked before."""
        if trainer.global_step == self.step and not Path(self.marker).exists():
            Path(self.marker).touch()
            while True:
                time.sleep(1)
