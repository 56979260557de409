"""Real-IAD (Wang et al., CVPR 2024): 30 industrial objects seen from 5 cameras, read through its split JSONs.

::

    <root>/realiad_jsons/<category>.json          (or <root>/realiad_jsons/realiad_jsons/<category>.json)
    <root>/realiad_1024/<category>/OK/S0001/<category>_0001_OK_C1_<time>.jpg
    <root>/realiad_1024/<category>/NG/<class>/S0002/<category>_0002_NG_C1_<time>.jpg
    <root>/realiad_1024/<category>/NG/<class>/S0002/<category>_0002_NG_C1_<time>_mask.png

Each JSON has ``meta`` and ``train``/``test`` lists of ``{"image_path", "anomaly_class", "mask_path"}``.
``anomaly_class == "OK"`` is normal; any other class (``AK``, ``QS``, ...) is anomalous and becomes the defect
type. The JSON paths are relative to an image folder found by trying, in order, for each of ``realiad_1024``,
``realiad_512``, ``realiad_256`` and ``realiad_raw``: ``<that folder>/<category>/``, ``<that folder>/<meta
prefix>/`` and ``<that folder>/`` itself; the first that holds the split's first image wins.
Download (on request from the authors): https://realiad4ad.github.io/Real-IAD/ (CC BY-NC-SA 4.0).

Importing this module registers ``realiad`` in ``DATASETS`` and ``DATAMODULES``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, SampleRecord
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.datasets.mvtec_family import missing_mask
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS

JSON_FOLDERS = ("realiad_jsons", "realiad_jsons/realiad_jsons")
IMAGE_FOLDERS = ("realiad_1024", "realiad_512", "realiad_256", "realiad_raw")
NORMAL_CLASS = "OK"


@DATASETS.register("realiad")
class RealIAD(Benchmark):
    """Real-IAD: 30 industrial objects with pixel masks, split by ``realiad_jsons/<category>.json``."""

    name = "realiad"
    title = "Real-IAD"
    download = "https://realiad4ad.github.io/Real-IAD/"
    layout = (
        "<root>/realiad_jsons/<category>.json (or <root>/realiad_jsons/realiad_jsons/<category>.json) listing "
        "image_path/anomaly_class/mask_path relative to <root>/realiad_1024/<category>/ (or realiad_512, "
        "realiad_256, realiad_raw)"
    )
    mask_threshold = 0
    splits = ("train", "test")
    known_categories: ClassVar[tuple[str, ...]] = (
        "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint", "mounts", "pcb",
        "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll", "regulator", "rolled_strip_base",
        "sim_card_set", "switch", "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1", "u_block",
        "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper",
    )  # fmt: skip

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._splits: dict[str, dict[str, Any]] = {}

    def json_folder(self) -> Path:
        """The first of :data:`JSON_FOLDERS` that holds JSON files.

        Raises:
            DataError: If neither does.
        """
        for candidate in JSON_FOLDERS:
            folder = self.root / candidate
            if folder.is_dir() and any(folder.glob("*.json")):
                return folder
        tried = " or ".join(f"'{self.root / c}'" for c in JSON_FOLDERS)
        raise DataError(
            f"No Real-IAD split JSONs found: expected <category>.json files in {tried}. Unpack realiad_jsons.zip "
            f"from the Real-IAD download into '{self.root}'. {self.describe_layout()}"
        )

    def find_categories(self) -> list[str]:
        """The stems of the JSON files."""
        return sorted(p.stem for p in self.json_folder().glob("*.json"))

    def split_file(self, category: str) -> dict[str, Any]:
        """The parsed JSON of one category, read once.

        Raises:
            DataError: Unreadable JSON, or not an object with ``train``/``test`` lists.
        """
        if category not in self._splits:
            path = self.json_folder() / f"{category}.json"
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise DataError(f"Cannot read the Real-IAD split file '{path}': {error}.") from error
            if not isinstance(data, dict) or not any(isinstance(data.get(s), list) for s in self.splits):
                raise DataError(f"Real-IAD split file '{path}' is not an object with 'train' and/or 'test' lists.")
            self._splits[category] = data
        return self._splits[category]

    def image_folder(self, category: str, probe: str) -> Path:
        """The folder the JSON paths of ``category`` are relative to: the first candidate holding ``probe``.

        Raises:
            DataError: If no candidate holds it (the message lists every folder tried).
        """
        meta = self.split_file(category).get("meta")
        prefix = str(meta.get("prefix") or "").strip("/") if isinstance(meta, dict) else ""
        candidates: list[Path] = []
        for folder in IMAGE_FOLDERS:
            for candidate in (self.root / folder / category, self.root / folder / prefix, self.root / folder):
                if candidate not in candidates:
                    candidates.append(candidate)
        for candidate in candidates:
            if (candidate / probe).is_file():
                return candidate
        raise DataError(
            f"Cannot find the Real-IAD image '{probe}' of category '{category}': tried "
            f"{', '.join(repr(str(c)) for c in candidates)}. Unpack the images (e.g. realiad_1024/) into "
            f"'{self.root}'. {self.describe_layout()}"
        )

    def find_records(self, category: str, split: str) -> list[SampleRecord]:
        """The JSON entries of one category and split.

        Raises:
            DataError: A malformed entry, or an anomalous image without a mask.
        """
        data = self.split_file(category)
        entries = data.get(split) or []
        if not entries:
            return []
        path = self.json_folder() / f"{category}.json"
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not entry.get("image_path") or not entry.get("anomaly_class"):
                raise DataError(f"Entry {index} of '{split}' in '{path}' lacks image_path or anomaly_class: {entry!r}.")
        base = self.image_folder(category, entries[0]["image_path"])
        records = []
        for entry in entries:
            image = base / entry["image_path"]
            defect = str(entry["anomaly_class"])
            if defect == NORMAL_CLASS:
                records.append(SampleRecord(image, 0, category, NORMAL, None, self.name))
                continue
            mask = base / entry["mask_path"] if entry.get("mask_path") else None
            mask_on_disk = mask if mask is not None and mask.is_file() else None
            if mask_on_disk is None and self.pixel_level:
                raise missing_mask(self.title, image, mask or f"(no mask_path in '{path}')")
            records.append(SampleRecord(image, 1, category, defect, mask_on_disk, self.name))
        return records


@DATAMODULES.register("realiad")
class RealIADDataModule(BenchmarkDataModule):
    """Real-IAD, split by its JSONs: aux categories train, target categories are tested."""

    benchmark = RealIAD
