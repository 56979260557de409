"""AnomalyMapPictures: figures per category under the log folder, the limit honoured, DAPO's defect-type panel."""

from __future__ import annotations

import lightning as L  # noqa: N812
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.data.synthetic import SyntheticDataModule
from zsad.errors import ConfigError
from zsad.heads import DualBranchHead
from zsad.heads.multiclass import MultiClassHead
from zsad.prompts import StaticPrompt
from zsad.prompts.dapo import DAPOPrompt
from zsad.viz.callback import AnomalyMapPictures
from zsad.viz.overlay import MIN_PANEL_HEIGHT, colour_table

PANEL_WIDTH = 64 * (MIN_PANEL_HEIGHT // 64)  # the tiny backbone's 64 px, scaled up for readability


def run_test(module, root, tmp_path, categories, callback):
    data = SyntheticDataModule(root=str(root), target_categories=categories, batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(tmp_path), name="logs"),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(module, datamodule=data, verbose=False)
    return trainer.log_dir


def test_callback_writes_a_mixed_sample_per_category_and_restores_the_module(tiny_backbone, synthetic_root, tmp_path):
    module = ZSADModule(tiny_backbone, StaticPrompt(n_ctx=2, deep_depth=0), DualBranchHead(), pixel_metrics=[])
    callback = AnomalyMapPictures(max_per_category=3)
    log_dir = run_test(module, synthetic_root, tmp_path, ["ring", "capsule"], callback)
    assert module.max_pictures == 0  # raised for the test only
    written = sorted(p.relative_to(log_dir).as_posix() for p in callback.written)
    assert len(written) == 6 and all(p.startswith("pictures/synthetic/") for p in written)
    for category in ("ring", "capsule"):
        names = [p.rsplit("/", 1)[1] for p in written if f"/{category}/" in p]
        normal = [n for n in names if n.startswith("good_")]
        assert len(names) == 3 and len(normal) == 1  # one normal place of three, two defect types
        assert len({n.split("_")[0] for n in names}) == 3
    assert 4 * PANEL_WIDTH < Image.open(callback.written[0]).width < 5 * PANEL_WIDTH  # four panels and a colour bar
    assert all(p.is_file() for p in callback.written)


def test_dapo_figures_have_the_defect_type_panel(synthetic_root, tmp_path):
    backbone = TinyRandomBackbone(project_patches=False)
    torch.manual_seed(0)
    prompt = DAPOPrompt(vocabulary=["scratch", "hole"], prompt_count=1, text_deep_layers=0, vision_deep_layers=0)
    module = ZSADModule(backbone, prompt, MultiClassHead(class_threshold=0.0), pixel_metrics=[])
    callback = AnomalyMapPictures(max_per_category=2)
    run_test(module, synthetic_root, tmp_path, ["capsule"], callback)
    pictures = module.test_results.pictures
    assert len(pictures) == 2 and {p.label for p in pictures} == {0, 1}
    assert all(p.class_map is not None and p.class_map.shape == (64, 64) for p in pictures)
    assert pictures[0].class_names == ("normal", "scratch", "hole")
    assert len(callback.written) == 2
    assert 5 * PANEL_WIDTH < Image.open(callback.written[0]).width < 6 * PANEL_WIDTH


def test_bad_limits_are_refused():
    with pytest.raises(ConfigError, match="max_per_category=0"):
        AnomalyMapPictures(max_per_category=0)
    with pytest.raises(ConfigError, match="logged_per_category=-1"):
        AnomalyMapPictures(logged_per_category=-1)


@pytest.mark.parametrize("rule", ["run", "category", "range"])
def test_figures_use_one_fixed_scale_and_carry_a_colour_bar(tiny_backbone, synthetic_root, tmp_path, rule):
    module = ZSADModule(tiny_backbone, StaticPrompt(n_ctx=2, deep_depth=0), DualBranchHead(), pixel_metrics=[])
    callback = AnomalyMapPictures(max_per_category=2, scale=rule)
    run_test(module, synthetic_root, tmp_path, ["ring", "capsule"], callback)
    ranges = module.test_results.map_ranges["synthetic"]
    assert all(low < high for low, high in ranges.values())
    for path in callback.written:
        info = Image.open(path).info
        scale = (float(info["zsad:scale_low"]), float(info["zsad:scale_high"]))
        if rule == "run":  # every figure: the lowest and highest map value of the whole test
            assert scale == (min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values()))
        elif rule == "category":
            assert scale == tuple(ranges[info["zsad:category"]])
        else:
            assert scale == (0.0, 4.0)  # AnomalyCLIP-style: a sum of four layer maps
    figure = np.asarray(Image.open(callback.written[0]))
    bar = figure[:, 4 * PANEL_WIDTH :]
    assert (bar == colour_table()[255]).all(axis=-1).any() and (bar == colour_table()[0]).all(axis=-1).any()


def test_worst_selection_keeps_the_highest_normal_and_lowest_anomalous_scores(tiny_backbone, synthetic_root, tmp_path):
    module = ZSADModule(tiny_backbone, StaticPrompt(n_ctx=2, deep_depth=0), DualBranchHead(), pixel_metrics=[])
    run_test(module, synthetic_root, tmp_path, ["ring"], AnomalyMapPictures(max_per_category=4, selection="worst"))
    images = module.test_results.images
    normal = sorted((i.score for i in images if i.label == 0), reverse=True)[:2]
    anomalous = sorted(i.score for i in images if i.label == 1)[:2]
    kept = module.test_results.pictures
    assert sorted(p.score for p in kept if p.label == 0) == pytest.approx(sorted(normal))
    assert sorted(p.score for p in kept if p.label == 1) == pytest.approx(sorted(anomalous))
