"""Data: disk to samples (image, mask, label, category, defect type, path) and LightningDataModules."""

from zsad.data.datamodule import MVTecDataModule, ZSADDataModule
from zsad.data.datasets import AnomalyDataset, SampleRecord
from zsad.data.synthetic import SyntheticDataModule

__all__ = ["AnomalyDataset", "MVTecDataModule", "SampleRecord", "SyntheticDataModule", "ZSADDataModule"]
