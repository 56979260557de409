"""Data: disk to samples (image, mask, label, category, defect type, path) and LightningDataModules.

Importing this package registers every benchmark reader (``DATASETS``) and datamodule (``DATAMODULES``).
"""

from zsad.data.datamodule import BenchmarkDataModule, MVTecDataModule, ZSADDataModule
from zsad.data.datasets import AnomalyDataset, SampleRecord, folder, industrial, medical, polyps  # noqa: F401  (registration side effects)
from zsad.data.protocol import DataSource, ProtocolDataModule
from zsad.data.synthetic import SyntheticDataModule

__all__ = [
    "AnomalyDataset",
    "BenchmarkDataModule",
    "DataSource",
    "MVTecDataModule",
    "ProtocolDataModule",
    "SampleRecord",
    "SyntheticDataModule",
    "ZSADDataModule",
]
