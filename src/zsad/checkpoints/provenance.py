"""Where a checkpoint's parameters come from, and the leakage check that uses it.

Every zsad checkpoint records, under ``checkpoint["zsad"]["provenance"]``:

- ``kind``: ``"fit"`` (trained by zsad) or ``"import"`` (converted from a released official file by ``zsad import``);
- ``aux``: the auxiliary data sources it was trained on, each ``{dataset, root, categories, split}`` with the
  categories spelled out (``root`` is ``None`` for an imported file: only the benchmark is known);
- ``seed`` and ``config_hash`` (SHA-256 of the canonical JSON of the model's component specs and the protocol);
- for imports, ``source`` (``{path, sha256, format}``), ``method`` and ``preset`` (the configs it is bound to).

``zsad test`` refuses target data that overlap ``aux`` with the protocol's rule
(:func:`zsad.data.protocol.find_overlaps`) and the same ``allow_overlap`` escape, so a checkpoint is never evaluated on
its own training images unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zsad.checkpoints.files import file_sha256
from zsad.checkpoints.settings import SettingChange
from zsad.data.protocol import DataSource, find_overlaps
from zsad.errors import ConfigError, ZSADError

PROVENANCE_KEY = "provenance"


def run_seed() -> int | None:
    """The seed Lightning's ``seed_everything`` set for this process, or ``None`` when unseeded."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


def canonical_hash(*parts: Any) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``parts``."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def training_sources(protocol: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The auxiliary sources of a datamodule's ``protocol()``, with every category spelled out.

    A source that lists no categories (all on disk) is resolved now, while its folder is at hand; if it cannot be
    read, its categories stay ``None``, which the leakage check treats as "every category".
    """
    sources = []
    for source in (protocol or {}).get("aux") or []:
        record = dict(source)
        if record.get("categories") is None:
            try:
                record["categories"] = DataSource(**record).resolved_categories()
            except (ZSADError, OSError, TypeError):
                record["categories"] = None
        sources.append(record)
    return sources


def fit_provenance(protocol: Mapping[str, Any] | None, specs: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """The provenance of a checkpoint written while fitting.

    Args:
        protocol: The datamodule's ``protocol()`` (``None`` when the fit had no zsad datamodule).
        specs: The model's component specs.
        seed: The run's seed, if seeded.
    """
    aux = training_sources(protocol)
    return {"kind": "fit", "aux": aux, "seed": seed, "config_hash": canonical_hash(specs, aux)}


def import_provenance(
    *, source: str, sha256: str, method: str, preset: Sequence[str], aux: list[dict[str, Any]], specs: Mapping[str, Any]
) -> dict[str, Any]:
    """The provenance of a checkpoint converted from a released official file.

    Args:
        source: Path of the released file, as given.
        sha256: Its SHA-256.
        method: The importer that read it (e.g. ``"anomalyclip"``).
        preset: The config files the checkpoint is bound to.
        aux: The data the authors trained it on.
        specs: The component specs of the converted model.
    """
    return {
        "kind": "import",
        "source": {"path": source, "sha256": sha256, "format": method},
        "method": method,
        "preset": list(preset),
        "aux": aux,
        "seed": None,
        "config_hash": canonical_hash(specs, aux),
    }


def overlaps(aux: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> list[str]:
    """Descriptions of every auxiliary/target overlap, by the protocol's rule (see the module docstring)."""
    try:
        return find_overlaps([DataSource(**dict(a)) for a in aux], [DataSource(**dict(t)) for t in targets])
    except TypeError as error:
        raise ConfigError(
            f"A data source record is malformed ({error}); expected dataset, root, categories, split."
        ) from error


def check_no_leakage(provenance: Mapping[str, Any] | None, protocol: Mapping[str, Any] | None, path: str) -> None:
    """Refuse testing a checkpoint on targets that overlap the data it was trained on, unless ``allow_overlap``.

    Args:
        provenance: The checkpoint's provenance (``None`` for checkpoints written before zsad recorded it).
        protocol: The test datamodule's ``protocol()``.
        path: The checkpoint, for the message.

    Raises:
        ConfigError: An overlap, with the datamodule's ``allow_overlap`` unset.
    """
    if not provenance or not protocol or protocol.get("allow_overlap"):
        return
    found = overlaps(provenance.get("aux") or [], protocol.get("targets") or [])
    if found:
        raise ConfigError(
            f"Checkpoint '{path}' was trained on data that this test evaluates: {'; '.join(found)}. Its numbers would "
            "measure training images, not zero-shot transfer. Test other targets (see configs/protocol/), or set the "
            "datamodule's allow_overlap: true to do it on purpose."
        )


UNTRAINED = "untrained"
"""What ``results.json`` says under ``checkpoint`` when a trainable method was evaluated without one, on request."""


def checkpoint_record(path: str | Path, checkpoint: Mapping[str, Any], changes: Sequence[SettingChange]) -> dict:
    """What ``results.json`` records of the checkpoint a model was loaded from.

    Args:
        path: The checkpoint file.
        checkpoint: Its content (:func:`~zsad.checkpoints.files.read_checkpoint`).
        changes: The settings that differ from training (:func:`~zsad.checkpoints.settings.check_test_settings`).

    Returns:
        ``{path, sha256, provenance, trained_model, changes}``: the absolute path, the file's SHA-256, the
        provenance it carries (``None`` for checkpoints older than provenance records), the component specs it was
        trained with, and each accepted difference as ``{key, trained, requested}``.
    """
    return {
        "path": str(Path(path).resolve()),
        "sha256": file_sha256(path),
        "provenance": (checkpoint.get("zsad") or {}).get(PROVENANCE_KEY),
        "trained_model": checkpoint.get("hyper_parameters"),
        "changes": [change.to_dict() for change in changes],
    }
