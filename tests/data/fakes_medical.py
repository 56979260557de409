"""Writers of tiny fake medical-benchmark layouts (16x16 images) for the loader tests.

Images cycle through the modes L, RGB, RGBA and P (JPEG files only L and RGB); file names include spaces and
upper-case suffixes; JPEG masks are saved at low quality, so they carry compression noise around 0 and 255.
Each ``write_<name>`` returns what the layout holds, to compare with what the reader finds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
MODES = ("L", "RGB", "RGBA", "P")
JPEG_MODES = ("L", "RGB")


@dataclass
class Expected:
    """What a fake layout holds."""

    normal: int
    anomalous: int
    masks: bool
    defect_type: str


def write_image(path: Path, mode: str = "RGB", seed: int = 0, size: int = SIZE) -> Path:
    """A random picture of ``mode``, written in the format of ``path``'s suffix."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    if mode == "RGBA":
        picture = rgb.convert("RGBA")
        picture.putalpha(Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)))
    elif mode == "P":
        picture = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    else:
        picture = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)
    return path


def mask_array(size: int = SIZE) -> np.ndarray:
    """A 0/255 square in the middle."""
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return mask


def write_mask(path: Path, size: int = SIZE) -> Path:
    """A square mask; as JPEG (low quality, so noisy) when the suffix says so, else lossless."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(mask_array(size))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        picture.save(path, format="JPEG", quality=30)
    else:
        picture.save(path)
    return path


def image_name(stem: str, index: int, jpeg_only: bool = False) -> tuple[str, str]:
    """``(file name, mode)`` cycling through suffix cases and modes."""
    if jpeg_only:
        return f"{stem}{('.jpg', '.JPG', '.jpeg', '.JPEG')[index % 4]}", JPEG_MODES[index % 2]
    mode = MODES[index % 4]
    if mode in JPEG_MODES:
        return f"{stem}{('.jpeg', '.JPG', '.jpg')[index % 3]}", mode
    return f"{stem}{('.png', '.PNG')[index % 2]}", mode


# --------------------------------------------------------------------------------------------- image-level


def write_headct(root: Path, n_normal: int = 3, n_hemorrhage: int = 3, ids: list[int] | None = None) -> Expected:
    """``head_ct/NNN.png`` (RGB, RGBA, L) and ``labels.csv`` with the header ``id, hemorrhage`` and CRLF lines."""
    ids = ids if ids is not None else list(range(n_normal + n_hemorrhage))
    rows = []
    for position, image_id in enumerate(ids):
        label = 1 if position < n_hemorrhage else 0
        write_image(root / "head_ct" / f"{image_id:03d}.png", ("RGB", "RGBA", "L")[position % 3], seed=image_id)
        rows.append((image_id, label))
    write_headct_labels(root, rows)
    return Expected(n_normal, n_hemorrhage, False, "hemorrhage")


def write_headct_labels(root: Path, rows: list[tuple[object, object]], header: str = "id, hemorrhage") -> Path:
    """``labels.csv`` as the Kaggle release writes it (space after the comma of the header, CRLF)."""
    path = root / "labels.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join([header, *(f"{i},{label}" for i, label in rows)]) + "\r\n").encode())
    return path


def write_no_yes(root: Path, n_no: int = 4, n_yes: int = 5) -> Expected:
    """``no/`` and ``yes/`` with names like ``1 no.jpeg``, ``N2.JPG``, ``Y3.png``, ``y 4.PNG`` and mixed modes."""
    for folder, count, stems in (("no", n_no, ("{} no", "N{}")), ("yes", n_yes, ("Y{}", "y {}"))):
        for index in range(count):
            name, mode = image_name(stems[index % 2].format(index), index)
            write_image(root / folder / name, mode, seed=index + 100 * len(folder))
    (root / "no" / "notes.txt").write_text("not an image")
    (root / "pred").mkdir(exist_ok=True)
    write_image(root / "pred" / "pred0.jpg")  # Br35H's unlabelled folder: ignored
    return Expected(n_no, n_yes, False, "tumor")


# --------------------------------------------------------------------------------------------- pixel-level


def write_pairs(
    root: Path,
    image_dir: str,
    mask_dir: str,
    count: int = 5,
    image_suffix: str = ".jpg",
    mask_suffix: str = ".jpg",
    mask_stem: str = "{}",
    stem: str = "img {}",
) -> Expected:
    """``count`` images in ``<root>/<image_dir>`` with masks ``<root>/<mask_dir>/<mask_stem>`` of the same stem."""
    jpeg = image_suffix.lower() in (".jpg", ".jpeg")
    for index in range(count):
        name = stem.format(index)
        mode = (JPEG_MODES if jpeg else MODES)[index % (2 if jpeg else 4)]
        write_image(root / image_dir / f"{name}{image_suffix}", mode, seed=index)
        write_mask(root / mask_dir / f"{mask_stem.format(name)}{mask_suffix}")
    return Expected(0, count, True, "")


def write_kvasir(root: Path, count: int = 5) -> Expected:
    """Kvasir-SEG: ``images/*.jpg`` and JPEG ``masks/*.jpg`` of the same names."""
    return replace_defect(write_pairs(root, "images", "masks", count, ".jpg", ".jpg", stem="cju{}x"), "polyp")


def write_clinicdb(root: Path, count: int = 5) -> Expected:
    """CVC-ClinicDB official release: ``Original/<n>.tif`` and ``Ground Truth/<n>.tif``."""
    return replace_defect(write_pairs(root, "Original", "Ground Truth", count, ".tif", ".tif", stem="{}"), "polyp")


def write_clinicdb_png(root: Path, count: int = 5) -> Expected:
    """CVC-ClinicDB re-packaged: ``images/<n>.png`` and ``masks/<n>.png``."""
    return replace_defect(write_pairs(root, "images", "masks", count, ".png", ".png", stem="{}"), "polyp")


def write_colondb(root: Path, count: int = 5) -> Expected:
    """CVC-ColonDB: ``images/<n>.png`` with masks of another suffix, ``masks/<n>.TIF``."""
    return replace_defect(write_pairs(root, "images", "masks", count, ".png", ".TIF", stem="{}"), "polyp")


def write_isic(root: Path, count: int = 5) -> Expected:
    """ISIC 2016 test part 1: ``..._Test_Data/ISIC_*.jpg`` and ``..._Test_GroundTruth/ISIC_*_Segmentation.png``."""
    expected = write_pairs(
        root,
        "ISBI2016_ISIC_Part1_Test_Data",
        "ISBI2016_ISIC_Part1_Test_GroundTruth",
        count,
        ".jpg",
        ".png",
        mask_stem="{}_Segmentation",
        stem="ISIC_{:07d}",
    )
    return replace_defect(expected, "lesion")


def write_isic_flat(root: Path, count: int = 5) -> Expected:
    """ISIC re-packaged as ``images/`` + ``masks/``."""
    return replace_defect(write_pairs(root, "images", "masks", count, ".jpg", ".png", stem="ISIC_{:07d}"), "lesion")


def write_endo(root: Path, count: int = 5) -> Expected:
    """Endo (HyperKvasir segmented-images): ``images/*.jpg`` and JPEG ``masks/*.jpg``."""
    return replace_defect(write_pairs(root, "images", "masks", count, ".jpg", ".jpg", stem="{}-endo"), "polyp")


def replace_defect(expected: Expected, defect_type: str) -> Expected:
    """``expected`` with another defect type."""
    expected.defect_type = defect_type
    return expected


WRITERS = {
    "headct": write_headct,
    "brainmri": write_no_yes,
    "br35h": write_no_yes,
    "kvasir": write_kvasir,
    "clinicdb": write_clinicdb,
    "colondb": write_colondb,
    "isic": write_isic,
    "endo": write_endo,
}
"""The standard fake layout of every medical benchmark."""

IMAGE_LEVEL = ("headct", "brainmri", "br35h")
PIXEL_LEVEL = ("kvasir", "clinicdb", "colondb", "isic", "endo")


# --------------------------------------------------------------------------------------------- folder


def write_folder_data(root: Path) -> dict[str, list[str]]:
    """Users' data: ``good/`` (3), ``scratch/`` (2, masks ``masks/scratch/<stem>_mask.png``), ``dent/`` (2, no masks).

    Returns:
        Relative image paths per defect type (``good`` for the normal ones).
    """
    files: dict[str, list[str]] = {"good": [], "scratch": [], "dent": []}
    for defect, count in (("good", 3), ("scratch", 2), ("dent", 2)):
        for index in range(count):
            name, mode = image_name(f"{defect} {index}", index)
            write_image(root / defect / name, mode, seed=index)
            files[defect].append(f"{defect}/{name}")
            if defect == "scratch":
                write_mask(root / "masks" / "scratch" / f"{Path(name).stem}_mask.png")
    return files


def folder_manifest_rows(files: dict[str, list[str]], labels: tuple[str, str] = ("0", "1")) -> list[dict[str, str]]:
    """Manifest rows equivalent to :func:`write_folder_data`'s folders."""
    rows = []
    for defect, paths in files.items():
        for path in paths:
            row = {"image": path, "label": labels[defect != "good"]}
            if defect != "good":
                row["defect_type"] = defect
            if defect == "scratch":
                row["mask"] = f"masks/scratch/{Path(path).stem}_mask.png"
            rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    """A CSV manifest with a header (empty cells for missing keys)."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
