"""Readers that turn benchmark folders into :class:`~zsad.data.datasets.base.SampleRecord` lists."""

from zsad.data.datasets.base import AnomalyDataset, SampleRecord
from zsad.data.datasets.mvtec import mvtec_categories, mvtec_records

__all__ = ["AnomalyDataset", "SampleRecord", "mvtec_categories", "mvtec_records"]
