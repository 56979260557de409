"""Figures of single test images: the F1-optimal threshold, four or five panels, the defect legend, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.data.transforms import ImageTransform
from zsad.metrics.curves import f1_max
from zsad.metrics.results import Picture
from zsad.viz.overlay import MIN_PANEL_HEIGHT
from zsad.viz.panels import (
    DEFECT_CAPTION,
    PREDICTION_CAPTION,
    UNTYPED,
    Binarisation,
    class_colour,
    defect_type_panel,
    f1_optimal_threshold,
    picture_panels,
    render_picture,
)
from zsad.viz.pictures import save_pictures
from zsad.viz.scales import MapScale

SIZE = 32


def brute_force_threshold(maps, masks):
    """Every distinct value as threshold, highest first; the first best F1 wins."""
    scores, positive = maps.reshape(-1).double(), masks.reshape(-1) > 0.5
    best, best_threshold = -1.0, None
    for threshold in torch.unique(scores).flip(0).tolist():
        predicted = scores >= threshold
        true_positive = float((predicted & positive).sum())
        f1 = 2 * true_positive / (float(predicted.sum()) + float(positive.sum()))
        if f1 > best:
            best, best_threshold = f1, threshold
    return best_threshold, best


@pytest.mark.parametrize("seed", range(4))
def test_f1_optimal_threshold_equals_a_brute_force_search(seed):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(3, 12, 12)
    masks[0, 2:7, 3:9] = 1
    masks[2, 6:11, 1:4] = 1
    maps = torch.rand(3, 12, 12, generator=generator) + 0.6 * masks  # informative but overlapping
    if seed == 3:
        maps = (maps * 8).round() / 8  # many ties: thresholds are tie groups
    expected, best_f1 = brute_force_threshold(maps, masks)
    threshold = f1_optimal_threshold(maps, masks)
    assert threshold == pytest.approx(expected, abs=0)
    assert best_f1 == pytest.approx(f1_max(maps, masks))  # the threshold behind pixel_f1max


def test_f1_optimal_threshold_is_none_without_both_classes():
    assert f1_optimal_threshold(torch.rand(2, 4, 4), torch.zeros(2, 4, 4)) is None
    assert f1_optimal_threshold(torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)) is None


def make_picture(class_map=None, label=1, defect="crack", name="000.png", category="capsule"):
    mask = torch.zeros(SIZE, SIZE)
    if label:
        mask[8:20, 8:20] = 1
    return Picture(
        image=torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)),
        mask=mask,
        anomaly_map=mask * 0.8 + 0.1,
        score=0.7,
        path=f"/data/{category}/test/{defect}/{name}",
        category=category,
        defect_type=defect,
        dataset="synthetic",
        label=label,
        class_map=class_map,
        class_names=("normal", "scratch", "hole") if class_map is not None else (),
    )


def test_four_panels_without_and_five_with_a_class_map():
    transform = ImageTransform(size=SIZE)
    panels, legend = picture_panels(make_picture(), 0.5, MapScale(0.0, 1.0), transform)
    assert [caption for caption, _ in panels][-1] == PREDICTION_CAPTION and len(panels) == 4 and legend == []
    assert all(array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8 for _, array in panels)
    predicted = panels[3][1][..., 0] > 0
    assert predicted[8:20, 8:20].all() and predicted.sum() == 144  # map >= 0.5 exactly on the defect

    class_map = torch.zeros(SIZE, SIZE, dtype=torch.int16)
    class_map[8:14, 8:20] = 2  # "hole" on the top half of the defect, the bottom half untyped
    panels, legend = picture_panels(make_picture(class_map), 0.5, MapScale(0.0, 1.0), transform)
    assert len(panels) == 5 and panels[4][0] == DEFECT_CAPTION
    assert legend == [(class_colour(2), "hole"), ((128, 128, 128), UNTYPED)]
    assert tuple(panels[4][1][10, 10]) == class_colour(2) and tuple(panels[4][1][17, 17]) == (128, 128, 128)


def test_defect_panel_names_unknown_classes_and_ignores_unpredicted_pixels():
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    class_map = np.array([[3, 3, 1, 0]] * 4)
    predicted = np.zeros((4, 4), dtype=bool)
    predicted[:, 0] = True
    panel, legend = defect_type_panel(image, class_map, predicted, ("normal", "scratch"))
    assert legend == [(class_colour(3), "class 3")]
    assert (panel[:, 1:] == 80).all()  # dimmed grey where nothing is predicted


def test_rendered_figure_has_a_colour_bar_and_says_what_it_shows():
    binarisation = Binarisation(0.42, "F1-optimal (tuned on the target set)", image_threshold=0.5)
    figure = render_picture(make_picture(), binarisation, MapScale(0.0, 1.0, "run"), ImageTransform(size=SIZE))
    scale = MIN_PANEL_HEIGHT // SIZE
    assert 4 * SIZE * scale < figure.width < 5 * SIZE * scale and figure.height > SIZE * scale  # panels + colour bar
    assert figure.info["zsad:scale_low"] == "0.0" and figure.info["zsad:scale_high"] == "1.0"
    assert figure.info["zsad:pixel_threshold"] == "0.42" and figure.info["zsad:image_threshold"] == "0.5"
    assert figure.info["zsad:path"] == "/data/capsule/test/crack/000.png" and figure.info["zsad:label"] == "1"


def test_save_pictures_uses_one_threshold_per_category(tmp_path):
    pictures = [make_picture(name="000.png"), make_picture(label=0, defect="good", name="000.png")]
    pictures.append(make_picture(name="001.png", category="ring"))
    written = save_pictures(pictures, tmp_path, per_dataset=True)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "synthetic/capsule/crack_000.png",
        "synthetic/capsule/good_000.png",
        "synthetic/ring/crack_001.png",
    ]
    assert Image.open(written[0]).size == Image.open(written[2]).size
    scales = {
        (float(Image.open(p).info["zsad:scale_low"]), float(Image.open(p).info["zsad:scale_high"])) for p in written
    }
    assert len(scales) == 1 and scales.pop() == pytest.approx((0.1, 0.9))  # the lowest, highest pictured value
    flat = save_pictures(pictures[:1], tmp_path / "flat")  # the demo's layout: <folder>/<category>/
    assert flat[0].relative_to(tmp_path / "flat").as_posix() == "capsule/crack_000.png"
