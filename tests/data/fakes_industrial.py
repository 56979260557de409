"""Writers of tiny fake copies of the industrial benchmarks, in their real on-disk layouts.

Each ``write_<benchmark>(root)`` writes 16x16 images and masks (file names, suffixes and their case as in the real
release) and returns what a reader must find: ``{category: {split: Counter(defect_type)}}``. Masks of anomalous
images have a non-empty square; normal ones (where the layout has any) are all zero.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from PIL import Image

SIZE = 16
Expected = dict[str, dict[str, Counter]]


def image(path: Path, value: int = 128, mode: str = "RGB") -> Path:
    """A flat 16x16 image; the format follows the suffix (.JPG, .bmp, .PNG ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (SIZE, SIZE), value if mode == "L" else (value, value // 2, 255 - value)).save(path)
    return path


def mask(path: Path, value: int = 255, empty: bool = False) -> Path:
    """A 16x16 L mask with a 6x6 square of ``value`` (all zero when ``empty``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("L", (SIZE, SIZE), 0)
    if not empty:
        picture.paste(value, (4, 4, 10, 10))
    picture.save(path)
    return path


def write_mvtec3d(root: Path, style: str = "official", categories: tuple[str, ...] = ("bagel", "tire")) -> Expected:
    """MVTec 3D-AD RGB: ``official`` (``<defect>/rgb``, ``<defect>/gt``, xyz/ beside) or ``mvtec`` repackaging."""
    expected: Expected = {}
    for category in categories:
        cat = root / category
        if style == "official":
            for split, n_good in (("train", 2), ("validation", 1), ("test", 2)):
                for i in range(n_good):
                    image(cat / split / "good" / "rgb" / f"{i:03d}.png", 100 + i)
                    (cat / split / "good" / "xyz").mkdir(parents=True, exist_ok=True)
                    (cat / split / "good" / "xyz" / f"{i:03d}.tiff").write_bytes(b"not read")
                    mask(cat / split / "good" / "gt" / f"{i:03d}.png", empty=True)
            for defect, n, value in (("crack", 2, 253), ("hole", 1, 254)):
                for i in range(n):
                    image(cat / "test" / defect / "rgb" / f"{i:03d}.png", 200)
                    mask(cat / "test" / defect / "gt" / f"{i:03d}.png", value)
            expected[category] = {
                "train": Counter(good=2),
                "validation": Counter(good=1),
                "test": Counter(good=2, crack=2, hole=1),
            }
        else:
            for i in range(2):
                image(cat / "train" / "good" / f"{i:03d}.png", 100 + i)
                image(cat / "test" / "good" / f"{i:03d}.png", 110 + i)
            for defect, n, value in (("cut", 2, 253), ("contamination", 1, 255)):
                for i in range(n):
                    image(cat / "test" / defect / f"{i:03d}.png", 200)
                    mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png", value)
            expected[category] = {"train": Counter(good=2), "test": Counter(good=2, cut=2, contamination=1)}
    return expected


def write_visa(root: Path, categories: tuple[str, ...] = ("candle", "capsules")) -> Expected:
    """VisA: ``split_csv/1cls.csv`` and ``<object>/Data/{Images,Masks}/...`` (JPG images, png masks)."""
    lines = ["object,split,label,image,mask"]
    expected: Expected = {}
    for category in categories:
        data = Path(category) / "Data"
        for i, split in enumerate(("train", "train", "test", "test")):
            rel = data / "Images" / "Normal" / f"{i:04d}.JPG"
            image(root / rel, 90 + i)
            lines.append(f"{category},{split},normal,{rel.as_posix()},")
        for i in range(3):
            rel, mask_rel = data / "Images" / "Anomaly" / f"{i:03d}.JPG", data / "Masks" / "Anomaly" / f"{i:03d}.png"
            image(root / rel, 200)
            mask(root / mask_rel)
            lines.append(f"{category},test,anomaly,{rel.as_posix()},{mask_rel.as_posix()}")
        expected[category] = {"train": Counter(good=2), "test": Counter(good=2, anomaly=3)}
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(lines) + "\n")
    return expected


def write_btad(root: Path) -> Expected:
    """BTAD products 01 (.bmp images, .png masks) and 02 (.png images and masks)."""
    expected: Expected = {}
    for category, suffix in (("01", ".bmp"), ("02", ".png")):
        cat = root / category
        for i in range(3):
            image(cat / "train" / "ok" / f"{i:04d}{suffix}", 80 + i)
        for i in range(2):
            image(cat / "test" / "ok" / f"{i:04d}{suffix}", 90 + i)
        for i in range(2):
            image(cat / "test" / "ko" / f"{i:04d}{suffix}", 200)
            mask(cat / "ground_truth" / "ko" / f"{i:04d}.png")
        expected[category] = {"train": Counter(good=3), "test": Counter(good=2, ko=2)}
    return expected


def write_mvtec_layout(root: Path, categories: tuple[str, ...], defects: tuple[str, ...]) -> Expected:
    """The MVTec AD layout (MPDD, DTD-Synthetic): 2 train good, 2 test good, 1-2 images per defect."""
    expected: Expected = {}
    for category in categories:
        cat = root / category
        for i in range(2):
            image(cat / "train" / "good" / f"{i:03d}.png", 100 + i)
            image(cat / "test" / "good" / f"{i:03d}.png", 110 + i)
        for n, defect in enumerate(defects, start=1):
            for i in range(n):
                image(cat / "test" / defect / f"{i:03d}.png", 200)
                mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png")
        expected[category] = {
            "train": Counter(good=2),
            "test": Counter(good=2, **{d: n for n, d in enumerate(defects, start=1)}),
        }
    return expected


def write_mpdd(root: Path) -> Expected:
    """MPDD: bracket_black and tubes, MVTec AD layout."""
    return write_mvtec_layout(root, ("bracket_black", "tubes"), ("hole", "scratches"))


def write_dtd(root: Path) -> Expected:
    """DTD-Synthetic: Blotchy_099 and Woven_001, MVTec AD layout with the single defect folder ``bad``."""
    return write_mvtec_layout(root, ("Blotchy_099", "Woven_001"), ("bad",))


def write_ksdd(root: Path) -> Expected:
    """KolektorSDD v1: kos01 (Part0-2) and kos02 (Part0-1), grey JPGs with ``PartN_label.bmp``; 2 defective."""
    defective = {("kos01", 1), ("kos02", 0)}
    for item, parts in (("kos01", 3), ("kos02", 2)):
        for part in range(parts):
            image(root / item / f"Part{part}.jpg", 120 + part, mode="L")
            mask(root / item / f"Part{part}_label.bmp", empty=(item, part) not in defective)
    return {"ksdd": {"test": Counter(good=3, defect=2)}}


def write_dagm(root: Path) -> Expected:
    """DAGM 2007: Class1 and Class2, ``{Train,Test}/NNNN.PNG`` with ``Label/NNNN_label.PNG`` and ``Labels.txt``."""
    expected: Expected = {}
    for category in ("Class1", "Class2"):
        expected[category] = {}
        for split, folder in (("train", "Train"), ("test", "Test")):
            base = root / category / folder
            rows = ["1"]  # the header line
            for i in range(1, 6):
                name = f"{i:04d}.PNG"
                image(base / name, 60 + i, mode="L")
                flag = int(i in (2, 4))
                label = f"{i:04d}_label.PNG" if flag else ""
                if flag:
                    mask(base / "Label" / label)
                rows.append(f"{i}\t{flag}\t{name}\t0\t{label}")
            (base / "Label" / "Labels.txt").write_text("\n".join(rows) + "\n")
            expected[category][split] = Counter(good=3, defect=2)
    return expected


def write_realiad(root: Path, nested_jsons: bool = False, with_category_prefix: bool = False) -> Expected:
    """Real-IAD: ``realiad_1024/<category>/{OK,NG/<class>}/SNNNN/*.jpg`` (+ ``_mask.png``) and the split JSONs.

    Args:
        root: Where to write.
        nested_jsons: Put the JSONs in ``realiad_jsons/realiad_jsons/`` instead of ``realiad_jsons/``.
        with_category_prefix: Write JSON paths relative to ``realiad_1024/`` (``<category>/OK/...``).
    """
    expected: Expected = {}
    json_dir = root / "realiad_jsons" / ("realiad_jsons" if nested_jsons else "")
    json_dir.mkdir(parents=True, exist_ok=True)
    for category in ("audiojack", "bottle_cap"):
        cat = root / "realiad_1024" / category
        prefix = f"{category}/" if with_category_prefix else ""
        splits: dict[str, list[dict]] = {"train": [], "test": []}
        for n, split in enumerate(("train", "train", "test", "test")):
            rel = f"OK/S{n:04d}/{category}_{n:04d}_OK_C1_20230101000000.jpg"
            image(cat / rel, 90 + n)
            splits[split].append({"category": category, "anomaly_class": "OK", "image_path": prefix + rel,
                                  "mask_path": None})  # fmt: skip
        for n, defect in enumerate(("AK", "AK", "QS"), start=10):
            rel = f"NG/{defect}/S{n:04d}/{category}_{n:04d}_NG_C1_20230101000000.jpg"
            image(cat / rel, 200)
            mask(cat / rel.replace(".jpg", "_mask.png"))
            splits["test"].append({"category": category, "anomaly_class": defect, "image_path": prefix + rel,
                                   "mask_path": prefix + rel.replace(".jpg", "_mask.png")})  # fmt: skip
        meta = {"prefix": "", "normal_class": "OK"}
        (json_dir / f"{category}.json").write_text(json.dumps({"meta": meta, **splits}))
        expected[category] = {"train": Counter(good=2), "test": Counter(good=2, AK=2, QS=1)}
    return expected


WRITERS = {
    "mvtec3d": write_mvtec3d,
    "visa": write_visa,
    "btad": write_btad,
    "mpdd": write_mpdd,
    "dtd": write_dtd,
    "ksdd": write_ksdd,
    "dagm": write_dagm,
    "realiad": write_realiad,
}
"""Registry name -> writer of its fake layout."""
