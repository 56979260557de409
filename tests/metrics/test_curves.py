"""The threshold sweep equals sklearn exactly, ties included, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from zsad.metrics import curves
from zsad.metrics.curves import auroc, average_precision, binary_metrics, f1_max, threshold_sweep


def sklearn_metrics(scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    precision, recall, _ = precision_recall_curve(target, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "auroc": roc_auc_score(target, scores),
        "average_precision": average_precision_score(target, scores),
        "f1_max": float(np.nanmax(f1)),
    }


def random_case(seed: int, size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(size) < rng.uniform(0.02, 0.8)
    target[:2] = [True, False]  # both classes present
    scores = rng.normal(size=size) + target * rng.uniform(0, 2)
    if kind == "round2":
        scores = np.round(scores, 2)
    elif kind == "integer":
        scores = rng.integers(0, 6, size).astype(np.float64) + target * rng.integers(0, 2)
    elif kind == "signed_zero":
        scores = np.round(scores, 0)
        scores[rng.random(size) < 0.3] = -0.0
    return scores, target


@pytest.mark.parametrize("kind", ["continuous", "round2", "integer", "signed_zero"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(4))
def test_equals_sklearn(seed, dtype, kind):
    size = [17, 300, 5000, 40000][seed]
    scores, target = random_case(seed, size, kind)
    scores_tensor = torch.tensor(scores, dtype=dtype)
    expected = sklearn_metrics(scores_tensor.double().numpy(), target)
    values = binary_metrics(scores_tensor, torch.tensor(target))
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_tiny_chunks_split_tie_groups_correctly(monkeypatch, chunk_size):
    scores, target = random_case(5, 400, "integer")  # 6 to 7 distinct scores: every group spans many chunks
    monkeypatch.setattr(curves, "CHUNK_SIZE", chunk_size)
    values = binary_metrics(torch.tensor(scores, dtype=torch.float32), torch.tensor(target))
    for name, value in sklearn_metrics(scores, target).items():
        assert values[name] == pytest.approx(value, abs=1e-12), name


def test_hand_computed_case():
    # thresholds 0.9 | 0.5 (1 positive, 1 negative tied) | 0.1
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1])
    target = torch.tensor([1, 1, 0, 0])
    # ROC points (0,0) (0,.5) (.5,1) (1,1): area = .5 * (.5 + 1) / 2 + .5 = 0.875
    assert auroc(scores, target) == 0.875
    # recall steps .5 at precision 1 and .5 at precision 2/3
    assert average_precision(scores, target) == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)
    # F1 at 0.9: P=1, R=.5 -> 2/3; at 0.5: P=2/3, R=1 -> 0.8; at 0.1: P=.5, R=1 -> 2/3
    assert f1_max(scores, target) == pytest.approx(0.8, abs=1e-15)


def test_all_tied_scores_give_chance():
    scores = torch.zeros(10)
    target = torch.tensor([1, 0] * 5)
    assert auroc(scores, target) == 0.5
    assert average_precision(scores, target) == 0.5
    assert f1_max(scores, target) == pytest.approx(2 / 3)


def test_perfect_and_inverted_ranking():
    target = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), target) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1]), target) == 0.0
    assert f1_max(torch.tensor([0.1, 0.2, 0.3, 0.4]), target) == 1.0


@pytest.mark.parametrize("target", [[0, 0, 0], [1, 1, 1]])
def test_single_class_is_undefined(target):
    scores = torch.tensor([0.1, 0.5, 0.9])
    assert binary_metrics(scores, torch.tensor(target)) == {"auroc": None, "average_precision": None, "f1_max": None}
    assert auroc(scores, torch.tensor(target)) is None


def test_accepts_half_float_targets_and_2d_maps():
    scores, target = random_case(1, 256, "round2")
    expected = sklearn_metrics(np.float16(scores).astype(np.float64), target)
    maps = torch.tensor(scores, dtype=torch.float16).reshape(16, 16)
    values = binary_metrics(maps, torch.tensor(target, dtype=torch.float32).reshape(16, 16))
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-9)


def test_weighted_sweep_sums():
    scores = torch.tensor([3.0, 2.0, 2.0, 1.0, 1.0])
    labels = torch.tensor([1, 2, 0, 0, 2], dtype=torch.int32)
    groups = list(threshold_sweep(scores, labels, torch.tensor([0.0, 0.25, 0.5]), chunk_size=2))
    stacked = {f: np.concatenate([getattr(g, f) for g in groups]) for f in groups[0].__dataclass_fields__}
    np.testing.assert_array_equal(stacked["positive"], [0.25, 0.5, 0.5])
    np.testing.assert_array_equal(stacked["positive_above"], [0.0, 0.25, 0.75])
    np.testing.assert_array_equal(stacked["negative"], [0, 1, 1])
    np.testing.assert_array_equal(stacked["negative_above"], [0, 0, 1])


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
