"""Tests for the industrial benchmark readers (MVTec 3D-AD, VisA, BTAD, MPDD, DTD-Synthetic, KSDD, DAGM, Real-IAD)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fakes_industrial import WRITERS, mask, write_dagm, write_mvtec3d, write_realiad, write_visa
from PIL import Image

from conftest import shared_data
from zsad.data.datamodule import BenchmarkDataModule
from zsad.data.datasets.base import NORMAL, AnomalyDataset
from zsad.data.datasets.benchmark import Benchmark
from zsad.data.datasets.industrial import INDUSTRIAL_BENCHMARKS
from zsad.data.transforms import load_mask
from zsad.errors import DataError
from zsad.registry import DATAMODULES, DATASETS, first_docstring_line

NAMES = sorted(WRITERS)
BY_NAME = {cls.name: cls for cls in INDUSTRIAL_BENCHMARKS}


@pytest.fixture(params=NAMES)
def fake(request, tmp_path: Path) -> tuple[str, Path, dict]:
    """``(name, root, expected)`` for one benchmark's fake layout."""
    name = request.param
    root = tmp_path / name
    return name, root, WRITERS[name](root)


def _first_anomalous(benchmark: Benchmark, category: str):
    return next(r for r in benchmark.records(category, "test") if r.label == 1)


# ------------------------------------------------------------------------------------------ records


def test_every_benchmark_has_a_fake() -> None:
    assert set(NAMES) == set(BY_NAME) == {"mvtec3d", "visa", "btad", "mpdd", "dtd", "ksdd", "dagm", "realiad"}


def test_categories_and_records_per_split(fake) -> None:
    name, root, expected = fake
    benchmark = DATASETS.get(name)(root)
    assert benchmark.categories() == list(expected)
    for category, splits in expected.items():
        for split, counts in splits.items():
            records = benchmark.records(category, split)
            assert Counter(r.defect_type for r in records) == counts, (category, split)
            for record in records:
                assert record.path.is_file()
                assert (record.category, record.dataset) == (category, name)
                assert record.mask_threshold == 0
                if record.defect_type == NORMAL:
                    assert record.label == 0 and record.mask_path is None
                else:
                    assert record.label == 1 and record.mask_path is not None and record.mask_path.is_file()


def test_splits_match_the_fakes(fake) -> None:
    name, _, expected = fake
    assert {split for splits in expected.values() for split in splits} == set(DATASETS.get(name).splits)


# ------------------------------------------------------------------------------------------ datamodules


def test_datamodule_test_loader(fake) -> None:
    name, root, expected = fake
    module = DATAMODULES.get(name)(root=str(root), image_size=32, batch_size=4, num_workers=0)
    seen = 0
    for batch in module.test_dataloader():
        n = batch["image"].shape[0]
        assert batch["image"].shape == (n, 3, 32, 32)
        assert batch["mask"].shape == (n, 1, 32, 32)
        has_defect = (batch["mask"].flatten(1) > 0).any(dim=1)
        assert has_defect.tolist() == (batch["label"] == 1).tolist()
        seen += n
    assert seen == sum(splits["test"].total() for splits in expected.values())


# ------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", NAMES)
def test_registry_resolves(name: str) -> None:
    benchmark = DATASETS.get(name)
    module = DATAMODULES.get(name)
    assert benchmark is BY_NAME[name] and benchmark.name == name
    assert issubclass(module, BenchmarkDataModule) and module.benchmark is benchmark
    assert first_docstring_line(benchmark) and first_docstring_line(module)
    assert benchmark.download.startswith("http") and benchmark.layout and benchmark.title
    assert len(benchmark.known_categories) in (1, 3, 6, 10, 12, 30)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", NAMES)
def test_missing_root(name: str, tmp_path: Path) -> None:
    benchmark = DATASETS.get(name)(tmp_path / "absent")
    with pytest.raises(DataError, match="does not exist") as info:
        benchmark.categories()
    assert benchmark.layout in str(info.value) and benchmark.download in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_empty_root_names_the_layout(name: str, tmp_path: Path) -> None:
    benchmark = DATASETS.get(name)(tmp_path)
    with pytest.raises(DataError) as info:
        benchmark.categories()
    assert benchmark.layout in str(info.value)


def test_unknown_category_lists_the_valid_ones(fake) -> None:
    name, root, expected = fake
    with pytest.raises(DataError, match="Unknown category 'nonexistent'") as info:
        DATASETS.get(name)(root).records("nonexistent")
    assert f"Valid categories: {', '.join(expected)}." in str(info.value)


