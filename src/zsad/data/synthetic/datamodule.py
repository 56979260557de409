"""The synthetic data as a datamodule: some categories train the prompts, held-out ones are evaluated."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from zsad.data.datamodule import MVTecDataModule
from zsad.data.datasets.base import SampleRecord
from zsad.data.synthetic.generator import SyntheticSpec, generate_synthetic_dataset
from zsad.registry import DATAMODULES

DEFAULT_AUX = ("stripes", "weave", "disc", "tile")
DEFAULT_TARGETS = ("checker", "grain", "ring", "capsule")


def default_cache_dir() -> Path:
    """``$ZSAD_CACHE_DIR`` or ``~/.cache/zsad``."""
    return Path(os.environ.get("ZSAD_CACHE_DIR", Path.home() / ".cache" / "zsad"))


@DATAMODULES.register("synthetic")
class SyntheticDataModule(MVTecDataModule):
    """Procedural MVTec-style categories, generated on first use and read back with the MVTec loader.

    Args:
        root: Where to write the data; ``None`` uses a folder per spec under :func:`default_cache_dir`.
        aux_categories: Categories whose test split trains the prompts.
        target_categories: Held-out categories evaluated zero-shot.
        generated_size: Side of the generated PNGs in pixels (images are resized to ``image_size`` on load).
        n_test_good: Normal test images per category.
        n_test_per_defect: Test images per defect type per category.
        seed: Generator seed.
        allow_overlap: See :class:`~zsad.data.datamodule.MVTecDataModule`.
        image_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        eval_batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        num_workers: See :class:`~zsad.data.datamodule.ZSADDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        aux_categories: Sequence[str] | None = DEFAULT_AUX,
        target_categories: Sequence[str] | None = DEFAULT_TARGETS,
        generated_size: int = 64,
        n_test_good: int = 6,
        n_test_per_defect: int = 2,
        seed: int = 0,
        allow_overlap: bool = False,
        image_size: int = 64,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        self.spec = SyntheticSpec(
            categories=tuple(dict.fromkeys([*(aux_categories or ()), *(target_categories or ())])),
            image_size=generated_size,
            n_test_good=n_test_good,
            n_test_per_defect=n_test_per_defect,
            seed=seed,
        )
        if root is None:
            digest = hashlib.sha1(json.dumps(asdict(self.spec), sort_keys=True).encode()).hexdigest()[:12]
            root = str(default_cache_dir() / f"synthetic-{digest}")
        super().__init__(
            root=root,
            aux_categories=aux_categories,
            target_categories=target_categories,
            allow_overlap=allow_overlap,
            dataset_name="synthetic",
            image_size=image_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )

    def prepare_data(self) -> None:
        """Generate the images (a no-op when the same spec is already on disk)."""
        generate_synthetic_dataset(self.root, self.spec)

    def aux_records(self) -> list[SampleRecord]:
        """Auxiliary samples, generating the data first if needed."""
        self.prepare_data()
        return super().aux_records()

    def target_records(self) -> list[SampleRecord]:
        """Target samples, generating the data first if needed."""
        self.prepare_data()
        return super().target_records()
