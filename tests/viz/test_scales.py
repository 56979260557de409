"""Fixed colour scales: documented map ranges per head, one colour for a constant map, a labelled colour bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsad import ZSADModule
from zsad.errors import ConfigError
from zsad.heads import DualBranchHead
from zsad.heads.multiclass import MultiClassHead
from zsad.heads.topk import TopKHead
from zsad.prompts import StaticPrompt
from zsad.viz.overlay import ColourBar, Figure, colour_table, colourise, compose_figure, heat_overlay
from zsad.viz.scales import MapScale, choose_scale, documented_range, module_range


@pytest.mark.parametrize(
    ("class_path", "init_args", "expected"),
    [
        ("zsad.heads.dual_branch.DualBranchHead", {"aggregation": "sum"}, (0.0, 4.0)),
        ("zsad.heads.dual_branch.DualBranchHead", {"aggregation": "mean"}, (0.0, 1.0)),
        ("zsad.heads.topk.TopKHead", {}, (0.0, 1.0)),  # ViP2: mean over layers by default
        ("zsad.heads.saga.SAGAHead", {"aggregation": "mean"}, (0.0, 1.0)),
        ("zsad.heads.multiclass.MultiClassHead", {"aggregation": "sum"}, (0.0, 4.0)),
        ("zsad.heads.windows.WindowHead", {}, (0.0, 1.0)),
        ("my.plugin.Head", {}, None),
    ],
)
def test_documented_ranges(class_path, init_args, expected):
    assert documented_range({"class_path": class_path, "init_args": init_args}, layer_count=4) == expected


@pytest.mark.parametrize("head", [DualBranchHead(), TopKHead(k=4), MultiClassHead()])
def test_maps_stay_inside_the_documented_range(head, images):
    from zsad.backbones import TinyRandomBackbone

    torch.manual_seed(0)
    backbone = TinyRandomBackbone(project_patches=not isinstance(head, MultiClassHead))
    prompt = StaticPrompt(n_ctx=2, deep_depth=0)
    if isinstance(head, MultiClassHead):
        from zsad.prompts.dapo import DAPOPrompt

        prompt = DAPOPrompt(vocabulary=["scratch"], prompt_count=1, text_deep_layers=0, vision_deep_layers=0)
    module = ZSADModule(backbone, prompt, head, pixel_metrics=[]).eval()
    low, high = module_range(module)
    with torch.no_grad():
        maps = module(images).anomaly_map
    assert low <= float(maps.min()) and float(maps.max()) <= high + 1e-5


def test_a_constant_map_draws_as_one_colour_on_a_fixed_scale():
    scale = MapScale(0.0, 4.0, "range")
    flat = np.full((16, 16), 0.3, dtype=np.float32)
    colours = colourise(flat, scale)
    assert len(np.unique(colours.reshape(-1, 3), axis=0)) == 1
    assert tuple(colours[0, 0]) == tuple(colour_table()[round(0.3 / 4 * 255)])  # low on the scale: blue, not red
    assert colours[0, 0, 2] > colours[0, 0, 0]
    grey = np.full((16, 16, 3), 128, dtype=np.uint8)
    assert len(np.unique(heat_overlay(grey, flat, scale).reshape(-1, 3), axis=0)) == 1
    higher = colourise(np.full((16, 16), 3.9, dtype=np.float32), scale)
    assert tuple(higher[0, 0]) != tuple(colours[0, 0])  # another value, another colour (no per-image stretch)


def test_a_flat_run_widens_its_scale_and_draws_its_lowest_colour():
    scale = MapScale(2.0, 2.0)
    assert scale.high > scale.low
    assert tuple(colourise(np.full((2, 2), 2.0), scale)[0, 0]) == tuple(colour_table()[0])


def test_choose_scale_rules():
    documented = (0.0, 4.0)
    assert choose_scale("run", (1.0, 2.0), (0.5, 3.0), documented) == MapScale(0.5, 3.0, "run")
    assert choose_scale("category", (1.0, 2.0), (0.5, 3.0), documented) == MapScale(1.0, 2.0, "category")
    assert choose_scale("range", (1.0, 2.0), (0.5, 3.0), documented) == MapScale(0.0, 4.0, "range")
    assert choose_scale("range", (1.0, 2.0), (0.5, 3.0), None).rule == "run"  # no documented range: the run's
    assert choose_scale("run", (1.0, 2.0), (0.5, 3.0), documented, (None, 10.0)) == MapScale(0.5, 10.0, "fixed")
    with pytest.raises(ConfigError, match="scale='image'"):
        choose_scale("image", (1.0, 2.0), (0.5, 3.0), documented)  # type: ignore[arg-type]


def test_figure_carries_a_colour_bar_from_low_to_high():
    panel = np.full((200, 200, 3), 255, dtype=np.uint8)
    figure = compose_figure(Figure([("image", panel)], ["a title"], ColourBar(MapScale(0.0, 4.0), threshold=1.0)))
    pixels = np.asarray(figure)
    assert figure.width > 200  # the bar sits right of the panel
    table = colour_table()
    bar = pixels[:, 200:]
    top = np.argwhere((bar == table[255]).all(axis=-1))
    bottom = np.argwhere((bar == table[0]).all(axis=-1))
    assert len(top) and len(bottom) and top[:, 0].max() < bottom[:, 0].min()  # high values at the top
