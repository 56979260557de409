"""A run's config: where its outputs go, and the hash that identifies it regardless of where they go."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FOLDER = "checkpoints"
LOGS_FOLDER = "logs"
LAST_CHECKPOINT = "last.ckpt"
MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def with_output_paths(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A copy of a resolved config whose every output goes into ``run_dir``.

    Sets the trainer's ``default_root_dir``, every ``ModelCheckpoint``'s ``dirpath`` (with ``save_last``, since
    ``test`` reads ``last.ckpt``; one is added when the config has none), a logger's ``save_dir`` (``run_dir/logs``:
    a logger whose log folder is its ``save_dir``, as W&B's, would otherwise get LightningCLI's own ``config.yaml``
    written over the run's), and the results files (absolute names, so they land in ``run_dir`` whatever logger
    decides the log folder).
    """
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    callbacks = _as_list(trainer.get("callbacks"))
    checkpoints = [c for c in callbacks if isinstance(c, dict) and str(c.get("class_path")).endswith("ModelCheckpoint")]
    if not checkpoints:
        checkpoints = [{"class_path": MODEL_CHECKPOINT, "init_args": {}}]
        callbacks += checkpoints
    for checkpoint in checkpoints:
        init_args = checkpoint.setdefault("init_args", {}) or {}
        init_args.update(dirpath=str(run_dir / CHECKPOINT_FOLDER), save_last=True)
        checkpoint["init_args"] = init_args
    trainer["callbacks"] = callbacks
    for logger in _as_list(trainer.get("logger")):
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(run_dir / LOGS_FOLDER)
    results = config.setdefault("results", {}) or {}
    results["filename"] = str(run_dir / RESULTS_FILE)
    if "scores_filename" in results:
        results["scores_filename"] = str(run_dir / SCORES_FILE)
    config["results"] = results
    return config


def strip_output_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config without the keys :func:`with_output_paths` sets (and ``ckpt_path``)."""
    config = copy.deepcopy(config)
    trainer = config.get("trainer") or {}
    trainer.pop("default_root_dir", None)
    for item in [*_as_list(trainer.get("callbacks")), *_as_list(trainer.get("logger"))]:
        if isinstance(item, dict) and isinstance(item.get("init_args"), dict):
            item["init_args"].pop("dirpath", None)
            item["init_args"].pop("save_dir", None)
    results = config.get("results") or {}
    results.pop("filename", None)
    results.pop("scores_filename", None)
    config.pop("ckpt_path", None)
    return config


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a resolved config minus its output paths."""
    canonical = json.dumps(strip_output_paths(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seed_of(config: dict[str, Any]) -> int | None:
    """The run's ``seed_everything`` when it is a number (``true`` draws a random seed, ``false`` sets none)."""
    seed = config.get("seed_everything")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _as_list(value: Any) -> list[Any]:
    """A config value that may be one item, a list of items, or unset."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