def test_anomalous_image_without_mask(fake) -> None:
    name, root, expected = fake
    category = next(iter(expected))
    record = _first_anomalous(DATASETS.get(name)(root), category)
    record.mask_path.unlink()
    with pytest.raises(DataError) as info:
        DATASETS.get(name)(root).records(category, "test")
    assert str(record.path) in str(info.value) and str(record.mask_path.parent) in str(info.value)


# ------------------------------------------------------------------------------------------ per benchmark


def test_mvtec3d_layout_is_detected_per_category(tmp_path: Path) -> None:
    expected = write_mvtec3d(tmp_path, "official", ("bagel",)) | write_mvtec3d(tmp_path, "mvtec", ("tire",))
    benchmark = DATASETS.get("mvtec3d")(tmp_path)
    assert benchmark.categories() == ["bagel", "tire"]
    assert benchmark.is_official("bagel") and not benchmark.is_official("tire")
    for category in expected:
        records = benchmark.records(category)
        assert Counter(r.defect_type for r in records) == expected[category]["test"]
    bagel = benchmark.records("bagel")
    assert all(r.path.parent.name == "rgb" for r in bagel)
    assert {r.mask_path.parent.name for r in bagel if r.label} == {"gt"}
    assert {r.mask_path.parent.name for r in benchmark.records("tire") if r.label} == {"cut", "contamination"}


def test_mvtec3d_masks_of_253_are_anomalous(tmp_path: Path) -> None:
    write_mvtec3d(tmp_path)
    for record in DATASETS.get("mvtec3d")(tmp_path).records("bagel"):
        if record.label:
            assert np.asarray(Image.open(record.mask_path)).max() in (253, 254)
            assert load_mask(record.mask_path, record.mask_threshold).getbbox() is not None


def test_visa_missing_split_csv(tmp_path: Path) -> None:
    write_visa(tmp_path)
    (tmp_path / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DataError) as info:
        DATASETS.get("visa")(tmp_path).categories()
    message = str(info.value)
    assert str(tmp_path / "split_csv" / "1cls.csv") in message
    assert "split_csv" in message and "https://github.com/amazon-science/spot-diff" in message


def test_visa_duplicate_row(tmp_path: Path) -> None:
    write_visa(tmp_path)
    csv = tmp_path / "split_csv" / "1cls.csv"
    lines = csv.read_text().splitlines()
    anomaly = next(line for line in lines if ",test,anomaly," in line)
    csv.write_text("\n".join([*lines, anomaly]) + "\n")
    with pytest.raises(DataError, match="more than once") as info:
        DATASETS.get("visa")(tmp_path).records("candle")
    assert anomaly.split(",")[3].split("/")[-1] in str(info.value)


def test_visa_bad_label_and_missing_image(tmp_path: Path) -> None:
    write_visa(tmp_path)
    csv = tmp_path / "split_csv" / "1cls.csv"
    original = csv.read_text()
    csv.write_text(original.replace("candle,test,anomaly,", "candle,test,defective,", 1))
    with pytest.raises(DataError, match="'defective'"):
        DATASETS.get("visa")(tmp_path).records("candle")
    csv.write_text(original)
    (tmp_path / "candle" / "Data" / "Images" / "Normal" / "0002.JPG").unlink()
    with pytest.raises(DataError, match="missing on disk") as info:
        DATASETS.get("visa")(tmp_path).records("candle")
    assert "0002.JPG" in str(info.value)


def test_btad_mask_with_another_suffix(tmp_path: Path) -> None:
    write_btad = WRITERS["btad"]
    write_btad(tmp_path)
    ground_truth = tmp_path / "02" / "ground_truth" / "ko"
    (ground_truth / "0000.png").unlink()
    mask(ground_truth / "0000.bmp")
    record = _first_anomalous(DATASETS.get("btad")(tmp_path), "02")
    assert record.mask_path == ground_truth / "0000.bmp"


def test_ksdd_is_one_test_only_category(tmp_path: Path) -> None:
    WRITERS["ksdd"](tmp_path)
    benchmark = DATASETS.get("ksdd")(tmp_path)
    assert benchmark.categories() == ["ksdd"]
    anomalous = sorted((r.path.parent.name, r.path.name) for r in benchmark.records("ksdd") if r.label)
    assert anomalous == [("kos01", "Part1.jpg"), ("kos02", "Part0.jpg")]
    assert all(r.mask_path.name == r.path.stem + "_label.bmp" for r in benchmark.records("ksdd") if r.label)
    with pytest.raises(DataError, match="no split 'train'"):
        benchmark.records("ksdd", "train")


