"""Seeded, procedural MVTec-style anomaly data for tests, demos and transfer benchmarks."""

from zsad.data.synthetic.datamodule import SyntheticDataModule
from zsad.data.synthetic.generator import (
    DEFECT_LOOKS,
    DEFECT_TYPES,
    OBJECT_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    TEXTURE_CATEGORIES,
    SyntheticSpec,
    generate_synthetic_dataset,
)

__all__ = [
    "DEFECT_LOOKS",
    "DEFECT_TYPES",
    "OBJECT_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "TEXTURE_CATEGORIES",
    "SyntheticDataModule",
    "SyntheticSpec",
    "generate_synthetic_dataset",
]
