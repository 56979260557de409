"""Endoscopy benchmarks of the ZSAD literature: Kvasir-SEG, CVC-ClinicDB, CVC-ColonDB and Endo.

Every image shows a polyp, so only pixel-level metrics are defined (``image_level = False``, label 1 for all).
Each set is a single category named after the dataset, with a ``test`` split only: by ZSAD convention these sets
are evaluation-only (methods.md §10). Images pair with masks by stem, whatever the suffix or its case; JPEG masks
are thresholded at 127 (:data:`~zsad.data.datasets.medical.JPEG_MASK_THRESHOLD`), PNG and TIFF masks at 0.

Importing this module registers ``kvasir``, ``clinicdb``, ``colondb`` and ``endo`` in ``DATASETS`` and
``DATAMODULES``.
"""

from __future__ import annotations

from zsad.data.datasets.medical import JPEG_MASK_THRESHOLD, MedicalDataModule, PairedBenchmark
from zsad.registry import DATAMODULES, DATASETS


@DATASETS.register("kvasir")
class KvasirSEG(PairedBenchmark):
    """Kvasir-SEG: 1000 colonoscopy images of polyps with segmentation masks (pixel-level only, evaluation-only).

    Layout::

        <root>/images/<id>.jpg
        <root>/masks/<id>.jpg      same name as the image

    The masks are JPEGs, so their edges carry compression noise: values above 127 are the polyp
    (``mask_threshold = 127``). The archive's ``kavsir_bboxes.json`` is ignored. One category ``kvasir``, split
    ``test``.

    Download: https://datasets.simula.no/kvasir-seg/
    """

    name = "kvasir"
    title = "Kvasir-SEG"
    defect_type = "polyp"
    mask_threshold = JPEG_MASK_THRESHOLD
    download = "https://datasets.simula.no/kvasir-seg/"
    layout = "<root>/images/<id>.jpg with JPEG masks <root>/masks/<id>.jpg of the same name"


@DATASETS.register("clinicdb")
class CVCClinicDB(PairedBenchmark):
    """CVC-ClinicDB: 612 colonoscopy frames of polyps with masks (pixel-level only, evaluation-only).

    Two layouts are recognised, the first whose folders exist is read:

    - the official release (also the ``TIF/`` or ``PNG/`` folder of the Kaggle archive)::

        <root>/Original/<n>.tif
        <root>/Ground Truth/<n>.tif

    - the common re-packaging (e.g. PraNet's ``TestDataset/CVC-ClinicDB``)::

        <root>/images/<n>.png
        <root>/masks/<n>.png

    Masks pair with images by stem; one category ``clinicdb``, split ``test``.

    Download: https://polyp.grand-challenge.org/CVCClinicDB/
    """

    name = "clinicdb"
    title = "CVC-ClinicDB"
    defect_type = "polyp"
    download = "https://polyp.grand-challenge.org/CVCClinicDB/"
    layout = "<root>/Original/<n>.tif with masks '<root>/Ground Truth/<n>.tif', or <root>/images + <root>/masks"
    pair_layouts = (("Original", "Ground Truth", ""), ("images", "masks", ""))


@DATASETS.register("colondb")
class CVCColonDB(PairedBenchmark):
    """CVC-ColonDB: 380 colonoscopy frames of polyps with masks (pixel-level only, evaluation-only).

    Layout (as re-packaged by PraNet's ``TestDataset/CVC-ColonDB`` and the ZSAD repositories)::

        <root>/images/<n>.png
        <root>/masks/<n>.png

    Masks pair with images by stem, whatever the suffixes. One category ``colondb``, split ``test``.

    Download: http://vi.cvc.uab.es/colon-qa/cvccolondb/ (re-packaged: https://github.com/DengPingFan/PraNet)
    """

    name = "colondb"
    title = "CVC-ColonDB"
    defect_type = "polyp"
    download = (
        "http://vi.cvc.uab.es/colon-qa/cvccolondb/ (images/ + masks/ as in https://github.com/DengPingFan/PraNet)"
    )
    layout = "<root>/images/<n>.<ext> with masks <root>/masks/<n>.<ext> of the same stem"


@DATASETS.register("endo")
class Endo(PairedBenchmark):
    """Endo: EndoTect 2020 / HyperKvasir polyp segmentation, as used by AdaCLIP and AnomalyCLIP follow-ups.

    Pixel-level only, evaluation-only. Layout (HyperKvasir's ``segmented-images`` folder)::

        <root>/images/<id>.jpg
        <root>/masks/<id>.jpg

    Masks pair with images by stem; JPEG masks are thresholded at 127, PNG masks at 0. One category ``endo``,
    split ``test``.

    Download: https://datasets.simula.no/hyper-kvasir/ (EndoTect challenge: https://endotect.com/)
    """

    name = "endo"
    title = "Endo"
    defect_type = "polyp"
    download = "https://datasets.simula.no/hyper-kvasir/ (segmented-images)"
    layout = "<root>/images/<id>.<ext> with masks <root>/masks/<id>.<ext> of the same stem"


@DATAMODULES.register("kvasir")
class KvasirDataModule(MedicalDataModule):
    """Kvasir-SEG (pixel-level): polyp segmentation with JPEG masks."""

    benchmark = KvasirSEG


@DATAMODULES.register("clinicdb")
class ClinicDBDataModule(MedicalDataModule):
    """CVC-ClinicDB (pixel-level): polyp segmentation."""

    benchmark = CVCClinicDB


@DATAMODULES.register("colondb")
class ColonDBDataModule(MedicalDataModule):
    """CVC-ColonDB (pixel-level): polyp segmentation."""

    benchmark = CVCColonDB


@DATAMODULES.register("endo")
class EndoDataModule(MedicalDataModule):
    """Endo (pixel-level): EndoTect / HyperKvasir polyp segmentation."""

    benchmark = Endo
