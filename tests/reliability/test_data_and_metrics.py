"""Bad input and faults in data, metrics and model inputs: one table of cases, each with its outcome.

Every row builds a tiny case under ``tmp_path`` (8 px images, no backbone unless the row is about one), runs it and
checks the promise of README.md "Bad input": an error of a zsad type whose one-line message names the file, key or
value (and the fix), or a safe outcome (a file listed under ``skipped`` with its reason, a metric left undefined with
its real reason), and that nothing was lost: every file on disk is either scored or listed. The evaluation loop is
the one of ``ZSADModule.test_step`` (drop and list the unreadable samples, score the rest) with a stand-in model that
scores each image by its own pixels.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.backbones import TinyRandomBackbone
from zsad.data import MVTecDataModule, ZSADDataModule
from zsad.data.batch import batch_size, split_valid
from zsad.data.datasets.folder import FolderDataModule
from zsad.errors import ConfigError, DataError, NonFiniteScoreError
from zsad.metrics.aupro import aupro_cflow
from zsad.metrics.evaluator import Evaluator
from zsad.metrics.results import Results
from zsad.structures import Scores

SIZE = 8  # image side on disk and after loading


# ------------------------------------------------------------------------------------------------ tiny data


def image(path: Path, value: int = 100, size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    """An RGB picture in whatever format the suffix names; ``value`` varies the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(size[0] * size[1] * 3).reshape(size[1], size[0], 3) * 7 + value) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (SIZE, SIZE), mode: str = "L") -> Path:
    """A mask with a 2 x 2 anomalous square, as 8-bit L, 16-bit (``"I;16"``) or RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    high = {"L": 255, "I;16": 65535, "RGB": 255}[mode]
    array = np.zeros((size[1], size[0]), np.uint16 if mode == "I;16" else np.uint8)
    array[2:4, 2:4] = high
    picture = Image.fromarray(np.stack([array] * 3, -1) if mode == "RGB" else array)
    picture.save(path)
    return path


def mvtec(root: Path, category: str = "widget", good: int = 2, defects: int = 2, suffix: str = ".png") -> Path:
    """``<root>/<category>/test/{good,dent}`` with masks in ``ground_truth/dent`` (MVTec AD layout)."""
    for i in range(good):
        image(root / category / "test" / "good" / f"{i:03d}{suffix}", value=i)
    for i in range(defects):
        image(root / category / "test" / "dent" / f"{i:03d}{suffix}", value=50 + i)
        mask(root / category / "ground_truth" / "dent" / f"{i:03d}_mask.png")
    return root


def data(root: Path, **options: Any) -> MVTecDataModule:
    """A test datamodule of the category ``widget`` at 8 px."""
    options = {"target_categories": ["widget"], "image_size": SIZE, "num_workers": 0, **options}
    return MVTecDataModule(str(root), **options)


def stand_in_scores(batch: dict[str, Any]) -> Scores:
    """Scores of a model that calls bright pixels anomalous: the map is the image's channel mean."""
    anomaly_map = batch["image"].mean(dim=1)
    score = anomaly_map.flatten(1).amax(dim=1)
    return Scores(torch.zeros(len(score), 2), score, (), anomaly_map)


def evaluate(datamodule: ZSADDataModule, **evaluator_options: Any) -> Results:
    """The test loop of ``ZSADModule.test_step``, with :func:`stand_in_scores` as the model."""
    evaluator = Evaluator(**evaluator_options)
    loader = datamodule.test_dataloader()
    evaluator.reset(sorted({(r.dataset, r.category) for r in loader.dataset.records}))
    for batch in loader:
        batch, skipped = split_valid(batch)
        evaluator.skip(skipped)
        if batch_size(batch):
            evaluator.update(stand_in_scores(batch), batch)
    return evaluator.compute()


