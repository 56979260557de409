"""Dual-branch head against explicit formulas; Gaussian smoothing against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from head_inputs import random_features
from scipy.ndimage import gaussian_filter

from zsad.errors import ConfigError
from zsad.heads import DualBranchHead
from zsad.heads.maps import gaussian_smooth
from zsad.structures import TextFeatures


def make_inputs(batch=2, grid=(4, 4), dim=8, layers=2, shared=True):
    g = torch.Generator().manual_seed(0)
    features = random_features(g, batch, grid, dim, layers=range(1, layers + 1))
    text = torch.nn.functional.normalize(torch.randn(1 if shared else batch, 2, dim, generator=g), dim=-1)
    return features, TextFeatures(embeddings=text)


@pytest.mark.parametrize("shared", [True, False])
def test_image_score_is_the_softmax_of_scaled_cosines(shared):
    features, text = make_inputs(shared=shared)
    scores = DualBranchHead(temperature=0.07).eval()(features, text, (16, 16))
    g = torch.nn.functional.normalize(features.global_embedding, dim=-1)
    t = text.embeddings.expand(2, -1, -1)
    for b in range(2):
        logits = torch.stack([g[b] @ t[b, 0], g[b] @ t[b, 1]]) / 0.07
        assert scores.image_score[b].item() == pytest.approx(torch.softmax(logits, 0)[1].item(), abs=1e-6)


def test_pixel_map_sums_upsampled_layer_probabilities():
    features, text = make_inputs()
    head = DualBranchHead(aggregation="sum", sigma=0).eval()
    scores = head(features, text, (16, 16))
    expected = torch.zeros(2, 16, 16)
    for tokens in features.patch_tokens:
        sims = torch.nn.functional.normalize(tokens, dim=-1) @ text.embeddings[0].T / 0.07  # [B, N, 2]
        probs = sims.softmax(-1).transpose(1, 2).reshape(2, 2, 4, 4)
        up = torch.nn.functional.interpolate(probs, size=(16, 16), mode="bilinear", align_corners=False)
        expected += up[:, 1]  # p_anomaly (= 1 - p_normal for two classes)
    torch.testing.assert_close(scores.anomaly_map, expected, atol=1e-5, rtol=1e-5)
    assert len(scores.layer_probs) == 2 and scores.layer_probs[0].shape == (2, 2, 16, 16)
    mean_head = DualBranchHead(aggregation="mean", sigma=0).eval()
    torch.testing.assert_close(mean_head(features, text, (16, 16)).anomaly_map, expected / 2, atol=1e-5, rtol=1e-5)


def test_smoothing_only_at_evaluation():
    features, text = make_inputs()
    head = DualBranchHead(sigma=1.0)
    raw = head.train()(features, text, (16, 16)).anomaly_map
    smoothed = head.eval()(features, text, (16, 16)).anomaly_map
    torch.testing.assert_close(smoothed, gaussian_smooth(raw, 1.0))


@pytest.mark.parametrize(("sigma", "border", "scipy_mode"), [(1.0, "symmetric", "reflect"), (4.0, "reflect", "mirror")])
def test_gaussian_smoothing_matches_scipy(sigma, border, scipy_mode):
    maps = torch.rand(2, 48, 40, generator=torch.Generator().manual_seed(1))
    ours = gaussian_smooth(maps, sigma, border).numpy()
    reference = np.stack([gaussian_filter(m.numpy(), sigma, mode=scipy_mode, truncate=4.0) for m in maps])
    np.testing.assert_allclose(ours, reference, atol=1e-5)  # tests/heads/test_smoothing.py goes to 1e-6


def test_bad_head_arguments():
    with pytest.raises(ConfigError, match="temperature=0 must be a positive number"):
        DualBranchHead(temperature=0)
    with pytest.raises(ConfigError, match="sigma=-1 must be >= 0"):
        DualBranchHead(sigma=-1)


def test_logits_stay_fp32_under_autocast():
    features, text = make_inputs()
    head = DualBranchHead().eval()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores = head(features, text, (16, 16))
    assert scores.image_logits.dtype == torch.float32
    assert scores.layer_probs[0].dtype == torch.float32
