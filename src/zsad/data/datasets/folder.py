"""Users' own data without a standard layout: folders of images, or a manifest file that lists them.

Two ways to describe the data (exactly one):

- **directories**: ``normal_dir`` (good images), ``abnormal_dirs`` (a mapping defect type to folder, or a list of
  folders whose names become the defect types) and optional ``mask_dirs`` (defect type to folder; the mask of
  ``<stem>.<ext>`` is ``<stem><mask_suffix>.<any image ext>``). All of it is one category (``category``), split
  ``test``.
- **manifest**: a CSV file with a header, or a JSON list of objects, with the columns/keys ``image`` (path
  relative to the manifest's folder, or absolute), ``label`` (``0``/``1`` or ``normal``/``anomaly``) and the
  optional ``mask``, ``category`` (default ``category``), ``defect_type`` (default ``good`` for normal images,
  ``anomaly`` otherwise) and ``split`` (``test`` or ``train``, default ``test``).

Relative folders and the manifest path are taken relative to ``root``. Given neither, ``<root>/manifest.csv``
or ``<root>/manifest.json`` is read, so that ``FolderBenchmark(root)`` alone (as a protocol source builds it)
works for a folder that holds a manifest. JPEG masks are thresholded at 127, other masks at 0.

Example manifest (CSV)::

    image,label,mask,defect_type
    good/001.png,normal,,
    bad/002.png,anomaly,masks/002_mask.png,scratch
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, BadImagePolicy, SampleRecord
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.datasets.medical import mask_threshold_for, pair_images_with_masks, visible_images
from zsad.errors import ConfigError, DataError
from zsad.registry import DATAMODULES, DATASETS

MANIFEST_COLUMNS = ("image", "label", "mask", "category", "defect_type", "split")
LABELS = {"0": 0, "1": 1, "normal": 0, "anomaly": 1}
DEFAULT_MANIFESTS = ("manifest.csv", "manifest.json")
DEFAULT_DEFECT = "anomaly"


def _normalise(path: Path) -> Path:
    """``path`` with ``..`` and ``.`` collapsed (no symlink resolution), so duplicates compare equal."""
    return Path(os.path.normpath(path))


@DATASETS.register("folder")
class FolderBenchmark(Benchmark):
    """Users' own images: normal/abnormal folders with optional masks, or a CSV/JSON manifest.

    See the module docstring for both layouts. Whether masks and normal images exist depends on the data, so
    pixel- and image-level metrics are computed where the samples allow them.

    Args:
        root: Base folder of relative ``normal_dir``, ``abnormal_dirs``, ``mask_dirs`` and ``manifest`` paths.
        normal_dir: Folder of normal (good) images.
        abnormal_dirs: Defect type to folder of anomalous images, or a list of folders named after defect types.
        mask_dirs: Defect type to folder of masks (images of defect types left out have no mask).
        mask_suffix: Appended to an image's stem to name its mask (e.g. ``"_mask"``).
        manifest: CSV or JSON file listing the samples (instead of the folders).
        category: Category of the folder layout, and of manifest rows without a ``category``.

    Raises:
        ConfigError: Folders and a manifest both given, ``mask_dirs`` or ``mask_suffix`` without the folders, a
            defect type named ``good``, the same defect type twice, or a mask folder of an unknown defect type.
    """

    name = "folder"
    title = "folder"
    download = "your own data"
    layout = (
        "normal_dir/abnormal_dirs/mask_dirs folders, or a manifest CSV/JSON with the columns image, label "
        "(0/1 or normal/anomaly) and optional mask, category, defect_type, split"
    )
    splits = ("train", "test")

    def __init__(
        self,
        root: str | Path = ".",
        normal_dir: str | None = None,
        abnormal_dirs: Mapping[str, str] | Sequence[str] | None = None,
        mask_dirs: Mapping[str, str] | None = None,
        mask_suffix: str = "",
        manifest: str | None = None,
        category: str = "folder",
    ) -> None:
        super().__init__(root)
        self.category = category
        self.mask_suffix = mask_suffix
        self.manifest = self.root / manifest if manifest is not None else None
        self.normal_dir = self.root / normal_dir if normal_dir is not None else None
        self.abnormal_dirs = self._defect_dirs(abnormal_dirs)
        self.mask_dirs = {defect: self.root / folder for defect, folder in (mask_dirs or {}).items()}
        uses_dirs = self.normal_dir is not None or bool(self.abnormal_dirs)
        if uses_dirs and self.manifest is not None:
            raise ConfigError(
                "Give either folders (normal_dir/abnormal_dirs) or a manifest, not both: the manifest already "
                "lists every image."
            )
        if not uses_dirs and (self.mask_dirs or mask_suffix):
            raise ConfigError("mask_dirs and mask_suffix apply to the folder layout: also give abnormal_dirs.")
        unknown = sorted(set(self.mask_dirs) - set(self.abnormal_dirs))
        if unknown:
            raise ConfigError(
                f"mask_dirs names defect type(s) {unknown} that abnormal_dirs does not have; defect types: "
                f"{sorted(self.abnormal_dirs)}."
            )
        self.mode = "dirs" if uses_dirs else "manifest"

    def _defect_dirs(self, abnormal_dirs: Mapping[str, str] | Sequence[str] | None) -> dict[str, Path]:
        if abnormal_dirs is None:
            return {}
        if isinstance(abnormal_dirs, str):
            raise ConfigError(
                f"abnormal_dirs is the string '{abnormal_dirs}': give a list of folders, or a mapping defect type "
                f"to folder."
            )
        if isinstance(abnormal_dirs, Mapping):
            pairs = [(str(defect), self.root / folder) for defect, folder in abnormal_dirs.items()]
        else:
            pairs = [(Path(folder).name, self.root / folder) for folder in abnormal_dirs]
        found: dict[str, Path] = {}
        for defect, folder in pairs:
            if defect == NORMAL:
                raise ConfigError(f"Defect type '{NORMAL}' ({folder}) is reserved for normal images: use normal_dir.")
            if defect in found:
                raise ConfigError(
                    f"Defect type '{defect}' is given twice ('{found[defect]}' and '{folder}'); give abnormal_dirs "
                    f"as a mapping defect type to folder to name them apart."
                )
            found[defect] = folder
        return found

    def manifest_path(self) -> Path:
        """The manifest to read: ``manifest``, or ``<root>/manifest.csv`` / ``.json`` when neither is given.

        Raises:
            ConfigError: Neither folders nor a manifest given, and no default manifest under the root.
        """
        if self.manifest is not None:
            return self.manifest
        for name in DEFAULT_MANIFESTS:
            if (self.root / name).is_file():
                return self.root / name
        raise ConfigError(
            f"The folder dataset at '{self.root}' needs its images described: give normal_dir and/or "
            f"abnormal_dirs (optionally mask_dirs), or a manifest CSV/JSON file (none of "
            f"{', '.join(DEFAULT_MANIFESTS)} is in the root)."
        )

    def find_categories(self) -> list[str]:
        """``[category]`` for folders; the manifest's categories otherwise."""
        if self.mode == "dirs":
            return [self.category]
        return sorted({record.category for record, _ in self.manifest_entries()})

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """Samples of one category and split."""
        if self.mode == "dirs":
            return self.read_dirs() if split == "test" else []
        return [r for r, s in self.manifest_entries() if r.category == category and s == split]

    def records(self, category: str, split: str = "test") -> list[SampleRecord]:
        """Samples (see :meth:`Benchmark.records`), JPEG masks thresholded at 127."""
        return [
            replace(r, mask_threshold=mask_threshold_for(r.mask_path, self.mask_threshold))
            for r in super().records(category, split)
        ]

    # ------------------------------------------------------------------------------------------------ folders

    def read_dirs(self) -> list[SampleRecord]:
        """Samples of the folder layout: normal images first, then each defect type in the order given.

        Raises:
            DataError: A missing folder, an anomalous image without its mask or a mask without its image.
        """
        records = []
        if self.normal_dir is not None:
            self._require_dir(self.normal_dir, "normal_dir")
            records += [
                SampleRecord(p, 0, self.category, NORMAL, None, self.name) for p in visible_images(self.normal_dir)
            ]
        for defect, folder in self.abnormal_dirs.items():
            self._require_dir(folder, f"abnormal_dirs['{defect}']")
            if defect in self.mask_dirs:
                self._require_dir(self.mask_dirs[defect], f"mask_dirs['{defect}']")
                try:
                    pairs = pair_images_with_masks(folder, self.mask_dirs[defect], self.mask_suffix, f"'{defect}'")
                except DataError as error:
                    raise DataError(
                        f"{error} Masks match images by stem plus mask_suffix (now '{self.mask_suffix}')."
                    ) from None
            else:
                pairs = [(p, None) for p in visible_images(folder)]
            records += [SampleRecord(p, 1, self.category, defect, mask, self.name) for p, mask in pairs]
        return records

    @staticmethod
    def _require_dir(folder: Path, option: str) -> None:
        if not folder.is_dir():
            raise DataError(f"Folder '{folder}' ({option}) does not exist. Check the path (relative to root).")

    # ------------------------------------------------------------------------------------------------ manifest

    def manifest_entries(self) -> list[tuple[SampleRecord, str]]:
        """``(sample, split)`` for every row of the manifest, in file order.

        Raises:
            DataError: A missing or unreadable manifest, an unknown column, a missing ``image`` or ``label``, an
                unknown label or split, a defect type that contradicts the label, a missing image or mask, or an
                image listed twice. Row-level messages name the row (1 = first sample).
        """
        path = self.manifest_path()
        if not path.is_file():
            raise DataError(f"Manifest '{path}' does not exist.")
        entries: list[tuple[SampleRecord, str]] = []
        first_row: dict[Path, str] = {}
        for where, row in self._rows(path):
            record, split = self._parse_row(row, f"'{path}' {where}", path.parent)
            if record.path in first_row:
                raise DataError(
                    f"Manifest '{path}': {where} lists '{record.path}' again (first listed in "
                    f"{first_row[record.path]}). List every image once."
                )
            first_row[record.path] = where
            entries.append((record, split))
        return entries

    def _rows(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(where, row)`` for every sample of a CSV or JSON manifest."""
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise DataError(f"Cannot read manifest '{path}': {error}.") from error
            if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
                raise DataError(f"Manifest '{path}' must be a JSON list of objects with the keys {MANIFEST_COLUMNS}.")
            for number, item in enumerate(data, 1):
                yield f"row {number}", item
            return
        if path.suffix.lower() != ".csv":
            raise DataError(f"Manifest '{path}' must be a .csv or .json file.")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            unknown = [name for name in header if name not in MANIFEST_COLUMNS]
            if unknown:
                raise DataError(
                    f"Manifest '{path}': unknown column(s) {unknown} in the header. Columns: "
                    f"{', '.join(MANIFEST_COLUMNS)}."
                )
            for number, row in enumerate(reader, 1):
                if None in row:
                    raise DataError(f"Manifest '{path}': row {number} (line {reader.line_num}) has too many fields.")
                if any(value and value.strip() for value in row.values()):
                    yield f"row {number} (line {reader.line_num})", row

    def _parse_row(self, row: dict[str, Any], where: str, base: Path) -> tuple[SampleRecord, str]:
        unknown = sorted(str(key) for key in row if key not in MANIFEST_COLUMNS)
        if unknown:
            raise DataError(f"Manifest {where}: unknown column(s) {unknown}. Columns: {', '.join(MANIFEST_COLUMNS)}.")
        values = {key: str(value).strip() for key, value in row.items() if value is not None and str(value).strip()}
        for required in ("image", "label"):
            if required not in values:
                raise DataError(f"Manifest {where}: no '{required}' value.")
        label = LABELS.get(values["label"].lower())
        if label is None:
            raise DataError(f"Manifest {where}: unknown label '{row['label']}'. Use 0 or 1, or normal or anomaly.")
        defect = values.get("defect_type", NORMAL if label == 0 else DEFAULT_DEFECT)
        if (defect == NORMAL) != (label == 0):
            raise DataError(
                f"Manifest {where}: defect_type '{defect}' contradicts label {values['label']!r} "
                f"('{NORMAL}' is the defect type of normal images, and only of them)."
            )
        split = values.get("split", "test")
        if split not in self.splits:
            raise DataError(f"Manifest {where}: unknown split '{split}'. Use {' or '.join(self.splits)}.")
        image = _normalise(base / values["image"])
        if not image.is_file():
            raise DataError(f"Manifest {where}: image '{image}' does not exist.")
        mask = _normalise(base / values["mask"]) if "mask" in values else None
        if mask is not None and not mask.is_file():
            raise DataError(f"Manifest {where}: mask '{mask}' of image '{image}' does not exist.")
        category = values.get("category", self.category)
        return SampleRecord(image, label, category, defect, mask, self.name), split


@DATAMODULES.register("folder")
class FolderDataModule(BenchmarkDataModule):
    """Users' own images (folders or a CSV/JSON manifest), evaluated zero-shot.

    :class:`~zsad.data.datamodule.BenchmarkDataModule` builds its reader from ``root`` alone; this subclass lets
    it do so, then replaces ``self.dataset`` with a :class:`FolderBenchmark` built from all the folder options,
    so that every inherited method (categories, overlap checks, loaders) reads the configured data.

    Args:
        root: Base folder of the relative paths below (the manifest's own rows are relative to its folder).
        normal_dir: See :class:`FolderBenchmark`.
        abnormal_dirs: See :class:`FolderBenchmark`.
        mask_dirs: See :class:`FolderBenchmark`.
        mask_suffix: See :class:`FolderBenchmark`.
        manifest: See :class:`FolderBenchmark`.
        category: See :class:`FolderBenchmark`.
        aux_categories: See :class:`~zsad.data.datamodule.BenchmarkDataModule`.
        target_categories: See :class:`~zsad.data.datamodule.BenchmarkDataModule`.
        aux_split: See :class:`~zsad.data.datamodule.BenchmarkDataModule`.
        allow_overlap: See :class:`~zsad.data.datamodule.BenchmarkDataModule`.
        image_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        eval_batch_size: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        num_workers: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        mask_threshold: See :class:`~zsad.data.datamodule.BenchmarkDataModule` (``None``: 127 for JPEG masks, else
            0).
        on_bad_image: See :class:`~zsad.data.datamodule.ZSADDataModule`.
        interpolation: See :class:`~zsad.data.datamodule.ZSADDataModule`.
    """

    benchmark = FolderBenchmark

    def __init__(
        self,
        root: str = ".",
        normal_dir: str | None = None,
        abnormal_dirs: dict[str, str] | list[str] | None = None,
        mask_dirs: dict[str, str] | None = None,
        mask_suffix: str = "",
        manifest: str | None = None,
        category: str = "folder",
        aux_categories: list[str] | None = None,
        target_categories: list[str] | None = None,
        aux_split: str = "test",
        allow_overlap: bool = False,
        image_size: int = 518,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        mask_threshold: int | None = None,
        on_bad_image: BadImagePolicy = "error",
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(
            root=root,
            aux_categories=aux_categories,
            target_categories=target_categories,
            aux_split=aux_split,
            allow_overlap=allow_overlap,
            image_size=image_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            mask_threshold=mask_threshold,
            on_bad_image=on_bad_image,
            interpolation=interpolation,
        )
        self.dataset = FolderBenchmark(
            self.root,
            normal_dir=normal_dir,
            abnormal_dirs=abnormal_dirs,
            mask_dirs=mask_dirs,
            mask_suffix=mask_suffix,
            manifest=manifest,
            category=category,
        )
