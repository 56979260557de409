"""Which test images keep their maps: at most the limit, normal and anomalous mixed, defect types varied."""

from __future__ import annotations

import torch

from zsad.metrics.results import Picture
from zsad.viz.selection import PictureKeeper, select_pictures


def picture(defect, index, category="capsule"):
    empty = torch.zeros(1, 1)
    return Picture(empty, empty, empty, 0.0, f"{defect}/{index}.png", category, defect, "d", int(defect != "good"))


def offer_all(limit, defects):
    keeper = PictureKeeper(limit)
    for index, defect in enumerate(defects):
        keeper.offer(defect != "good", defect, lambda d=defect, i=index: picture(d, i))
    return [p.defect_type for p in keeper.kept]


def test_anomalous_first_then_normal_images_get_their_share():
    # MVTec-style order: every defect folder before "good"
    kept = offer_all(4, ["crack"] * 5 + ["hole"] * 5 + ["good"] * 5)
    assert sorted(kept) == ["crack", "good", "good", "hole"]


def test_normal_first_then_anomalous_images_get_their_share():
    kept = offer_all(5, ["good"] * 9 + ["crack"] * 2 + ["hole"] * 2 + ["cut"])
    assert sorted(kept) == ["crack", "cut", "good", "good", "hole"]


def test_a_kind_that_is_missing_leaves_its_places_to_the_other():
    assert offer_all(3, ["good"] * 6) == ["good"] * 3
    # a new type replaces the latest of the most frequent one (ties: the type kept first)
    assert sorted(offer_all(4, ["crack", "crack", "hole", "hole", "cut"])) == ["crack", "cut", "hole", "hole"]


def test_limits_of_zero_and_one():
    assert offer_all(0, ["good", "crack"]) == []
    assert offer_all(1, ["good", "good", "crack", "hole"]) == ["crack"]


def test_pictures_are_built_only_when_kept():
    keeper = PictureKeeper(1)
    built = []
    for defect in ["crack", "hole", "good"]:
        keeper.offer(defect != "good", defect, lambda d=defect: built.append(d) or picture(d, 0))
    assert built == ["crack"]


def test_select_pictures_limits_each_category():
    pictures = [picture(d, i, c) for c in ("a", "b") for i, d in enumerate(["good"] * 4 + ["crack"] * 4)]
    chosen = select_pictures(pictures, 2)
    assert [(p.category, p.defect_type) for p in chosen] == [
        ("a", "good"),
        ("a", "crack"),
        ("b", "good"),
        ("b", "crack"),
    ]


def test_worst_selection_keeps_the_highest_normal_and_lowest_anomalous_scores_while_streaming():
    keeper = PictureKeeper(4, selection="worst")
    offers = [("good", 0.1), ("crack", 0.9), ("good", 0.8), ("crack", 0.2), ("good", 0.5), ("crack", 0.4)]
    offers += [("good", 0.95), ("crack", 0.05), ("good", 0.3)]
    for index, (defect, score) in enumerate(offers):
        made = picture(defect, index)
        made.score = score
        keeper.offer(defect != "good", defect, lambda made=made: made, score)
    kept = sorted((p.defect_type, p.score) for p in keeper.kept)
    assert kept == [("crack", 0.05), ("crack", 0.2), ("good", 0.8), ("good", 0.95)]
