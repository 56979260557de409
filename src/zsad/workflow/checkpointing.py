"""Checkpoints that survive a kill and resume a fit exactly: atomic writes and saved random states.

A fit resumed with ``--ckpt_path last`` continues the interrupted run step for step when three things hold:

1. the checkpoint it reads is complete: :class:`AtomicCheckpointIO` writes to a hidden temporary file in the same
   folder, flushes it to disk and renames it over the target, so ``last.ckpt`` is always either the previous or
   the new checkpoint; a kill mid-write leaves only ``.last.ckpt.<pid>.tmp``, which Lightning's search for
   ``last*.ckpt`` never matches;
2. the data continue where they stopped (:mod:`zsad.data.resumable`);
3. the random numbers drawn during training continue too (CoPS draws VAE noise every step):
   :class:`RNGStateCheckpoint` stores every process's random states with each checkpoint and puts them back
   right before the resumed fit's first step, after all set-up that draws random numbers.

``zsad fit`` adds both by default (:func:`resumable_trainer_options`); with ``lightning.Trainer`` in Python, pass
``plugins=[AtomicCheckpointIO()]`` and ``callbacks=[RNGStateCheckpoint(), ...]``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from zsad.checkpoints.files import LATEST_LINK
from zsad.distributed import gather_from_processes
from zsad.errors import ConfigError
from zsad.workflow.atomic import atomic_write

logger = logging.getLogger(__name__)

SHARDED_STRATEGY_HINTS = ("fsdp", "deepspeed")
"""Strategies that write checkpoints through their own machinery: zsad leaves their checkpoint I/O alone."""


def is_local(path: str | Path) -> bool:
    """Whether ``path`` is on the local file system (a plain path or ``file://``), not in a remote store."""
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint I/O, but local files are replaced atomically (:func:`atomic_write`).

    Lightning's own writer fills the target through fsspec, whose local "transaction" stages the file in the
    system temporary folder and then *moves* it, which is a copy (not atomic) when that folder is on another
    file system. Remote paths (``s3://`` and the like, whose uploads are atomic) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path``."""
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        local = Path(str(path).removeprefix("file://"))
        atomic_write(local, lambda handle: torch.save(checkpoint, handle))


def collect_rng_states() -> dict[str, Any]:
    """This process's random states: torch (CPU and initialised CUDA devices), NumPy, Python.

    Only tensors, numbers, strings and tuples, so checkpoints still load with ``weights_only=True``.
    """
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back the random states of :func:`collect_rng_states`."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpoint(Callback):
    """Saves every process's random states in each checkpoint; a resumed fit continues the same random streams.

    Lightning restores the model, optimizer, loops and data position, but not the random states, so a resumed
    fit would draw different noise from the step it resumes at. The states are gathered from every process when
    a checkpoint is written (Lightning writes checkpoints from all processes together) and restored at
    ``on_train_start``, right before the first resumed step.
    """

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The random states of every process, in rank order."""
        return {"per_process": gather_from_processes(collect_rng_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states until training starts (set-up still draws random numbers before that)."""
        self.pending = list(state_dict.get("per_process") or []) or None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore this process's saved states, if this fit resumes from a checkpoint that has them."""
        if self.pending is None:
            return
        states, self.pending = self.pending, None
        if len(states) != trainer.world_size:
            logger.warning(
                "The checkpoint was written by %d processes but this fit runs %d: every process continues the "
                "random stream of process 0, so the resumed fit cannot repeat the interrupted one exactly.",
                len(states),
                trainer.world_size,
            )
            restore_rng_states(states[0])
            return
        restore_rng_states(states[trainer.global_rank])


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resumable_trainer_options(trainer_config: dict[str, Any]) -> dict[str, Any]:
    """``plugins`` and ``callbacks`` for a trainer config, with zsad's checkpoint defaults added where missing.

    Adds :class:`AtomicCheckpointIO` unless a checkpoint I/O plugin is configured or the strategy shards its own
    checkpoints (FSDP, DeepSpeed), :class:`RNGStateCheckpoint` unless one is configured, a ``ModelCheckpoint`` that
    keeps ``last.ckpt`` when checkpointing is on and none is configured, and :class:`FreshCheckpointFolder` and
    :class:`LatestCheckpointLink` (each fit's checkpoints in its own folder, ``<default_root_dir>/last.ckpt`` the
    newest).
    """
    plugins, callbacks = _as_list(trainer_config.get("plugins")), _as_list(trainer_config.get("callbacks"))
    checkpointing = trainer_config.get("enable_checkpointing") is not False
    if checkpointing and not any(isinstance(callback, ModelCheckpoint) for callback in callbacks):
        callbacks.append(ModelCheckpoint(save_last=True))
    for kind in (FreshCheckpointFolder, LatestCheckpointLink):
        if not any(isinstance(callback, kind) for callback in callbacks):
            callbacks.append(kind())
    strategy = trainer_config.get("strategy", "auto")
    strategy_name = (strategy if isinstance(strategy, str) else type(strategy).__name__).lower()
    sharded = any(hint in strategy_name for hint in SHARDED_STRATEGY_HINTS)
    if not sharded and not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    if not any(isinstance(callback, RNGStateCheckpoint) for callback in callbacks):
        callbacks.append(RNGStateCheckpoint())
    return {"plugins": plugins or None, "callbacks": callbacks}


def checkpoint_callbacks(trainer: L.Trainer) -> list[ModelCheckpoint]:
    """The trainer's ``ModelCheckpoint`` callbacks."""
    return [callback for callback in trainer.callbacks if isinstance(callback, ModelCheckpoint)]


class FreshCheckpointFolder(Callback):
    """Refuses a fit whose checkpoint folder already holds another fit's checkpoints.

    Lightning would write ``last-v1.ckpt`` beside the earlier fit's ``last.ckpt``, and every recipe that tests
    ``last.ckpt`` would then test the older model. zsad's trainer configs set no ``dirpath``, so each fit writes into
    its own run folder (``<default_root_dir>/lightning_logs/version_N/checkpoints``); this check catches a fixed
    ``dirpath`` (or ``logger: false``, which puts every fit's checkpoints in ``<default_root_dir>/checkpoints``).
    Resuming from a checkpoint inside that folder is allowed: it continues that fit.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Check every checkpoint folder once the trainer has resolved it."""
        resumed_from = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        for callback in checkpoint_callbacks(trainer):
            if callback.dirpath is None or not is_local(callback.dirpath):
                continue
            folder = Path(callback.dirpath)
            earlier = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
            if earlier and not (resumed_from is not None and resumed_from.parent == folder.resolve()):
                names = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
                raise ConfigError(
                    f"The checkpoint folder '{folder}' already holds checkpoints of an earlier fit ({names}); this "
                    "fit would write last-v1.ckpt beside them and leave last.ckpt testing the older model. Drop the "
                    "ModelCheckpoint's dirpath (each fit then gets its own run folder), choose an empty one, remove "
                    f"the old checkpoints, or resume with --ckpt_path {folder / LATEST_LINK}."
                )


class LatestCheckpointLink(Callback):
    """Keeps ``<default_root_dir>/last.ckpt`` pointing at the newest fit's ``last.ckpt``; prints where it is at the end.

    A new fit points the link at its own ``last.ckpt`` when it starts: until its first checkpoint the link leads
    nowhere, so a test run in between fails clearly instead of testing the previous model. A resumed fit moves the
    link only when it saves its first checkpoint, so a resume killed before that resumes from the same file again.
    The link is relative (a moved ``runs`` folder keeps working) and written by process 0 only.
    """

    def __init__(self) -> None:
        self.target: Path | None = None
        self.pending = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Find the ``last.ckpt`` this fit will write; point the link at it unless the fit resumes."""
        callbacks = [c for c in checkpoint_callbacks(trainer) if c.save_last and c.dirpath is not None]
        if not callbacks or not is_local(callbacks[0].dirpath):
            return
        last = callbacks[0]
        self.target = Path(last.dirpath) / f"{last.CHECKPOINT_NAME_LAST}{last.FILE_EXTENSION}"
        self.pending = True
        if trainer.ckpt_path is None:
            self._point_link(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """A resumed fit's first checkpoint moves the link to this fit's ``last.ckpt``."""
        if self.pending:
            self._point_link(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Say which checkpoint the fit wrote last, and the link that tests it."""
        if self.target is None or not trainer.is_global_zero:
            return
        link = Path(trainer.default_root_dir) / LATEST_LINK
        print(f"\nfit wrote {self.target} (also reachable as {link}; test it with --ckpt_path {link})", flush=True)

    def _point_link(self, trainer: L.Trainer) -> None:
        self.pending = False
        link = Path(trainer.default_root_dir) / LATEST_LINK
        if trainer.is_global_zero and self.target is not None and self.target.resolve() != link.resolve():
            replace_link(link, self.target)


def replace_link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, replacing any file or link there atomically."""
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target.absolute(), link.parent.absolute())
    temporary = link.with_name(f".{link.name}.{os.getpid()}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(relative)
    os.replace(temporary, link)