def test_ksdd_image_without_label(tmp_path: Path) -> None:
    WRITERS["ksdd"](tmp_path)
    (tmp_path / "kos01" / "Part0_label.bmp").unlink()
    with pytest.raises(DataError, match="no label mask") as info:
        DATASETS.get("ksdd")(tmp_path).records("ksdd")
    assert str(tmp_path / "kos01" / "Part0.jpg") in str(info.value)


def test_dagm_flags_and_label_files(tmp_path: Path) -> None:
    write_dagm(tmp_path)
    benchmark = DATASETS.get("dagm")(tmp_path)
    defective = [r.path.name for r in benchmark.records("Class1", "train") if r.label]
    assert defective == ["0002.PNG", "0004.PNG"]
    # without Labels.txt the label files decide; a flag 1 without a label file is an error
    (tmp_path / "Class1" / "Train" / "Label" / "Labels.txt").unlink()
    assert [r.path.name for r in benchmark.records("Class1", "train") if r.label] == defective
    labels = tmp_path / "Class2" / "Test" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text().replace("5\t0\t0005.PNG", "5\t1\t0005.PNG"))
    with pytest.raises(DataError, match=r"0005\.PNG") as info:
        benchmark.records("Class2", "test")
    assert "0005_label.PNG" in str(info.value)


def test_dagm_categories_sort_numerically(tmp_path: Path) -> None:
    write_dagm(tmp_path)
    shutil.copytree(tmp_path / "Class2", tmp_path / "Class10")
    (tmp_path / "Unrelated").mkdir()
    assert DATASETS.get("dagm")(tmp_path).categories() == ["Class1", "Class2", "Class10"]


@pytest.mark.parametrize(("nested", "prefixed"), [(True, False), (False, True)])
def test_realiad_json_and_image_folder_variants(tmp_path: Path, nested: bool, prefixed: bool) -> None:
    expected = write_realiad(tmp_path, nested_jsons=nested, with_category_prefix=prefixed)
    benchmark = DATASETS.get("realiad")(tmp_path)
    assert benchmark.categories() == list(expected)
    records = benchmark.records("bottle_cap")
    assert Counter(r.defect_type for r in records) == expected["bottle_cap"]["test"]
    assert all(r.path.is_file() for r in records)


def test_realiad_missing_jsons_and_images(tmp_path: Path) -> None:
    write_realiad(tmp_path)
    shutil.rmtree(tmp_path / "realiad_1024")
    with pytest.raises(DataError, match="Cannot find the Real-IAD image") as info:
        DATASETS.get("realiad")(tmp_path).records("audiojack")
    assert str(tmp_path / "realiad_1024" / "audiojack") in str(info.value)
    assert str(tmp_path / "realiad_raw") in str(info.value)
    shutil.rmtree(tmp_path / "realiad_jsons")
    with pytest.raises(DataError, match="No Real-IAD split JSONs") as info:
        DATASETS.get("realiad")(tmp_path).categories()
    assert str(tmp_path / "realiad_jsons" / "realiad_jsons") in str(info.value)


def test_sample_loads_at_the_requested_size(tmp_path: Path) -> None:
    write_visa(tmp_path)
    records = DATASETS.get("visa")(tmp_path).records("capsules")
    item = AnomalyDataset(records, 32)[len(records) - 1]
    assert item["label"].item() == 1 and item["mask"].sum() > 0 and item["defect_type"] == "anomaly"


# ------------------------------------------------------------------------------------------ real subsets


@pytest.mark.shared_data
def test_real_mvtec3d_tire() -> None:
    benchmark = DATASETS.get("mvtec3d")(shared_data("mvtec_3d_rgb"))
    assert benchmark.categories() == ["tire"]
    assert not benchmark.is_official("tire")
    records = benchmark.records("tire")
    assert Counter(r.defect_type for r in records) == {"good": 10, "combined": 5, "contamination": 8, "cut": 8,
                                                       "hole": 8}  # fmt: skip
    anomalous = [r for r in records if r.label == 1]
    assert all(r.mask_path is not None and r.mask_path.is_file() for r in anomalous)
    for record in anomalous:
        assert load_mask(record.mask_path, record.mask_threshold).getbbox() is not None, record.mask_path
