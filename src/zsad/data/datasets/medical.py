"""Medical benchmarks of the ZSAD literature: the image-level sets (HeadCT, BrainMRI, Br35H) and ISIC 2016.

Each medical set is a single category named after the dataset, with a ``test`` split only: by ZSAD convention
these sets are evaluation-only (the prompts train on an industrial auxiliary set, methods.md §10), so no
train/test division is read. The polyp sets (Kvasir-SEG, CVC-ClinicDB, CVC-ColonDB, Endo) are in
:mod:`zsad.data.datasets.polyps`; this module also holds the image/mask pairing they share.

Importing this module registers ``headct``, ``brainmri``, ``br35h`` and ``isic`` in ``DATASETS`` and
``DATAMODULES``.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark, list_images
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

JPEG_MASK_THRESHOLD = 127
"""JPEG masks carry compression noise around 0 and 255: values above this are anomalous."""
JPEG_SUFFIXES = (".jpg", ".jpeg")


def visible_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` (any case of suffix); hidden files such as macOS ``._x.png`` forks are not read."""
    return list_images(folder)


def mask_threshold_for(mask: Path | None, default: int) -> int:
    """Threshold of one mask file: :data:`JPEG_MASK_THRESHOLD` for JPEG masks, else ``default``."""
    if mask is not None and mask.suffix.lower() in JPEG_SUFFIXES:
        return max(default, JPEG_MASK_THRESHOLD)
    return default


