"""Thresholds by rule, the precision, recall and F1 they give, and how the evaluator reports them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsad.errors import ConfigError
from zsad.metrics.evaluator import Evaluator
from zsad.metrics.thresholds import (
    TARGET_NOTE,
    ThresholdRule,
    category_thresholds,
    f1_optimal_threshold,
    given_thresholds,
    normal_quantile,
    operating_point,
)
from zsad.structures import Scores


def test_operating_point_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.4, 0.3, 0.1])
    labels = torch.tensor([1, 0, 1, 0, 0])
    point = operating_point(scores, labels, 0.4)  # predicted: 0.9 (TP), 0.8 (FP), 0.4 (TP)
    assert point == {"threshold": 0.4, "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8)}
    nothing = operating_point(scores, labels, 2.0)
    assert nothing["precision"] is None and nothing["recall"] == 0.0 and nothing["f1"] == 0.0
    assert operating_point(scores, labels, None)["f1"] is None


def test_f1_optimal_threshold_prefers_the_highest_of_equal_thresholds():
    scores = torch.tensor([0.9, 0.7, 0.5, 0.2])
    labels = torch.tensor([1, 0, 1, 0])
    # t = 0.9: F1 2/3; t = 0.5: P 2/3, R 1, F1 0.8; t = 0.2: F1 2/3
    assert f1_optimal_threshold(scores, labels) == pytest.approx(0.5)
    assert f1_optimal_threshold(scores, torch.zeros(4)) is None


def test_normal_quantile_matches_numpy():
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert normal_quantile(values, 0.99) == pytest.approx(float(np.quantile(values.numpy(), 0.99)))
    assert normal_quantile(torch.zeros(0), 0.5) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fixed"}, "needs an image threshold"),
        ({"kind": "normal_quantile", "quantile": 1.0}, "strictly between 0 and 1"),
        ({"kind": "median"}, "unknown"),
        ({"kind": "fixed", "image": float("nan")}, "finite"),
    ],
)
def test_bad_rules_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ThresholdRule(**kwargs)


def test_rules_say_when_they_were_tuned_on_the_target_set():
    assert ThresholdRule("f1").tuned_on_target and TARGET_NOTE in ThresholdRule("f1").describe()
    assert ThresholdRule("normal_quantile").tuned_on_target
    assert not ThresholdRule("fixed", image=0.5).tuned_on_target
    assert not ThresholdRule("from_run", given={}, source="val/results.json").tuned_on_target
    assert ThresholdRule("from_run", given={}, source="x", source_on_target=True).tuned_on_target


def category_data():
    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[3:, 2:5, 2:6] = True  # images 3..5 anomalous
    maps = torch.rand(6, 8, 8, generator=generator) + 0.5 * masks
    scores = maps.flatten(1).amax(dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    return scores, labels, maps, masks


def test_category_thresholds_per_rule():
    scores, labels, maps, masks = category_data()
    f1 = category_thresholds(ThresholdRule("f1"), ("d", "c"), scores, labels, maps, masks)
    assert f1["pixel"]["threshold"] == f1_optimal_threshold(maps, masks)
    assert f1["image"]["threshold"] == f1_optimal_threshold(scores, labels)
    quantile = category_thresholds(ThresholdRule("normal_quantile", 0.9), ("d", "c"), scores, labels, maps, masks)
    assert quantile["image"]["threshold"] == pytest.approx(float(np.quantile(scores[:3].numpy(), 0.9)))
    assert quantile["pixel"]["threshold"] == pytest.approx(float(np.quantile(maps[:3].numpy(), 0.9)))  # normal images
    fixed = category_thresholds(ThresholdRule("fixed", image=0.7), ("d", "c"), scores, labels, maps, masks)
    assert fixed["image"]["threshold"] == 0.7 and fixed["pixel"]["threshold"] is None
    given = {"d": {"c": {"image": 0.6, "pixel": 1.1}}}
    taken = category_thresholds(ThresholdRule("from_run", given=given), ("d", "c"), scores, labels, maps, masks)
    assert (taken["image"]["threshold"], taken["pixel"]["threshold"]) == (0.6, 1.1)
    as_list = category_thresholds(ThresholdRule("f1"), ("d", "c"), scores, labels, list(maps), list(masks))
    assert as_list == f1  # images of different sizes come as lists: the same result


def test_evaluator_reports_thresholds_whose_f1_is_the_f1max():
    scores, labels, maps, masks = category_data()
    evaluator = Evaluator(pixel_metrics=["pixel_f1max"])
    evaluator.threshold_rule = ThresholdRule("f1")
    evaluator.reset([("d", "c")])
    batch = {"label": labels, "mask": masks, "category": ["c"] * 6, "dataset": ["d"] * 6}
    evaluator.update(Scores(image_logits=scores[:, None], image_score=scores, layer_probs=(), anomaly_map=maps), batch)
    results = evaluator.compute()
    entry = results.thresholds["per_category"]["d"]["c"]
    assert entry["image"]["f1"] == pytest.approx(results.per_category["d"]["c"]["image_f1max"])
    assert entry["pixel"]["f1"] == pytest.approx(results.per_category["d"]["c"]["pixel_f1max"])
    assert results.thresholds["tuned_on_target"] and results.to_dict()["thresholds"] == results.thresholds
    assert results.map_ranges == {"d": {"c": [float(maps.min()), float(maps.max())]}}
    assert "tuned on the target set" in results.table() and "pixel_F1" in results.table()
    assert given_thresholds(results.to_dict())["d"]["c"] == {
        "image": entry["image"]["threshold"],
        "pixel": entry["pixel"]["threshold"],
    }
