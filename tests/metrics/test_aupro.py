"""Both AUPRO variants equal slow, obviously-correct loops; connected regions use 8-connectivity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import auc

from zsad.errors import ConfigError
from zsad.metrics.aupro import aupro_cflow, aupro_exact, connected_regions


def region_masks(masks: np.ndarray) -> list[np.ndarray]:
    """One full-size bool mask per connected region of each image (MVTec script: 3x3 structure of ones)."""
    regions = []
    for image, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for region in range(1, count + 1):
            full = np.zeros(masks.shape, dtype=bool)
            full[image] = labels == region
            regions.append(full)
    return regions


def slow_aupro_exact(scores: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    regions, normal = region_masks(masks), ~masks
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        fpr = (scores[normal] >= threshold).mean()
        pro = np.mean([(scores[region] >= threshold).mean() for region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= limit:
            break
        if x1 > limit:
            y1, x1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0), limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def slow_aupro_cflow(scores: np.ndarray, masks: np.ndarray, limit: float = 0.3, steps: int = 200) -> float:
    """The cflow-ad loop: thresholds by np.arange, strict binarisation, kept FPRs min-max rescaled."""
    regions, normal = region_masks(masks), ~masks
    low, high = scores.min(), scores.max()
    pros, fprs = [], []
    for threshold in np.arange(low, high, (high - low) / steps):
        binary = scores > threshold
        pros.append(np.mean([binary[region].sum() / region.sum() for region in regions]))
        fprs.append(np.logical_and(normal, binary).sum() / normal.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < limit
    rescaled = (fprs[kept] - fprs[kept].min()) / (fprs[kept].max() - fprs[kept].min())
    return auc(rescaled, pros[kept])


def random_category(seed: int, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    """6 images of 24x24, each with 1-3 disc-shaped blobs, scores raised inside the blobs."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 24, 24), dtype=bool)
    rows, cols = np.mgrid[:24, :24]
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            row, col, radius = rng.integers(0, 24), rng.integers(0, 24), rng.uniform(1, 5)
            mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    scores = rng.random(masks.shape) + masks * rng.uniform(0, 1)
    return (np.round(scores, 1) if rounded else scores).astype(np.float32), masks


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_exact_equals_slow_loop(seed, rounded):
    scores, masks = random_category(seed, rounded)
    value = aupro_exact(torch.from_numpy(scores), torch.from_numpy(masks))
    assert value == pytest.approx(slow_aupro_exact(scores, masks), abs=1e-6)


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_cflow_equals_reference_loop(seed, rounded):
    scores, masks = random_category(seed, rounded)
    value = aupro_cflow(torch.from_numpy(scores), torch.from_numpy(masks))
    assert value == pytest.approx(slow_aupro_cflow(scores, masks), abs=1e-6)


def test_cflow_scores_next_to_the_thresholds():
    # float32 scores at and one ulp around every float64 threshold: binarisation must be exactly score > t
    thresholds = np.arange(0.0, 1.0, 1.0 / 200)
    at = thresholds.astype(np.float32)
    values = np.concatenate([at, np.nextafter(at, np.float32(-1)), np.nextafter(at, np.float32(2)), [0, 1]])
    rng = np.random.default_rng(0)
    scores = np.resize(rng.permutation(values.astype(np.float32)), (1, 25, 25))
    masks = np.zeros((1, 25, 25), dtype=bool)
    masks[0, 3:9, 4:12] = masks[0, 15:20, 15:24] = True
    value = aupro_cflow(torch.from_numpy(scores), torch.from_numpy(masks))
    assert value == pytest.approx(slow_aupro_cflow(scores, masks), abs=1e-12)


