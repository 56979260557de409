"""Tests for the MVTec AD folder reader and AnomalyDataset, on synthetic data and the real benchmark subsets."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_items import ITEM_KEYS
from PIL import Image

from conftest import shared_data
from zsad.data.datasets import AnomalyDataset, SampleRecord, mvtec_categories, mvtec_records
from zsad.data.synthetic import DEFECT_TYPES, SYNTHETIC_CATEGORIES, SyntheticSpec
from zsad.data.transforms import load_mask
from zsad.errors import DataError

SPEC = SyntheticSpec()  # what the synthetic_root fixture holds


def _png(path: Path, value: int = 0, mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """One category ``widget``: test/good/000.png, test/dent/000.png with its mask, train/good/000.png."""
    root = tmp_path / "tiny"
    _png(root / "widget" / "train" / "good" / "000.png")
    _png(root / "widget" / "test" / "good" / "000.png")
    _png(root / "widget" / "test" / "dent" / "000.png", 200)
    _png(root / "widget" / "ground_truth" / "dent" / "000_mask.png", 255, "L")
    return root


# ------------------------------------------------------------------------------------------ synthetic


def test_categories_of_synthetic_root(synthetic_root: Path) -> None:
    assert mvtec_categories(synthetic_root) == sorted(SYNTHETIC_CATEGORIES)
    assert mvtec_categories(str(synthetic_root)) == sorted(SYNTHETIC_CATEGORIES)


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_synthetic_test_records(synthetic_root: Path, category: str) -> None:
    records = mvtec_records(synthetic_root, category, dataset="synthetic")
    assert len(records) == SPEC.n_test_good + len(DEFECT_TYPES) * SPEC.n_test_per_defect == 16
    counts = Counter(r.defect_type for r in records)
    assert counts == {"good": 6, **{defect: 2 for defect in DEFECT_TYPES}}
    for record in records:
        assert isinstance(record, SampleRecord)
        assert record.category == category
        assert record.dataset == "synthetic"
        assert record.path.is_file()
        assert record.path.parent.name == record.defect_type
        if record.defect_type == "good":
            assert record.label == 0
            assert record.mask_path is None
        else:
            assert record.label == 1
            assert record.mask_path is not None
            assert record.mask_path.is_file()
            assert record.mask_path == (
                synthetic_root / category / "ground_truth" / record.defect_type / f"{record.path.stem}_mask.png"
            )


def test_synthetic_records_are_sorted_and_deterministic(synthetic_root: Path) -> None:
    records = mvtec_records(synthetic_root, "disc")
    assert records == mvtec_records(synthetic_root, "disc")
    keys = [(r.defect_type, r.path.name) for r in records]
    assert keys == sorted(keys)


def test_synthetic_train_split(synthetic_root: Path) -> None:
    records = mvtec_records(synthetic_root, "ring", split="train")
    assert len(records) == SPEC.n_train_good
    assert {(r.label, r.defect_type, r.mask_path) for r in records} == {(0, "good", None)}


def test_default_dataset_name(synthetic_root: Path) -> None:
    assert {r.dataset for r in mvtec_records(synthetic_root, "tile")} == {"mvtec"}


def test_records_ignore_non_image_files(tiny_root: Path) -> None:
    (tiny_root / "widget" / "test" / "good" / "notes.txt").write_text("not an image")
    (tiny_root / "widget" / "test" / "good" / "nested").mkdir()
    _png(tiny_root / "widget" / "test" / "good" / "001.PNG")  # upper-case suffix still counts
    names = sorted(r.path.name for r in mvtec_records(tiny_root, "widget"))
    assert names == ["000.png", "000.png", "001.PNG"]


def test_mask_with_another_suffix_is_found(tiny_root: Path) -> None:
    gt = tiny_root / "widget" / "ground_truth" / "dent"
    (gt / "000_mask.png").rename(gt / "000_mask.bmp")
    (record,) = [r for r in mvtec_records(tiny_root, "widget") if r.label == 1]
    assert record.mask_path == gt / "000_mask.bmp"


def test_mask_in_any_pillow_format_is_found_and_png_wins_a_tie(tiny_root: Path) -> None:
    gt = tiny_root / "widget" / "ground_truth" / "dent"
    Image.open(gt / "000_mask.png").save(gt / "000_mask.webp")
    (gt / "000_mask.png").unlink()
    (record,) = [r for r in mvtec_records(tiny_root, "widget") if r.label == 1]
    assert record.mask_path == gt / "000_mask.webp"
    _png(gt / "000_mask.png", 255, "L")  # two masks of one stem: the common suffix wins, as before
    (record,) = [r for r in mvtec_records(tiny_root, "widget") if r.label == 1]
    assert record.mask_path == gt / "000_mask.png"


# ----------------------------------------------------------------------------------------------- errors


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    for call in (lambda: mvtec_categories(missing), lambda: mvtec_records(missing, "bottle")):
        with pytest.raises(DataError, match="no_such_dataset") as info:
            call()
        assert "does not exist" in str(info.value)
        assert "ground_truth/<defect>/<id>_mask.png" in str(info.value)  # the expected layout


def test_root_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "dataset.zip"
    file.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"dataset\.zip"):
        mvtec_categories(file)


def test_root_without_categories(tmp_path: Path) -> None:
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)  # no test/ folder: not a category
    with pytest.raises(DataError, match="No category") as info:
        mvtec_categories(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "<root>/<category>/" in str(info.value)


def test_unknown_category_lists_the_valid_ones(synthetic_root: Path) -> None:
    with pytest.raises(DataError, match="'bottle'") as info:
        mvtec_records(synthetic_root, "bottle")
    message = str(info.value)
    assert str(synthetic_root) in message
    assert all(category in message for category in SYNTHETIC_CATEGORIES)


def test_missing_split(tiny_root: Path) -> None:
    with pytest.raises(DataError, match="validation") as info:
        mvtec_records(tiny_root, "widget", split="validation")
    message = str(info.value)
    assert str(tiny_root / "widget" / "validation") in message
    assert "'test'" in message and "'train'" in message  # the splits that do exist
    assert "<root>/<category>/" in message


def test_empty_category(tmp_path: Path) -> None:
    (tmp_path / "empty" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="'empty'") as info:
        mvtec_records(tmp_path, "empty")
    message = str(info.value)
    assert str(tmp_path / "empty" / "test") in message
    assert "<root>/<category>/" in message  # says where images are expected


def test_images_directly_in_the_split_folder_are_not_a_layout(tmp_path: Path) -> None:
    _png(tmp_path / "flat" / "test" / "000.png")
    with pytest.raises(DataError, match="no images"):
        mvtec_records(tmp_path, "flat")


def test_anomalous_image_without_mask(tiny_root: Path) -> None:
    (tiny_root / "widget" / "ground_truth" / "dent" / "000_mask.png").unlink()
    with pytest.raises(DataError, match="require_masks=False") as info:
        mvtec_records(tiny_root, "widget")
    message = str(info.value)
    assert str(tiny_root / "widget" / "test" / "dent" / "000.png") in message
    assert str(tiny_root / "widget" / "ground_truth" / "dent" / "000_mask.png") in message


def test_require_masks_false_accepts_missing_masks(tiny_root: Path) -> None:
    shutil.rmtree(tiny_root / "widget" / "ground_truth")
    records = mvtec_records(tiny_root, "widget", require_masks=False)
    (anomalous,) = [r for r in records if r.label == 1]
    assert anomalous.defect_type == "dent"
    assert anomalous.mask_path is None
    item = AnomalyDataset(records, image_size=16)[records.index(anomalous)]
    assert item["label"].item() == 1
    assert (item["mask"] == 0).all()  # no mask known: zeros, as for image-level datasets


# ------------------------------------------------------------------------------------------ the dataset


def test_dataset_items(synthetic_root: Path) -> None:
    records = mvtec_records(synthetic_root, "capsule", dataset="synthetic")
    dataset = AnomalyDataset(records, image_size=48)
    assert len(dataset) == len(records) == 16
    for index, record in enumerate(records):
        item = dataset[index]
        assert set(item) == ITEM_KEYS
        assert item["image"].shape == (3, 48, 48)
        assert item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, 48, 48)
        assert item["mask"].dtype == torch.float32
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["label"].dtype == torch.int64
        assert item["label"].shape == ()
        assert item["label"].item() == record.label
        assert item["category"] == "capsule"
        assert item["defect_type"] == record.defect_type
        assert item["path"] == str(record.path)
        assert item["dataset"] == "synthetic"
        assert all(isinstance(item[key], str) for key in ("category", "defect_type", "path", "dataset"))
        if record.label == 0:
            assert (item["mask"] == 0).all()
        else:
            assert item["mask"].sum() > 0


def test_dataset_mask_matches_the_file(synthetic_root: Path) -> None:
    (record,) = [r for r in mvtec_records(synthetic_root, "stripes") if r.defect_type == "stain"][:1]
    item = AnomalyDataset([record], image_size=SPEC.image_size)[0]  # same size: no resize, exact copy
    truth = np.asarray(Image.open(record.mask_path)) > 0
    np.testing.assert_array_equal(item["mask"][0].numpy().astype(bool), truth)


def test_dataset_image_is_normalised(synthetic_root: Path) -> None:
    (record,) = mvtec_records(synthetic_root, "grain")[:1]
    dataset = AnomalyDataset([record], image_size=SPEC.image_size)
    restored = dataset.image_transform.denormalize(dataset[0]["image"])
    expected = torch.from_numpy(np.array(Image.open(record.path))).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(restored, expected, atol=1e-5, rtol=0)


def test_dataset_mask_threshold(tmp_path: Path) -> None:
    image = _png(tmp_path / "x.png")
    mask = _png(tmp_path / "x_mask.png", 100, "L")  # e.g. JPEG ringing that is not a defect
    record = SampleRecord(image, 1, "c", "d", mask)
    assert AnomalyDataset([record], 8)[0]["mask"].sum() == 64
    assert AnomalyDataset([record], 8, mask_threshold=127)[0]["mask"].sum() == 0


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_mvtec_ad_bottle() -> None:
    root = shared_data("mvtec_ad")
    assert mvtec_categories(root) == ["bottle"]
    records = mvtec_records(root, "bottle")
    counts = Counter(r.defect_type for r in records)
    assert counts == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert sum(r.label == 0 for r in records) == 20
    assert sum(r.label == 1 for r in records) == 63
    masks = [r.mask_path for r in records if r.label == 1]
    assert len(masks) == len(set(masks)) == 63
    assert all(mask is not None and mask.is_file() for mask in masks)
    assert all(r.mask_path is None for r in records if r.label == 0)


@pytest.mark.shared_data
def test_real_mvtec_ad_bottle_items() -> None:
    records = mvtec_records(shared_data("mvtec_ad"), "bottle")
    pair = [next(r for r in records if r.label == 0), next(r for r in records if r.label == 1)]
    dataset = AnomalyDataset(pair, image_size=32)
    good, bad = dataset[0], dataset[1]
    assert good["image"].shape == bad["image"].shape == (3, 32, 32)
    assert good["label"].item() == 0 and bad["label"].item() == 1
    assert good["mask"].sum() == 0 and bad["mask"].sum() > 0


@pytest.mark.shared_data
def test_real_mvtec_3d_tire_counts() -> None:
    root = shared_data("mvtec_3d_rgb")
    records = mvtec_records(root, "tire", dataset="mvtec3d")
    counts = Counter(r.defect_type for r in records)
    assert counts == {"good": 10, "combined": 5, "contamination": 8, "cut": 8, "hole": 8}
    assert all(r.mask_path is not None and r.mask_path.is_file() for r in records if r.label == 1)


@pytest.mark.shared_data
@pytest.mark.parametrize("defect", ["cut", "hole", "combined"])  # 254 only, 253 only, mixed values
def test_real_mvtec_3d_tire_masks_with_253_254_become_1(defect: str) -> None:
    records = [r for r in mvtec_records(shared_data("mvtec_3d_rgb"), "tire") if r.defect_type == defect]
    record = records[0]
    raw = np.asarray(Image.open(record.mask_path))
    assert set(np.unique(raw)) & {253, 254}, "the MVTec 3D quirk this test is about"
    loaded = np.asarray(load_mask(record.mask_path))
    np.testing.assert_array_equal(loaded == 255, raw > 0)
    item = AnomalyDataset([record], image_size=128)[0]
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}


@pytest.mark.shared_data
def test_real_mvtec_3d_tire_non_square_images_come_out_square() -> None:
    records = mvtec_records(shared_data("mvtec_3d_rgb"), "tire")
    record = next(r for r in records if r.defect_type == "contamination")
    with Image.open(record.path) as raw:
        assert raw.size[0] != raw.size[1]
        assert sorted(raw.size) == [600, 800]
    item = AnomalyDataset([record], image_size=64)[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["mask"].shape == (1, 64, 64)
    assert item["mask"].sum() > 0
