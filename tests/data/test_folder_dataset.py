"""FolderBenchmark / FolderDataModule: users' own data as folders or as a CSV/JSON manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fakes_medical import folder_manifest_rows, write_csv, write_folder_data, write_image, write_mask
from jsonargparse import ArgumentParser

from zsad.data.datasets.folder import FolderBenchmark, FolderDataModule
from zsad.errors import ConfigError, DataError
from zsad.registry import DATAMODULES, DATASETS

DIRS = {"normal_dir": "good", "abnormal_dirs": {"scratch": "scratch", "dent": "dent"}}
MASKS = {"mask_dirs": {"scratch": "masks/scratch"}, "mask_suffix": "_mask"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """Folders good/ (3), scratch/ (2, masks), dent/ (2) plus CSV and JSON manifests of the same samples."""
    root = tmp_path_factory.mktemp("folder")
    files = write_folder_data(root)
    rows = folder_manifest_rows(files)
    write_csv(root / "manifest.csv", rows)
    (root / "lists").mkdir()
    relative = [{k: f"../{v}" if k in ("image", "mask") else v for k, v in row.items()} for row in rows]
    (root / "lists" / "named.json").write_text(json.dumps(relative))  # paths relative to the manifest's folder
    return root, files


def _key(records) -> list[tuple]:
    return sorted((str(r.path), r.label, r.category, r.defect_type, str(r.mask_path), r.dataset) for r in records)


def test_registered_as_folder():
    assert DATASETS.get("folder") is FolderBenchmark
    assert DATAMODULES.get("folder") is FolderDataModule and FolderDataModule.benchmark is FolderBenchmark


def test_directory_mode(data):
    root, files = data
    records = FolderBenchmark(root, **DIRS, **MASKS).records("folder")
    assert [r.defect_type for r in records] == ["good"] * 3 + ["scratch"] * 2 + ["dent"] * 2
    assert [r.label for r in records] == [0] * 3 + [1] * 4
    masked = {r.path.name: r.mask_path.name for r in records if r.mask_path is not None}
    assert masked == {Path(p).name: f"{Path(p).stem}_mask.png" for p in files["scratch"]}
    assert {r.category for r in records} == {"folder"} and {r.dataset for r in records} == {"folder"}


def test_abnormal_dirs_as_a_list_name_the_defects(data):
    root, _ = data
    as_list = FolderBenchmark(root, normal_dir="good", abnormal_dirs=["scratch", "dent"], **MASKS).records("folder")
    assert _key(as_list) == _key(FolderBenchmark(root, **DIRS, **MASKS).records("folder"))


@pytest.mark.parametrize("manifest", ["manifest.csv", "lists/named.json"])
def test_manifest_gives_the_same_records_as_the_folders(data, manifest):
    root, _ = data
    from_dirs = FolderBenchmark(root, **DIRS, **MASKS).records("folder")
    from_manifest = FolderBenchmark(root, manifest=manifest).records("folder")
    assert _key(from_manifest) == _key(from_dirs)


def test_root_with_a_manifest_needs_no_options(data):
    root, _ = data
    # a protocol source builds DATASETS.get(name)(root): <root>/manifest.csv is read
    assert _key(DATASETS.get("folder")(root).records("folder")) == _key(
        FolderBenchmark(root, **DIRS, **MASKS).records("folder")
    )


def test_manifest_words_categories_splits_and_jpeg_masks(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", "P")
    write_image(tmp_path / "c.png", "RGBA")
    write_mask(tmp_path / "c_mask.jpg")
    rows = [
        {"image": "a.png", "label": "normal", "category": "tile"},
        {"image": "b.png", "label": "Anomaly", "category": "tile", "split": "train"},
        {"image": "c.png", "label": " anomaly ", "category": "wood", "mask": "c_mask.jpg", "defect_type": "crack"},
    ]
    benchmark = FolderBenchmark(tmp_path, manifest=str(write_csv(tmp_path / "m.csv", rows)))
    assert benchmark.categories() == ["tile", "wood"]
    assert [(r.path.name, r.label, r.defect_type) for r in benchmark.records("tile")] == [("a.png", 0, "good")]
    assert [(r.path.name, r.defect_type) for r in benchmark.records("tile", "train")] == [("b.png", "anomaly")]
    (wood,) = benchmark.records("wood")
    assert wood.mask_path.name == "c_mask.jpg" and wood.mask_threshold == 127


@pytest.mark.parametrize(
    "options",
    [{**DIRS, **MASKS}, {"manifest": "manifest.csv"}],
    ids=["dirs", "manifest"],
)
def test_datamodule_loader(data, options):
    root, _ = data
    module = FolderDataModule(str(root), **options, image_size=32, batch_size=4, num_workers=0)
    batches = list(module.test_dataloader())
    images, masks = torch.cat([b["image"] for b in batches]), torch.cat([b["mask"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    assert images.shape == (7, 3, 32, 32) and masks.shape == (7, 1, 32, 32) and images.dtype == torch.float32
    defects = [d for b in batches for d in b["defect_type"]]
    has_mask = masks.flatten(1).sum(1) > 0
    assert has_mask.tolist() == [d == "scratch" for d in defects]
    assert labels.tolist() == [int(d != "good") for d in defects]


def test_datamodule_reads_its_options_from_yaml(data):
    root, _ = data
    parser = ArgumentParser()
    parser.add_class_arguments(FolderDataModule, "data")
    config = parser.parse_string(
        f"data:\n  root: {root}\n  normal_dir: good\n  abnormal_dirs: [scratch, dent]\n"
        f"  mask_dirs: {{scratch: masks/scratch}}\n  mask_suffix: _mask\n  num_workers: 0\n"
    )
    module = parser.instantiate(config).data
    assert isinstance(module.dataset, FolderBenchmark)
    assert len(module.target_records()) == 7 and module.targets() == ["folder"]


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({**DIRS, "manifest": "manifest.csv"}, "either folders .* or a manifest, not both"),
        ({"mask_dirs": {"scratch": "masks/scratch"}}, "also give abnormal_dirs"),
        ({"normal_dir": "good", "abnormal_dirs": ["scratch"], "mask_dirs": {"dent": "x"}}, r"\['dent'\]"),
        ({"abnormal_dirs": {"good": "scratch"}}, "reserved for normal images"),
        ({"abnormal_dirs": ["a/scratch", "b/scratch"]}, "'scratch' is given twice"),
        ({"abnormal_dirs": "scratch"}, "give a list of folders"),
    ],
)
def test_bad_options(tmp_path, options, match):
    with pytest.raises(ConfigError, match=match):
        FolderBenchmark(tmp_path, **options)
    with pytest.raises(ConfigError, match=match):
        FolderDataModule(str(tmp_path), **options)


def test_neither_folders_nor_manifest(tmp_path):
    module = FolderDataModule(str(tmp_path), num_workers=0)
    with pytest.raises(ConfigError, match=r"give normal_dir and/or abnormal_dirs .* or a manifest"):
        module.target_records()


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({"normal_dir": "nothing"}, "nothing' (normal_dir)"),
        ({"normal_dir": "good", "abnormal_dirs": {"dent": "dents"}}, "dents' (abnormal_dirs['dent'])"),
        ({**DIRS, "mask_dirs": {"dent": "masks/dent"}}, "masks/dent' (mask_dirs['dent'])"),
        ({"manifest": "absent.csv"}, "Manifest '"),
    ],
)
def test_missing_folder(data, options, missing):
    root, _ = data
    with pytest.raises(DataError, match="does not exist") as info:
        FolderBenchmark(root, **options).records("folder")
    assert missing in str(info.value)


def test_masked_image_without_mask_and_mask_without_image(data, tmp_path):
    root, files = data
    options = {"normal_dir": str(root / "good"), "abnormal_dirs": {"scratch": str(root / "scratch")}}
    write_mask(tmp_path / "scratch" / "stray_mask.png")
    with pytest.raises(DataError, match=r"'scratch': 2 image\(s\) have no mask.*mask_suffix \(now ''\)") as info:
        FolderBenchmark(root, **options, mask_dirs={"scratch": str(tmp_path / "scratch")}).records("folder")
    assert f"{tmp_path / 'scratch' / Path(files['scratch'][0]).stem}" in str(info.value)
    for path in files["scratch"]:
        write_mask(tmp_path / "scratch" / f"{Path(path).stem}_mask.png")
    with pytest.raises(DataError, match=r"1 mask\(s\) have no image: .*stray_mask.png.*expected at .*scratch/stray\."):
        FolderBenchmark(root, **options, mask_dirs={"scratch": str(tmp_path / "scratch")}, mask_suffix="_mask").records(
            "folder"
        )


def _manifest(tmp_path, rows, suffix=".csv", columns=None) -> FolderBenchmark:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name)
    write_mask(tmp_path / "a_mask.png")
    if suffix == ".json":
        (tmp_path / "m.json").write_text(json.dumps(rows))
    else:
        write_csv(tmp_path / "m.csv", rows, columns)
    return FolderBenchmark(tmp_path, manifest=f"m{suffix}")


@pytest.mark.parametrize("suffix", [".csv", ".json"])
@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"image": "a.png", "label": "1"}, {"image": "b.png", "label": "bad"}], "row 2.*unknown label 'bad'"),
        ([{"image": "a.png", "label": "1"}, {"image": "b.png", "label": "2"}], "row 2.*unknown label '2'"),
        ([{"image": "a.png", "label": "1", "mask": "nope.png"}], "row 1.*mask '.*nope.png' of image .* not exist"),
        ([{"image": "a.png", "label": "1"}, {"image": "./a.png", "label": "1"}], "row 2.*lists .*a.png' again .*row 1"),
        ([{"image": "c.png", "label": "1"}], "row 1.*image '.*c.png' does not exist"),
        ([{"image": "a.png"}], "row 1.*no 'label' value"),
        ([{"image": "a.png", "label": "0", "defect_type": "dent"}], "row 1.*defect_type 'dent' contradicts label"),
        ([{"image": "a.png", "label": "1", "split": "val"}], "row 1.*unknown split 'val'"),
    ],
)
def test_bad_manifest_rows(tmp_path, rows, match, suffix):
    with pytest.raises(DataError, match=match):
        _manifest(tmp_path, rows, suffix).records("folder")


def test_unknown_manifest_column(tmp_path):
    with pytest.raises(DataError, match=r"unknown column\(s\) \['lable'\] in the header"):
        _manifest(tmp_path, [{"image": "a.png", "lable": "1"}]).categories()
    with pytest.raises(DataError, match=r"row 2: unknown column\(s\) \['maks'\]"):
        _manifest(
            tmp_path, [{"image": "a.png", "label": 1}, {"image": "b.png", "label": 1, "maks": "x"}], ".json"
        ).categories()


def test_duplicate_images_in_folders_are_refused(data):
    root, _ = data
    with pytest.raises(DataError, match="listed more than once"):
        FolderBenchmark(root, normal_dir="good", abnormal_dirs={"dent": "good"}).records("folder")


@pytest.mark.parametrize("text", ['{"image": "a.png"}', "not json"])
def test_manifest_json_must_be_a_list(tmp_path, text):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(DataError, match=r"m\.json"):
        FolderBenchmark(tmp_path, manifest="m.json").records("folder")
