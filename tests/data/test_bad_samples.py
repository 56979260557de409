"""Unreadable images and wrong-size masks: a clear error by default, skipped and listed on request."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L  # noqa: N812
import pytest
from PIL import Image

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.data import MVTecDataModule
from zsad.errors import DataError
from zsad.heads import DualBranchHead
from zsad.prompts import StaticPrompt


@pytest.fixture
def damaged_root(synthetic_root, tmp_path) -> Path:
    root = tmp_path / "damaged"
    shutil.copytree(synthetic_root / "ring", root / "ring")
    truncated = root / "ring" / "test" / "good" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # a download that stopped half-way
    mask = root / "ring" / "ground_truth" / "hole" / "000_mask.png"
    Image.new("L", (10, 10), 255).save(mask)  # wrong size for its 64 x 64 image
    return root


def module_for(root: Path, num_workers: int = 0, **kwargs) -> MVTecDataModule:
    return MVTecDataModule(str(root), target_categories=["ring"], image_size=64, num_workers=num_workers, **kwargs)


def test_a_truncated_image_is_an_error_naming_the_file(damaged_root):
    dataset = module_for(damaged_root).test_dataloader().dataset
    index = next(i for i, r in enumerate(dataset.records) if r.defect_type == "good" and r.path.name == "000.png")
    with pytest.raises(DataError, match=r"Cannot read image '.*ring/test/good/000\.png'"):
        dataset[index]


def test_a_mask_of_the_wrong_size_is_an_error_naming_both_files(damaged_root):
    dataset = module_for(damaged_root).test_dataloader().dataset
    index = next(i for i, r in enumerate(dataset.records) if r.defect_type == "hole" and r.path.name == "000.png")
    with pytest.raises(DataError, match=r"Mask '.*000_mask\.png' is 10x10 but its image '.*hole/000\.png' is 64x64"):
        dataset[index]


@pytest.mark.parametrize("num_workers", [0, 2])  # in loader workers, the skip records travel back with the batch
def test_skipped_samples_are_left_out_and_listed_in_the_results(damaged_root, num_workers):
    model = ZSADModule(TinyRandomBackbone(), StaticPrompt(deep_depth=1), DualBranchHead(), pixel_metrics=[])
    data = module_for(damaged_root, num_workers, on_bad_image="skip")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.test(model, datamodule=data, verbose=False)
    results = model.test_results
    assert sorted(Path(s["path"]).parent.name + "/" + Path(s["path"]).name for s in results.skipped) == [
        "good/000.png",
        "hole/000.png",
    ]
    assert results.counts["mvtec"]["ring"] == {"normal": 5, "anomalous": 9}  # 16 samples, 2 skipped
    assert "skipped 2 unreadable image(s)" in results.table()
