"""Industrial benchmarks of the ZSAD literature beyond MVTec AD, registered in one import.

Importing this module registers, in both ``DATASETS`` and ``DATAMODULES``:

- ``mvtec3d`` MVTec 3D-AD RGB, ``mpdd`` MPDD, ``dtd`` DTD-Synthetic (:mod:`zsad.data.datasets.mvtec_family`);
- ``visa`` VisA (:mod:`zsad.data.datasets.visa`);
- ``btad`` BTAD (:mod:`zsad.data.datasets.btad`);
- ``ksdd`` KolektorSDD v1 (:mod:`zsad.data.datasets.kolektor`);
- ``dagm`` DAGM 2007 (:mod:`zsad.data.datasets.dagm`);
- ``realiad`` Real-IAD (:mod:`zsad.data.datasets.realiad`).

Each module's docstring documents its benchmark's on-disk layout and download page. The modules import
:mod:`zsad.data.datamodule`, so import them after it (e.g. from ``zsad/data/__init__.py``), not from
``zsad/data/datasets/__init__.py``, which :mod:`zsad.data.datamodule` itself imports.
"""

from __future__ import annotations

from zsad.data.datasets.btad import BTAD, BTADDataModule
from zsad.data.datasets.dagm import DAGM2007, DAGMDataModule
from zsad.data.datasets.kolektor import KolektorSDD, KolektorSDDDataModule
from zsad.data.datasets.mvtec_family import (
    MPDD,
    DTDSynthetic,
    DTDSyntheticDataModule,
    MPDDDataModule,
    MVTec3DAD,
    MVTec3DDataModule,
)
from zsad.data.datasets.realiad import RealIAD, RealIADDataModule
from zsad.data.datasets.visa import VisA, VisADataModule

INDUSTRIAL_BENCHMARKS = (MVTec3DAD, VisA, BTAD, MPDD, DTDSynthetic, KolektorSDD, DAGM2007, RealIAD)
"""Every benchmark class this module registers."""

__all__ = [
    "BTAD",
    "DAGM2007",
    "INDUSTRIAL_BENCHMARKS",
    "MPDD",
    "BTADDataModule",
    "DAGMDataModule",
    "DTDSynthetic",
    "DTDSyntheticDataModule",
    "KolektorSDD",
    "KolektorSDDDataModule",
    "MPDDDataModule",
    "MVTec3DAD",
    "MVTec3DDataModule",
    "RealIAD",
    "RealIADDataModule",
    "VisA",
    "VisADataModule",
]