def test_exact_hand_computed():
    # one 1x4 image: region {0, 1} scores 0.8 and 0.4, normal pixels 0.6 and 0.2 (N = 2, R = 1)
    scores = torch.tensor([[[0.8, 0.4, 0.6, 0.2]]])
    masks = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.bool)
    # curve: (0,0) -> t=.8 (0,.5) -> t=.6 (.5,.5) -> t=.4 (.5,1) -> t=.2 (1,1); up to 0.3 the PRO is 0.5
    assert aupro_exact(scores, masks, fpr_limit=0.3) == pytest.approx(0.5, abs=1e-15)
    # up to 1: 0.5 * 0.5 + 0.5 * 1 = 0.75
    assert aupro_exact(scores, masks, fpr_limit=1.0) == pytest.approx(0.75, abs=1e-15)


def test_exact_interpolates_at_the_limit():
    # ties: one threshold takes FPR from 0 to 1 and PRO from 0 to 1 -> the line y = x, area 0.3**2 / 2 / 0.3
    scores = torch.zeros(1, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    assert aupro_exact(scores, masks) == pytest.approx(0.15, abs=1e-15)


def test_cflow_hand_computed():
    # scores 0..4 in a 1x5 image, region = last two pixels (3, 4); thresholds 0, .8, 1.6, 2.4, 3.2 (4 steps of 5)
    scores = torch.tensor([[[0.0, 1.0, 2.0, 3.0, 4.0]]])
    masks = torch.tensor([[[0, 0, 0, 1, 1]]], dtype=torch.bool)
    # FPR (normal 0,1,2 above t): 2/3, 2/3, 1/3, 0, 0; kept (< .3): t=2.4 and t=3.2 with FPR 0 and 0 -> undefined
    assert aupro_cflow(scores, masks, num_thresholds=5) is None
    # limit .5 keeps t=1.6 (FPR 1/3, PRO 1), 2.4 (0, 1), 3.2 (0, .5): rescaled x 1, 0, 0 -> area 1
    assert aupro_cflow(scores, masks, fpr_limit=0.5, num_thresholds=5) == pytest.approx(1.0, abs=1e-15)


def test_cflow_binarises_strictly_above():
    # scores on the thresholds 0 and 1 (np.arange(0, 2, 1)); region: the pixel scoring 2, normal: 1, 1, 0
    scores = torch.tensor([[[2.0, 1.0, 1.0, 0.0]]])
    masks = torch.tensor([[[1, 0, 0, 0]]], dtype=torch.bool)
    # score > t: FPR 2/3 at t=0 and 0 at t=1, both kept below .7 -> rescaled 1, 0 with PRO 1 -> area 1
    # (score >= t would give FPR 1 and 2/3, keep one point only, and be undefined)
    assert aupro_cflow(scores, masks, fpr_limit=0.7, num_thresholds=2) == pytest.approx(1.0, abs=1e-15)


def test_diagonal_pixels_form_one_region():
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 2, 2] = True  # a diagonal line: one region
    masks[0, 4, 0] = True  # apart: a second region
    masks[1, 0, 0] = True  # same place on the next image: its own region
    regions = connected_regions(masks)
    assert regions.dtype == torch.int32
    assert regions[0, 0, 0] == regions[0, 1, 1] == regions[0, 2, 2] == 1
    assert regions[0, 4, 0] == 2
    assert regions[1, 0, 0] == 3
    assert int((regions > 0).sum()) == 5
    assert connected_regions(masks[0]).shape == (5, 5)


@pytest.mark.parametrize("metric", [aupro_exact, aupro_cflow])
def test_no_anomalous_or_no_normal_pixel_is_undefined(metric):
    scores = torch.rand(3, 8, 8)
    assert metric(scores, torch.zeros(3, 8, 8, dtype=torch.bool)) is None
    assert metric(scores, torch.ones(3, 8, 8, dtype=torch.bool)) is None


@pytest.mark.parametrize("metric", [aupro_exact, aupro_cflow])
def test_invalid_limit(metric):
    with pytest.raises(ConfigError, match="fpr_limit"):
        metric(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), fpr_limit=0.0)