def _examples(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(f"'{p}'" for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    """Map stem to file; two files that differ only by suffix are ambiguous."""
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise DataError(
                f"Two {what} files share the name '{path.stem}': '{found[path.stem]}' and '{path}'. Keep one of them."
            )
        found[path.stem] = path
    return found


def pair_images_with_masks(
    image_dir: Path, mask_dir: Path, mask_suffix: str = "", title: str = ""
) -> list[tuple[Path, Path]]:
    """Pair every image with its mask by stem (any image suffix, in any case).

    The mask of ``<image_dir>/<stem>.<ext>`` is ``<mask_dir>/<stem><mask_suffix>.<ext2>``.

    Args:
        image_dir: Folder of images.
        mask_dir: Folder of masks.
        mask_suffix: Appended to the image stem to form the mask stem (``"_Segmentation"`` for ISIC).
        title: Dataset name for messages.

    Returns:
        ``(image, mask)`` pairs sorted by image name.

    Raises:
        DataError: A missing folder, an image without a mask or a mask without an image (each names the file and
            where its partner was expected), or two files with the same stem.
    """
    prefix = f"{title}: " if title else ""
    for folder, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not folder.is_dir():
            raise DataError(f"{prefix}the {what} folder '{folder}' does not exist.")
    images = _by_stem(visible_images(image_dir), "image")
    masks = _by_stem(visible_images(mask_dir), "mask")
    lonely_images = [path for stem, path in images.items() if stem + mask_suffix not in masks]
    if lonely_images:
        first = lonely_images[0]
        raise DataError(
            f"{prefix}{len(lonely_images)} image(s) have no mask: {_examples(lonely_images)}. The mask of "
            f"'{first.name}' was expected at '{mask_dir / (first.stem + mask_suffix)}.<png|jpg|tif|...>'. Add the "
            f"masks or remove those images."
        )
    wanted = {stem + mask_suffix for stem in images}
    lonely_masks = [path for stem, path in masks.items() if stem not in wanted]
    if lonely_masks:
        first = lonely_masks[0]
        stem: str | None = first.stem
        if mask_suffix:
            stem = first.stem[: -len(mask_suffix)] if first.stem.endswith(mask_suffix) else None
        expected = (
            f"its image was expected at '{image_dir / stem}.<png|jpg|tif|...>'"
            if stem is not None
            else f"mask names must be '<image stem>{mask_suffix}.<ext>'"
        )
        raise DataError(
            f"{prefix}{len(lonely_masks)} mask(s) have no image: {_examples(lonely_masks)}; for '{first.name}' "
            f"{expected}. Add the images or remove those masks."
        )
    return [(path, masks[stem + mask_suffix]) for stem, path in sorted(images.items(), key=lambda kv: kv[1].name)]


class MedicalBenchmark(Benchmark):
    """A medical set: one category named after the dataset, evaluation-only (``test`` split)."""

    domain = "medical"
    splits = ("test",)
    defect_type: ClassVar[str] = "anomaly"
    """Defect type of the anomalous images."""

    def find_categories(self) -> list[str]:
        """``[name]`` when any folder of the layout is present, else none."""
        return [self.name] if any((self.root / folder).exists() for folder in self.markers()) else []

    def markers(self) -> tuple[str, ...]:
        """Files or folders whose presence under the root identifies the layout."""
        return ()

    def records(self, category: str, split: str = "test") -> list[SampleRecord]:
        """Samples, with JPEG masks thresholded at :data:`JPEG_MASK_THRESHOLD` (see :meth:`Benchmark.records`)."""
        return [
            replace(r, mask_threshold=mask_threshold_for(r.mask_path, self.mask_threshold))
            for r in super().records(category, split)
        ]


class NoYesBenchmark(MedicalBenchmark):
    """Image-level set stored as ``<root>/no`` (normal) and ``<root>/yes`` (anomalous)."""

    pixel_level = False
    defect_type = "tumor"

    def markers(self) -> tuple[str, ...]:
        """The ``no`` and ``yes`` folders."""
        return ("no", "yes")

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Every image of ``no/`` (label 0) and ``yes/`` (label 1); no masks."""
        records = []
        for folder, label in (("no", 0), ("yes", 1)):
            path = self.root / folder
            if not path.is_dir():
                raise DataError(f"{self.title}: '{path}' does not exist. {self.describe_layout()}")
            defect = NORMAL if label == 0 else self.defect_type
            records += [SampleRecord(p, label, category, defect, None, self.name) for p in visible_images(path)]
        return records


@DATASETS.register("brainmri")
class BrainMRI(NoYesBenchmark):
    """BrainMRI: brain MRI slices with or without a tumour (image-level only, evaluation-only).

    Layout (the Kaggle archive's ``brain_tumor_dataset/`` folder)::

        <root>/no/*.jpg    98 normal slices
        <root>/yes/*.jpg   155 slices with a tumour

    File names contain spaces and upper-case suffixes (``1 no.jpeg``, ``N1.JPG``, ``Y92.png``); every image is
    read. Images mix L, RGB, RGBA and P modes and sizes. No masks. One category ``brainmri``, split ``test``.

    Download: https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection
    """

    name = "brainmri"
    title = "BrainMRI"
    download = "https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection"
    layout = "<root>/no/<image> (normal) and <root>/yes/<image> (tumour), any image suffix"


@DATASETS.register("br35h")
class Br35H(NoYesBenchmark):
    """Br35H: brain MRI slices with or without a tumour, 2021 release (image-level only, evaluation-only).

    Layout::

        <root>/no/*.jpg    1500 normal slices (no0.jpg ...)
        <root>/yes/*.jpg   1500 slices with a tumour (y0.jpg ...)

    The archive's unlabelled ``pred/`` folder is ignored. No masks. One category ``br35h``, split ``test``.

    Download: https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection
    """

    name = "br35h"
    title = "Br35H"
    download = "https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection"
    layout = "<root>/no/<image> (normal) and <root>/yes/<image> (tumour); pred/ is ignored"


@DATASETS.register("headct")
class HeadCT(MedicalBenchmark):
    """HeadCT: head CT slices with or without haemorrhage (image-level only, evaluation-only).

    Layout::

        <root>/head_ct/000.png ... 199.png
        <root>/labels.csv          header "id, hemorrhage" (a space after the comma), rows "0,1"

    ``id`` is the integer behind the zero-padded file name (id 0 is ``000.png``); ``hemorrhage`` is 1 for
    haemorrhage, 0 for normal. Every image needs exactly one label row and every row an image. Sizes vary. No
    masks. One category ``headct``, split ``test``.

    Download: https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage
    """

    name = "headct"
    title = "HeadCT"
    pixel_level = False
    defect_type = "hemorrhage"
    download = "https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage"
    layout = "<root>/head_ct/NNN.png and <root>/labels.csv with header 'id, hemorrhage' (id N labels NNN.png)"

    def markers(self) -> tuple[str, ...]:
        """``head_ct/`` and ``labels.csv``."""
        return ("head_ct", "labels.csv")

    def read_labels(self) -> dict[int, int]:
        """``labels.csv`` as id to label.

        Raises:
            DataError: Missing file or column, a value that is not an integer id or a 0/1 label, a repeated id.
        """
        path = self.root / "labels.csv"
        if not path.is_file():
            raise DataError(f"HeadCT labels '{path}' do not exist. {self.describe_layout()}")
        labels: dict[int, int] = {}
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [field.strip().lower() for field in next(reader, [])]
            if "id" not in header or "hemorrhage" not in header:
                raise DataError(
                    f"HeadCT labels '{path}' need the columns 'id' and 'hemorrhage'; the header is {header}."
                )
            id_col, label_col = header.index("id"), header.index("hemorrhage")
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                where = f"line {reader.line_num} of '{path}'"
                try:
                    image_id, label = int(row[id_col]), int(row[label_col])
                except (ValueError, IndexError):
                    raise DataError(f"HeadCT labels: {where} is {row}, not '<integer id>,<0 or 1>'.") from None
                if label not in (0, 1):
                    raise DataError(f"HeadCT labels: {where} gives hemorrhage={label}; use 0 or 1.")
                if image_id in labels:
                    raise DataError(f"HeadCT labels: {where} repeats id {image_id}. Keep one row per image.")
                labels[image_id] = label
        return labels

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Images of ``head_ct/`` labelled by ``labels.csv``.

        Raises:
            DataError: Missing folder or labels, an image without a label row, a label row without an image.
        """
        folder = self.root / "head_ct"
        if not folder.is_dir():
            raise DataError(f"HeadCT image folder '{folder}' does not exist. {self.describe_layout()}")
        labels = self.read_labels()
        images: dict[int, Path] = {}
        for image in visible_images(folder):
            if not image.stem.isdigit() or int(image.stem) not in labels:
                raise DataError(
                    f"HeadCT image '{image}' has no label row in '{self.root / 'labels.csv'}' (its id would be "
                    f"{int(image.stem) if image.stem.isdigit() else repr(image.stem)}). Add a row '<id>,<0 or 1>' "
                    f"or remove the image."
                )
            if int(image.stem) in images:
                raise DataError(f"HeadCT images '{images[int(image.stem)]}' and '{image}' have the same id.")
            images[int(image.stem)] = image
        unmatched = sorted(set(labels) - set(images))
        if unmatched:
            raise DataError(
                f"{len(unmatched)} HeadCT label row(s) of '{self.root / 'labels.csv'}' have no image, e.g. id "
                f"{unmatched[0]}: expected '{folder / f'{unmatched[0]:03d}.png'}'. Add the images or remove the rows."
            )
        return [
            SampleRecord(path, labels[i], category, self.defect_type if labels[i] else NORMAL, None, self.name)
            for i, path in sorted(images.items())
        ]


class PairedBenchmark(MedicalBenchmark):
    """Pixel-level set of images and same-named masks; every image is anomalous (label 1).

    Subclasses list the accepted ``(image folder, mask folder, mask stem suffix)`` layouts in ``pair_layouts``;
    the first whose folders exist is read.
    """

    image_level = False
    pair_layouts: ClassVar[tuple[tuple[str, str, str], ...]] = (("images", "masks", ""),)

    def markers(self) -> tuple[str, ...]:
        """Every image and mask folder of the accepted layouts."""
        return tuple(folder for layout in self.pair_layouts for folder in layout[:2])

    def chosen_layout(self) -> tuple[str, str, str]:
        """The first accepted layout whose image or mask folder exists (the first layout if none does)."""
        for layout in self.pair_layouts:
            if (self.root / layout[0]).is_dir() or (self.root / layout[1]).is_dir():
                return layout
        return self.pair_layouts[0]

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Every image with its mask, label 1.

        Raises:
            DataError: Missing folder, an image without a mask or a mask without an image.
        """
        image_dir, mask_dir, suffix = self.chosen_layout()
        try:
            pairs = pair_images_with_masks(self.root / image_dir, self.root / mask_dir, suffix, self.title)
        except DataError as error:
            raise DataError(f"{error} {self.describe_layout()}") from None
        return [SampleRecord(image, 1, category, self.defect_type, mask, self.name) for image, mask in pairs]


@DATASETS.register("isic")
class ISIC(PairedBenchmark):
    """ISIC 2016: dermoscopic images of skin lesions with segmentation masks (pixel-level only, evaluation-only).

    The test set of ISBI 2016 challenge part 1 (379 images), in the official layout::

        <root>/ISBI2016_ISIC_Part1_Test_Data/ISIC_0000003.jpg
        <root>/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000003_Segmentation.png

    or re-packaged as ``<root>/images/<stem>.<ext>`` + ``<root>/masks/<stem>.<ext>``. Every image shows a lesion:
    label 1, image metrics are undefined. PNG masks are 0/255. One category ``isic``, split ``test``.

    Download: https://challenge.isic-archive.com/data/#2016
    """

    name = "isic"
    title = "ISIC 2016"
    defect_type = "lesion"
    download = "https://challenge.isic-archive.com/data/#2016"
    layout = (
        "<root>/ISBI2016_ISIC_Part1_Test_Data/<id>.jpg with masks "
        "<root>/ISBI2016_ISIC_Part1_Test_GroundTruth/<id>_Segmentation.png, or <root>/images + <root>/masks "
        "with the same names"
    )
    pair_layouts = (
        ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "_Segmentation"),
        ("images", "masks", ""),
    )


class MedicalDataModule(BenchmarkDataModule):
    """A medical set: its one category is evaluated zero-shot (train the prompts on another benchmark)."""


@DATAMODULES.register("headct")
class HeadCTDataModule(MedicalDataModule):
    """HeadCT (image-level): head CT slices with or without haemorrhage."""

    benchmark = HeadCT


@DATAMODULES.register("brainmri")
class BrainMRIDataModule(MedicalDataModule):
    """BrainMRI (image-level): brain MRI slices with or without a tumour."""

    benchmark = BrainMRI


@DATAMODULES.register("br35h")
class Br35HDataModule(MedicalDataModule):
    """Br35H (image-level): brain MRI slices with or without a tumour."""

    benchmark = Br35H


@DATAMODULES.register("isic")
class ISICDataModule(MedicalDataModule):
    """ISIC 2016 (pixel-level): skin lesion segmentation."""

    benchmark = ISIC