def batch_of(scores: list[float], maps: torch.Tensor, labels: list[int], category: str = "widget") -> tuple:
    """Scores and a batch as a model hands them to :meth:`Evaluator.update` (mask: the top-left pixel)."""
    count = len(scores)
    masks = torch.zeros(count, 1, *maps.shape[-2:])
    masks[torch.tensor(labels).bool(), 0, 0, 0] = 1
    batch = {
        "label": torch.tensor(labels),
        "mask": masks,
        "category": [category] * count,
        "dataset": ["mvtec"] * count,
        "index": torch.arange(count),
        "path": [f"/data/{category}/{i:03d}.png" for i in range(count)],
    }
    scores_tensor = torch.tensor(scores, dtype=torch.float64)
    return Scores(torch.zeros(count, 2), scores_tensor, (), maps), batch


def evaluate_batch(scores: list[float], maps: torch.Tensor, labels: list[int], **options: Any) -> Results:
    evaluator = Evaluator(**options)
    evaluator.update(*batch_of(scores, maps, labels))
    return evaluator.compute()


# ------------------------------------------------------------------------------------------------ checks


def files_under(folder: Path) -> set[str]:
    """Every file (and link) under ``folder``."""
    return {str(p) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def assert_accounted(results: Results, folder: Path, masks: Path | None = None) -> None:
    """Nothing lost: every file under ``folder`` was scored or is listed under ``skipped``, and not both."""
    scored = {entry.path for entry in results.images}
    skipped = {entry["path"] for entry in results.skipped}
    assert not scored & skipped
    assert scored | skipped == files_under(folder)


def skipped_names(results: Results) -> dict[str, str]:
    return {Path(entry["path"]).name: entry["problem"] for entry in results.skipped}


# ------------------------------------------------------------------------------------------------ the cases


def pillow_formats(tmp: Path) -> tuple[Results, Path]:
    root = mvtec(tmp)
    good = root / "widget" / "test" / "good"
    for name in ("010.webp", "011.gif", "012.ppm", "013.tga", "014.JP2", "015.qoi"):
        image(good / name, value=30)
    return evaluate(data(root)), good.parent


def check_pillow_formats(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert results.counts["mvtec"]["widget"] == {"normal": 8, "anomalous": 2}
    assert results.skipped == []
    assert_accounted(results, folder)


def unread_files(tmp: Path) -> tuple[Results, Path]:
    root = mvtec(tmp)
    good = root / "widget" / "test" / "good"
    (good / "notes.txt").write_text("not an image")
    (good / "scan.dcm").write_bytes(b"DICM")
    image(good / "._000.png")  # a macOS fork of 000.png
    return evaluate(data(root)), good.parent


def check_unread_files(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert results.counts["mvtec"]["widget"] == {"normal": 2, "anomalous": 2}
    problems = skipped_names(results)
    assert set(problems) == {"notes.txt", "scan.dcm", "._000.png"}
    assert "suffix '.dcm'" in problems["scan.dcm"] and "hidden file" in problems["._000.png"]
    assert_accounted(results, folder)


def folder_unread(tmp: Path) -> tuple[Results, Path]:
    image(tmp / "own" / "good" / "a.png")
    image(tmp / "own" / "good" / "b.webp")
    (tmp / "own" / "good" / "c.txt").write_text("notes")
    image(tmp / "own" / "bad" / "d.gif", value=200)
    module = FolderDataModule(
        str(tmp / "own"), normal_dir="good", abnormal_dirs=["bad"], image_size=SIZE, num_workers=0
    )
    return evaluate(module, pixel_metrics=[]), tmp / "own"


def check_folder_unread(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert results.counts["folder"]["folder"] == {"normal": 2, "anomalous": 1}
    assert list(skipped_names(results)) == ["c.txt"]
    assert_accounted(results, folder)


def dangling_link(tmp: Path, **options: Any) -> Any:
    root = mvtec(tmp)
    good = root / "widget" / "test" / "good"
    (good / "007.png").symlink_to(good / "gone.png")
    return evaluate(data(root, **options)), good.parent


def check_dangling_link_skipped(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert "broken symbolic link" in skipped_names(results)["007.png"]
    assert results.counts["mvtec"]["widget"] == {"normal": 2, "anomalous": 2}
    assert_accounted(results, folder)


def link_loop(tmp: Path) -> Any:
    root = mvtec(tmp)
    loop = root / "widget" / "test" / "good" / "loop.png"
    loop.symlink_to(loop)
    return evaluate(data(root))


def only_unread_files(tmp: Path) -> Any:
    (tmp / "widget" / "test" / "good").mkdir(parents=True)
    (tmp / "widget" / "test" / "good" / "scan.dcm").write_bytes(b"DICM")
    return data(tmp).test_dataloader()


def one_image_category(tmp: Path) -> Results:
    root = mvtec(tmp, good=0, defects=1)
    return evaluate(data(root))


def check_one_image_category(results: Results) -> None:
    assert results.counts["mvtec"]["widget"] == {"normal": 0, "anomalous": 1}
    assert set(results.per_category["mvtec"]["widget"]) >= {"pixel_auroc", "pixel_aupro", "pixel_aupro_cflow"}
    assert results.undefined["image_auroc"] == {"mvtec/widget": "only anomalous images (1), no normal one"}
    assert [entry.path.endswith("dent/000.png") for entry in results.images] == [True]
    json.dumps(results.to_dict())  # results.json can be written


def non_finite(scores: list[float], pixel: float) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
        maps[1, 2, 2] = pixel
        return evaluate_batch(scores, maps, [0, 1, 1])

    return run


def constant_maps(tmp: Path) -> Results:
    return evaluate_batch([0.1, 0.9, 0.8], torch.full((3, 4, 4), 0.5), [0, 1, 1])


def check_constant_maps(results: Results) -> None:
    reason = results.undefined["pixel_aupro_cflow"]["mvtec/widget"]
    assert reason.startswith("constant anomaly maps (every pixel scores 0.5)")
    assert results.per_category["mvtec"]["widget"]["pixel_auroc"] == 0.5  # the others stay defined
    assert results.per_category["mvtec"]["widget"]["image_auroc"] == 1.0


def no_anomalous_pixel(tmp: Path) -> Results:
    image(tmp / "own" / "good" / "a.png")
    image(tmp / "own" / "bad" / "b.png", value=200)  # an anomalous image without a mask
    module = FolderDataModule(str(tmp / "own"), normal_dir="good", abnormal_dirs=["bad"], image_size=SIZE)
    module.num_workers = 0
    return evaluate(module)


NO_ANOMALOUS_PIXEL = "no anomalous pixel in the masks (no mask, or only empty ones)"


def check_no_anomalous_pixel(results: Results) -> None:
    for metric in ("pixel_auroc", "pixel_aupro", "pixel_aupro_cflow"):
        assert results.undefined[metric] == {"folder/folder": NO_ANOMALOUS_PIXEL}
    assert set(results.per_category["folder"]["folder"]) == {"image_auroc", "image_ap", "image_f1max"}


def close_float64_scores(tmp: Path) -> Results:
    low = 0.5
    high = np.nextafter(low, 1.0)  # one float64 ulp above: the same float32
    return evaluate_batch([low, high], torch.rand(2, 4, 4), [0, 1], pixel_metrics=[])


def check_close_float64_scores(results: Results) -> None:
    assert results.per_category["mvtec"]["widget"]["image_auroc"] == 1.0  # float32 would tie them: 0.5
    assert [entry.score for entry in results.images] == [0.5, float(np.nextafter(0.5, 1.0))]


def datamodule_option(**options: Any) -> Callable[[Path], Any]:
    return lambda tmp: data(mvtec(tmp), **options)


def backbone(**options: Any) -> Callable[[Path], Any]:
    return lambda tmp: TinyRandomBackbone(**options)


def aux_normal_only(tmp: Path) -> Any:
    root = mvtec(tmp)
    image(root / "widget" / "train" / "good" / "000.png")
    mvtec(root, "gadget")
    return data(root, aux_categories=["widget"], aux_split="train", target_categories=["gadget"]).train_dataloader()


def aux_partly_normal(tmp: Path) -> Any:
    root = mvtec(tmp)
    mvtec(root, "plain", defects=0)
    mvtec(root, "gadget")
    module = data(root, aux_categories=["widget", "plain"], target_categories=["gadget"])
    return module.train_dataloader()


def check_aux_partly_normal(loader: Any) -> None:
    assert len(loader.dataset) == 6  # widget 2 + 2, plain 2: all kept


def aux_without_masks(tmp: Path) -> Any:
    image(tmp / "own" / "good" / "a.png")
    image(tmp / "own" / "bad" / "b.png", value=200)
    module = FolderDataModule(
        str(tmp / "own"), normal_dir="good", abnormal_dirs=["bad"], aux_categories=["folder"], target_categories=[]
    )
    return module.train_dataloader()


def truncated(tmp: Path, **options: Any) -> Any:
    root = mvtec(tmp)
    broken = root / "widget" / "test" / "good" / "001.png"
    broken.write_bytes(broken.read_bytes()[:40])
    return evaluate(data(root, **options)), broken.parent.parent


def check_truncated_skipped(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert "Cannot read image" in skipped_names(results)["001.png"]
    assert results.counts["mvtec"]["widget"] == {"normal": 1, "anomalous": 2}
    assert_accounted(results, folder)


def wrong_size_mask(tmp: Path) -> Any:
    root = mvtec(tmp)
    mask(root / "widget" / "ground_truth" / "dent" / "001_mask.png", size=(5, 5))
    return evaluate(data(root))


def mask_mode(mode: str) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        root = mvtec(tmp)
        mask(root / "widget" / "ground_truth" / "dent" / "000_mask.png", mode=mode)
        dataset = data(root).test_dataloader().dataset
        index = next(i for i, r in enumerate(dataset.records) if r.defect_type == "dent")
        return dataset[index]["mask"]

    return run


def check_square_mask(loaded: torch.Tensor) -> None:
    expected = torch.zeros(1, SIZE, SIZE)
    expected[0, 2:4, 2:4] = 1
    assert torch.equal(loaded, expected)


def unicode_paths(tmp: Path) -> tuple[Results, Path]:
    root = tmp / "données"
    image(root / "widget" / "test" / "good" / "bild_ä.png")
    image(root / "widget" / "test" / "défaut" / "画像.png", value=200)
    mask(root / "widget" / "ground_truth" / "défaut" / "画像_mask.png")
    return evaluate(data(root)), root / "widget" / "test"


def check_unicode_paths(outcome: tuple[Results, Path]) -> None:
    results, folder = outcome
    assert results.counts["mvtec"]["widget"] == {"normal": 1, "anomalous": 1}
    assert_accounted(results, folder)


def unicode_broken_image(tmp: Path) -> Any:
    broken = image(tmp / "widget" / "test" / "good" / "bild_ä.png")
    broken.write_bytes(b"\x89PNG broken")
    return evaluate(data(tmp))


def missing_mask(tmp: Path) -> Any:
    root = mvtec(tmp)
    (root / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    return data(root).test_dataloader()


def empty_category(tmp: Path) -> Any:
    mvtec(tmp)
    (tmp / "hollow" / "test" / "good").mkdir(parents=True)
    return data(tmp, target_categories=["hollow"]).test_dataloader()


def manifest_missing_image(tmp: Path) -> Any:
    image(tmp / "a.png")
    (tmp / "manifest.csv").write_text("image,label\na.png,normal\nb.png,anomaly\n")
    return FolderDataModule(str(tmp), image_size=SIZE).test_dataloader()


@dataclass(frozen=True)
class Case:
    """One row: what to run, and the error (with what its message names) or the safe outcome to expect."""

    id: str
    run: Callable[[Path], Any]
    error: type[Exception] | None = None
    names: tuple[str, ...] = ()
    """Substrings of the error message: the file, key or value, and the fix."""
    warns: tuple[str, ...] = ()
    """Substrings of the warnings the case must give."""
    check: Callable[[Any], None] | None = None
    """Asserts the safe outcome (and that nothing was lost)."""


CASES = [
    # 1. formats, unread files, links
    Case("every Pillow format is read (webp, gif, ppm, tga, jp2, qoi)", pillow_formats, check=check_pillow_formats),
    Case(
        "non-image and hidden files are listed under skipped, with a warning",
        unread_files,
        warns=("3 file(s) of mvtec/widget (test) are not read", "notes.txt"),
        check=check_unread_files,
    ),
    Case(
        "folder datamodule lists its unread files",
        folder_unread,
        warns=("c.txt", "not an image format Pillow reads (suffix '.txt')"),
        check=check_folder_unread,
    ),
    Case(
        "dangling symlink named like an image: error",
        dangling_link,
        DataError,
        ("good/007.png", "broken symbolic link to", "gone.png", "Fix or remove the link"),
    ),
    Case(
        "dangling symlink with on_bad_image=skip: listed",
        lambda tmp: dangling_link(tmp, on_bad_image="skip"),
        check=check_dangling_link_skipped,
    ),
    Case("symlink loop named like an image: error", link_loop, DataError, ("good/loop.png", "symbolic link loop")),
    Case(
        "category holding only unread files: error naming them",
        only_unread_files,
        DataError,
        ("Category 'widget' has no images", "1 file(s) there are not read", "scan.dcm", "suffix '.dcm'"),
    ),
    # 2. a category of one test image
    Case("category of one test image is evaluated", one_image_category, check=check_one_image_category),
    # 7. non-finite scores, undefined reasons
    Case(
        "NaN pixel in a map: error naming image and category",
        non_finite([0.1, 0.2, 0.3], float("nan")),
        NonFiniteScoreError,
        ("image '/data/widget/001.png'", "mvtec/widget", "1 NaN of 16 pixels", "learning rate"),
    ),
    Case(
        "inf pixel in a map: error, not numpy's arange failure",
        non_finite([0.1, 0.2, 0.3], float("inf")),
        NonFiniteScoreError,
        ("image '/data/widget/001.png'", "1 inf of 16 pixels"),
    ),
    Case(
        "NaN image score: error naming the image",
        non_finite([0.1, float("nan"), 0.3], 0.5),
        NonFiniteScoreError,
        ("image '/data/widget/001.png'", "image score is nan"),
    ),
    Case(
        "inf map given to aupro_cflow directly: ValueError",
        lambda tmp: aupro_cflow(torch.tensor([[0.0, float("inf")]]), torch.tensor([[False, True]])),
        ValueError,
        ("finite scores",),
    ),
    Case("constant maps: cflow AUPRO undefined, with that reason", constant_maps, check=check_constant_maps),
    Case(
        "no anomalous pixel: pixel metrics undefined, with that reason",
        no_anomalous_pixel,
        warns=("pixel_aupro is undefined for folder/folder (no anomalous pixel",),
        check=check_no_anomalous_pixel,
    ),
    # 8. float64 scores
    Case("float64 scores one ulp apart keep their order", close_float64_scores, check=check_close_float64_scores),
    # 9. sizes and loader options
    Case("datamodule image_size=0", datamodule_option(image_size=0), ConfigError, ("image_size=0", "positive")),
    Case("datamodule batch_size=-1", datamodule_option(batch_size=-1), ConfigError, ("batch_size=-1", "positive")),
    Case(
        "eval_batch_size=0 is refused, not replaced",
        datamodule_option(eval_batch_size=0),
        ConfigError,
        ("eval_batch_size=0",),
    ),
    Case("num_workers=-2", datamodule_option(num_workers=-2), ConfigError, ("num_workers=-2",)),
    Case("mask_threshold=255", datamodule_option(mask_threshold=255), ConfigError, ("mask_threshold=255", "0..254")),
    Case("on_bad_image typo", datamodule_option(on_bad_image="skipp"), ConfigError, ("on_bad_image='skipp'", "'skip'")),
    Case(
        "unknown interpolation",
        datamodule_option(interpolation="cubic"),
        ConfigError,
        ("Unknown interpolation 'cubic'", "'bicubic'"),
    ),
    Case("backbone image_size=0", backbone(image_size=0), ConfigError, ("image_size=0", "patch size 8", "null")),
    Case("backbone image_size=-64", backbone(image_size=-64), ConfigError, ("image_size=-64", "positive multiple")),
    Case(
        "backbone image_size=60 (not a multiple)",
        backbone(image_size=60),
        ConfigError,
        ("image_size=60", "valid sizes: [48, 56, 64]"),
    ),
    Case("backbone layers out of range", backbone(layers=[6, 99]), ConfigError, ("layers=[6, 99]", "1..24")),
    # 17. auxiliary data without anomalies
    Case(
        "aux data of normal images only: error",
        aux_normal_only,
        ConfigError,
        ("only normal images: mvtec/widget", "aux_split: test"),
    ),
    Case(
        "aux category of normal images only: warning naming it",
        aux_partly_normal,
        warns=("Auxiliary categories mvtec/plain hold only normal images",),
        check=check_aux_partly_normal,
    ),
    Case(
        "aux anomalies without masks: warning",
        aux_without_masks,
        warns=("Anomalous auxiliary images of folder/folder have no mask",),
    ),
    # already handled
    Case(
        "truncated image: error naming it",
        truncated,
        DataError,
        ("Cannot read image", "good/001.png", "Replace or remove the file"),
    ),
    Case(
        "truncated image with on_bad_image=skip: listed",
        lambda tmp: truncated(tmp, on_bad_image="skip"),
        check=check_truncated_skipped,
    ),
    Case(
        "mask of the wrong size: error naming both files",
        wrong_size_mask,
        DataError,
        ("001_mask.png' is 5x5", "dent/001.png' is 8x8"),
    ),
    Case("16-bit mask is binarised", mask_mode("I;16"), check=check_square_mask),
    Case("RGB mask is binarised", mask_mode("RGB"), check=check_square_mask),
    Case("unicode paths are read", unicode_paths, check=check_unicode_paths),
    Case("unreadable unicode path: error naming it", unicode_broken_image, DataError, ("good/bild_ä.png",)),
    Case(
        "missing root",
        lambda tmp: data(tmp / "nowhere").test_dataloader(),
        DataError,
        ("nowhere' does not exist", "Expected the MVTec AD layout"),
    ),
    Case(
        "unknown category",
        lambda tmp: data(mvtec(tmp), target_categories=["wigdet"]).test_dataloader(),
        DataError,
        ("Unknown category 'wigdet'", "Valid categories: widget"),
    ),
    Case("empty category", empty_category, DataError, ("Category 'hollow'", "has no images")),
    Case(
        "anomalous image without its mask",
        missing_mask,
        DataError,
        ("dent/001.png' has no mask", "ground_truth/dent/001_mask.png"),
    ),
    Case(
        "manifest row naming a missing image",
        manifest_missing_image,
        DataError,
        ("row 2 (line 3)", "b.png' does not exist"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.error is None:
            outcome = case.run(tmp_path)
        else:
            with pytest.raises(case.error) as raised:
                case.run(tmp_path)
            message = str(raised.value)
            assert "\n" not in message, "one line"
            for name in case.names:
                assert name in message, f"{name!r} not in {message!r}"
    warned = " | ".join(str(warning.message) for warning in caught)
    for text in case.warns:
        assert text in warned, f"{text!r} not warned: {warned!r}"
    if case.check is not None:
        case.check(outcome)
