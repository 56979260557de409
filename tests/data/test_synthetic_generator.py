"""Tests for the procedural MVTec-style synthetic data generator."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsad.data.synthetic.defects import MARK_COLOUR
from zsad.data.synthetic.generator import (
    DEFECT_TYPES,
    MARKER_NAME,
    MAX_DEFECT_FRACTION,
    OBJECT_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    TEXTURE_CATEGORIES,
    SyntheticSpec,
    apply_defect,
    generate_synthetic_dataset,
    render_category_image,
    sample_rng,
)
from zsad.data.synthetic.patterns import object_mask

SPEC = SyntheticSpec()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), SPEC)


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _defect_files(root: Path) -> list[tuple[str, str, Path, Path]]:
    return [
        (category, defect, image, root / category / "ground_truth" / defect / f"{image.stem}_mask.png")
        for category in SPEC.categories
        for defect in SPEC.defects
        for image in sorted((root / category / "test" / defect).glob("*.png"))
    ]


def test_category_families() -> None:
    assert len(TEXTURE_CATEGORIES) >= 4
    assert len(OBJECT_CATEGORIES) >= 4
    assert SYNTHETIC_CATEGORIES == TEXTURE_CATEGORIES + OBJECT_CATEGORIES
    assert DEFECT_TYPES == ("scratch", "hole", "stain", "crack", "missing")


def test_layout_matches_spec(dataset: Path) -> None:
    assert sorted(p.name for p in dataset.iterdir() if p.is_dir()) == sorted(SPEC.categories)
    for category in SPEC.categories:
        folder = dataset / category
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(("good", *SPEC.defects))
        assert len(list((folder / "train" / "good").glob("*.png"))) == SPEC.n_train_good
        assert len(list((folder / "test" / "good").glob("*.png"))) == SPEC.n_test_good
        assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(SPEC.defects)
        for defect in SPEC.defects:
            images = sorted(p.stem for p in (folder / "test" / defect).glob("*.png"))
            masks = sorted(p.stem for p in (folder / "ground_truth" / defect).glob("*.png"))
            assert len(images) == SPEC.n_test_per_defect
            assert masks == [f"{stem}_mask" for stem in images]
    assert (folder / "train" / "good" / "000.png").exists()


def test_image_formats(dataset: Path) -> None:
    image = Image.open(dataset / "disc" / "test" / "hole" / "000.png")
    mask = Image.open(dataset / "disc" / "ground_truth" / "hole" / "000_mask.png")
    assert image.mode == "RGB"
    assert image.size == (SPEC.image_size, SPEC.image_size)
    assert mask.mode == "L"
    assert mask.size == image.size


def test_masks_are_binary_nonempty_and_small(dataset: Path) -> None:
    for _, _, _, mask_path in _defect_files(dataset):
        mask = _load(mask_path)
        assert set(np.unique(mask)) <= {0, 255}, mask_path
        assert (mask == 255).any(), mask_path
        assert (mask == 255).mean() < MAX_DEFECT_FRACTION, mask_path


def test_defect_changes_exactly_the_masked_pixels(dataset: Path) -> None:
    for category, defect, image_path, mask_path in _defect_files(dataset):
        index = int(image_path.stem)
        rng = sample_rng(SPEC.seed, category, f"test/{defect}", index)
        good = render_category_image(category, rng, SPEC.image_size).astype(np.int16)
        diff = np.abs(_load(image_path).astype(np.int16) - good).mean(axis=-1)
        mask = _load(mask_path) == 255
        assert diff[mask].mean() > 20, (category, defect, index)
        assert diff[~mask].max() == 0, (category, defect, index)


def test_marked_defects_share_one_colour_and_keep_the_masks(dataset: Path, tmp_path: Path) -> None:
    spec = SyntheticSpec(categories=("checker", "capsule"), defect_look="marked")
    marked = generate_synthetic_dataset(tmp_path, spec)
    for category, defect, image_path, mask_path in _defect_files(marked):
        natural = _load(dataset / image_path.relative_to(marked)).astype(np.int16)
        image = _load(image_path).astype(np.int16)
        mask = _load(mask_path) == 255
        assert np.array_equal(mask, _load(dataset / mask_path.relative_to(marked)) == 255)
        assert np.array_equal(image[~mask], natural[~mask]), (category, defect)
        mean = image[mask].mean(axis=0) / 255
        assert np.abs(mean - np.asarray(MARK_COLOUR)).max() < 0.05, (category, defect, mean)
    for good in (marked / "checker" / "test" / "good").glob("*.png"):
        assert good.read_bytes() == (dataset / good.relative_to(marked)).read_bytes()


def test_object_defects_lie_on_the_object() -> None:
    for category, defect in itertools.product(OBJECT_CATEGORIES, DEFECT_TYPES):
        for index in range(4):
            rng = sample_rng(3, category, f"test/{defect}", index)
            good = render_category_image(category, rng, 64)
            _, mask = apply_defect(good, defect, rng, category)
            # the loose threshold admits the object's antialiased outline, but no plain background
            assert not (mask & ~object_mask(good, category, threshold=0.06)).any(), (category, defect, index)


def test_large_images_work() -> None:
    for category, defect in itertools.product(SYNTHETIC_CATEGORIES, DEFECT_TYPES):
        rng = np.random.default_rng(7)
        good = render_category_image(category, rng, 256)
        image, mask = apply_defect(good, defect, rng, category)
        assert image.shape == (256, 256, 3)
        assert image.dtype == np.uint8
        assert mask.shape == (256, 256)
        assert mask.dtype == np.bool_
        assert 0 < mask.mean() < MAX_DEFECT_FRACTION
        assert (image[~mask] == good[~mask]).all()


def test_same_spec_is_byte_identical(tmp_path: Path) -> None:
    first = _files(generate_synthetic_dataset(tmp_path / "a", SPEC))
    second = _files(generate_synthetic_dataset(tmp_path / "b", SPEC))
    assert first == second
    assert len(first) > 100


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = generate_synthetic_dataset(tmp_path, SyntheticSpec(seed=1))
    a, b = _files(dataset), _files(other)
    pngs = [name for name in a if name.endswith(".png")]
    assert all(a[name] != b[name] for name in pngs if "ground_truth" not in name)


def test_other_categories_do_not_change_a_category(dataset: Path, tmp_path: Path) -> None:
    alone = generate_synthetic_dataset(tmp_path, SyntheticSpec(categories=("ring",)))
    assert _files(alone / "ring") == _files(dataset / "ring")


def test_same_spec_is_not_rewritten(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path, SPEC)
    before = _mtimes(root)
    assert generate_synthetic_dataset(str(tmp_path), SPEC) == root
    assert _mtimes(root) == before
    assert json.loads((root / MARKER_NAME).read_text()) == json.loads(json.dumps(SPEC.to_record()))


def test_changed_spec_rewrites_and_drops_stale_files(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "reused", SPEC)
    smaller = SyntheticSpec(categories=("stripes", "disc"), defects=("hole",), n_test_good=2, seed=5)
    root = generate_synthetic_dataset(tmp_path / "reused", smaller)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["disc", "stripes"]
    assert len(list((root / "disc" / "test" / "good").glob("*.png"))) == 2
    assert sorted(p.name for p in (root / "disc" / "test").iterdir()) == ["good", "hole"]
    assert _files(root) == _files(generate_synthetic_dataset(tmp_path / "fresh", smaller))


def test_interrupted_run_is_regenerated(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path, SPEC)
    original = (root / "tile" / "test" / "crack" / "001.png").read_bytes()
    (root / "tile" / "test" / "crack" / "001.png").write_bytes(b"half written")
    (root / MARKER_NAME).unlink()
    generate_synthetic_dataset(root, SPEC)
    assert (root / "tile" / "test" / "crack" / "001.png").read_bytes() == original
    assert (root / MARKER_NAME).exists()
    assert not list(root.glob("*.tmp"))


def test_categories_look_different_but_consistent() -> None:
    # mean and spread of colour per image: a category is a "product", so its images cluster together
    features = {
        category: np.array(
            [
                np.r_[image.mean(axis=(0, 1)), image.std(axis=(0, 1))]
                for image in (
                    render_category_image(category, sample_rng(0, category, "train/good", i), 64).astype(float)
                    for i in range(6)
                )
            ]
        )
        for category in SYNTHETIC_CATEGORIES
    }
    centres = {category: f.mean(axis=0) for category, f in features.items()}
    for a, b in itertools.combinations(SYNTHETIC_CATEGORIES, 2):
        assert np.linalg.norm(centres[a][:3] - centres[b][:3]) > 20, (a, b)
    for category, rows in features.items():
        assert len({row.tobytes() for row in rows}) == len(rows), f"{category} images are identical"
        for row in rows:
            nearest = min(centres, key=lambda c: np.linalg.norm(row - centres[c]))
            assert nearest == category


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"categories": ("stripes", "bogus")}, "bogus"),
        ({"defects": ("hole", "dent")}, "dent"),
        ({"categories": ()}, "categories"),
        ({"categories": "stripes"}, "categories"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8}, "image_size"),
        ({"n_train_good": 0}, "n_train_good"),
        ({"n_test_good": -1}, "n_test_good"),
        ({"n_test_per_defect": 0}, "n_test_per_defect"),
        ({"seed": -3}, "seed"),
        ({"defect_look": "glowing"}, "glowing"),
    ],
)
def test_spec_validation_names_the_bad_value(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SyntheticSpec(**kwargs)


def test_spec_validation_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="capsule"):
        SyntheticSpec(categories=("nope",))
    with pytest.raises(ValueError, match="scratch"):
        SyntheticSpec(defects=("nope",))


def test_spec_accepts_lists_as_tuples() -> None:
    spec = SyntheticSpec(categories=["disc"], defects=["hole"])  # type: ignore[arg-type]
    assert spec.categories == ("disc",)
    assert spec.defects == ("hole",)


def test_render_and_defect_reject_unknown_names() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="plaid"):
        render_category_image("plaid", rng, 32)
    image = render_category_image("disc", rng, 32)
    with pytest.raises(ValueError, match="dent"):
        apply_defect(image, "dent", rng, "disc")
