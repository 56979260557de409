"""SAGA head (CoPS, methods.md §2.6) against slow, literal formulas; presets and refused combinations."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from head_inputs import random_features

from zsad.errors import ConfigError
from zsad.heads.maps import gaussian_smooth
from zsad.heads.saga import SAGAHead
from zsad.prompts.cops.presets import OFFICIAL_TEST_PRESETS, official_preset
from zsad.structures import Features, TextFeatures

GRID, SIZE, DIM = (4, 4), (16, 16), 8


def make_inputs(batch=2, layers=1, prototypes=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = random_features(g, batch, GRID, DIM, layers=range(24 - layers + 1, 25))
    text = torch.nn.functional.normalize(torch.randn(batch, 2, DIM, generator=g), dim=-1)
    protos = torch.randn(batch, 6, DIM, generator=g) if prototypes else None  # 3 normal, then 3 anomaly
    return features, TextFeatures(embeddings=text, prototypes=protos)


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def slow_average(tokens, k):
    """One image's [16, D] tokens, K x K zero-padded mean on the 4 x 4 grid."""
    out = torch.zeros_like(tokens)
    for i in range(4):
        for j in range(4):
            for di in range(-(k // 2), k // 2 + 1):
                for dj in range(-(k // 2), k // 2 + 1):
                    if 0 <= i + di < 4 and 0 <= j + dj < 4:
                        out[i * 4 + j] += tokens[(i + di) * 4 + j + dj] / (k * k)
    return out


def slow_patch_values(tokens, text, prototypes, alpha, k, weighted):
    """Per patch: (p_normal, p_anomaly) and the spatial weight w, for one image and one layer."""
    tokens = slow_average(tokens, k)
    probs, dn, da = [], [], []
    for f in tokens:
        logits = [cos(f, text[0]) / 0.07, cos(f, text[1]) / 0.07]
        top = max(logits)
        exp = [math.exp(v - top) for v in logits]
        probs.append([e / sum(exp) for e in exp])
        if weighted:
            dn.append(min(1 - cos(f, p) for p in prototypes[:3]))
            da.append(min(1 - cos(f, p) for p in prototypes[3:]))
    if not weighted:
        return probs, [1.0] * len(probs)
    scaled_n = [(d - min(dn)) / (max(dn) - min(dn)) for d in dn]
    scaled_a = [(d - min(da)) / (max(da) - min(da)) for d in da]
    weights = [alpha * n + (1 - alpha) * (1 - a) for n, a in zip(scaled_n, scaled_a, strict=True)]
    return probs, weights


def slow_scores(features, text, alpha, beta, k, weighted):
    """Literal SAGA: weighted anomaly map (nearest upsampling, mean over layers) and the beta-fused score."""
    batch = features.global_embedding.shape[0]
    maps, scores = torch.zeros(batch, *SIZE), []
    for b in range(batch):
        patch_mean = [0.0] * 16
        for tokens in features.patch_tokens:
            prototypes = text.prototypes[b] if weighted else None
            probs, weights = slow_patch_values(tokens[b], text.embeddings[b], prototypes, alpha, k, weighted)
            for i in range(16):
                patch_mean[i] += probs[i][1] * weights[i] / len(features.patch_tokens)
        for y in range(SIZE[0]):
            for x in range(SIZE[1]):
                maps[b, y, x] = patch_mean[(y * GRID[0] // SIZE[0]) * GRID[1] + x * GRID[1] // SIZE[1]]
        g = features.global_embedding[b]
        logits = [cos(g, text.embeddings[b, 0]) / 0.07, cos(g, text.embeddings[b, 1]) / 0.07]
        global_score = 1 / (1 + math.exp(logits[0] - logits[1]))
        scores.append(beta * global_score + (1 - beta) * max(patch_mean) if weighted else global_score)
    return maps, torch.tensor(scores)


@pytest.mark.parametrize("layers", [1, 2])
def test_evaluation_matches_the_literal_saga(layers):
    features, text = make_inputs(layers=layers)
    head = SAGAHead(alpha=0.3, beta=0.8, neighbor_kernel=3, sigma=0).eval()
    scores = head(features, text, SIZE)
    maps, image_scores = slow_scores(features, text, 0.3, 0.8, 3, weighted=True)
    torch.testing.assert_close(scores.anomaly_map, maps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.image_score, image_scores, atol=1e-5, rtol=1e-5)
    assert len(scores.layer_probs) == layers and scores.layer_probs[0].shape == (2, 2, *SIZE)


def test_training_is_unweighted_and_global_only():
    features, text = make_inputs()
    head = SAGAHead(alpha=0.3, beta=0.8, neighbor_kernel=5, sigma=4).train()
    scores = head(features, text, SIZE)
    maps, image_scores = slow_scores(features, text, 0.3, 0.8, 5, weighted=False)
    torch.testing.assert_close(scores.anomaly_map, maps, atol=1e-5, rtol=1e-5)  # no smoothing either
    torch.testing.assert_close(scores.image_score, image_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.layer_probs[0][:, 1], maps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.image_logits.softmax(-1)[:, 1], image_scores, atol=1e-5, rtol=1e-5)


def test_smoothing_with_sigma_4_at_evaluation():
    features, text = make_inputs()
    raw = SAGAHead(sigma=0).eval()(features, text, SIZE)
    smoothed = SAGAHead(sigma=4).eval()(features, text, SIZE)
    torch.testing.assert_close(smoothed.anomaly_map, gaussian_smooth(raw.anomaly_map, 4.0))
    torch.testing.assert_close(smoothed.image_score, raw.image_score)  # the max is taken before smoothing


def test_scores_never_depend_on_batch_mates():
    features, text = make_inputs(batch=3)
    head = SAGAHead(sigma=0).eval()
    together = head(features, text, SIZE)
    alone_features = Features(
        global_embedding=features.global_embedding[1:2],
        patch_tokens=tuple(t[1:2] for t in features.patch_tokens),
        layers=features.layers,
        grid=GRID,
    )
    alone_text = TextFeatures(embeddings=text.embeddings[1:2], prototypes=text.prototypes[1:2])
    alone = head(alone_features, alone_text, SIZE)
    torch.testing.assert_close(alone.anomaly_map[0], together.anomaly_map[1])
    torch.testing.assert_close(alone.image_score[0], together.image_score[1])


def test_official_presets_and_active_preset():
    assert official_preset("VisA") == {"alpha": 0.35, "beta": 1.0, "neighbor_kernel": 3}
    for dataset in ("mvtec", "btad", "headct", "others"):
        assert official_preset(dataset) == OFFICIAL_TEST_PRESETS["others"]
    visa = SAGAHead(preset="visa")
    assert (visa.alpha, visa.beta, visa.neighbor_kernel) == (0.35, 1.0, 3)
    assert visa.active_preset() == {"name": "visa", "dataset": "visa", "alpha": 0.35, "beta": 1.0, "neighbor_kernel": 3}
    assert SAGAHead(preset="mvtec").active_preset()["name"] == "others"
    explicit = SAGAHead()
    assert explicit.active_preset() is None
    assert (explicit.alpha, explicit.beta, explicit.neighbor_kernel) == (0.26, 0.9, 5)
    assert SAGAHead(preset="visa", beta=1.0).beta == 1.0  # agreeing values are fine
    with pytest.raises(ConfigError, match="preset='visa' fixes"):
        SAGAHead(preset="visa", alpha=0.26)


def test_by_dataset_applies_each_datasets_official_constants_at_evaluation():
    features, text = make_inputs(batch=2, layers=2)
    head = SAGAHead(preset="by_dataset", neighbor_kernel=3, sigma=0).eval()
    for datasets, (alpha, beta, k) in (
        (("visa", "visa"), (0.35, 1.0, 3)),
        (("mvtec", "mvtec"), (0.26, 0.9, 5)),
        (None, (0.26, 0.9, 5)),  # unknown: the official script's default --dataset (mvtec) gives the others'
    ):
        scores = head(replace(features, datasets=datasets), text, SIZE)
        maps, expected = slow_scores(features, text, alpha, beta, k, weighted=True)
        torch.testing.assert_close(scores.anomaly_map, maps, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scores.image_score, expected, atol=1e-5, rtol=1e-5)
    assert head.reads_dataset and not head.train().reads_dataset
    training = head(replace(features, datasets=("visa", "visa")), text, SIZE)  # the training K (3), unweighted
    fixed = SAGAHead(neighbor_kernel=3, sigma=0).train()(features, text, SIZE)
    torch.testing.assert_close(training.anomaly_map, fixed.anomaly_map, rtol=0, atol=0)
    assert head.active_preset() is None
    assert head.active_preset("VisA_subset") == {
        "name": "visa",
        "dataset": "VisA_subset",
        "alpha": 0.35,
        "beta": 1.0,
        "neighbor_kernel": 3,
    }
    with pytest.raises(ConfigError, match=r"one dataset at a time, but the batch holds \['btad', 'visa'\]"):
        head.eval()(replace(features, datasets=("visa", "btad")), text, SIZE)
    with pytest.raises(ConfigError, match="takes alpha and beta from each test dataset"):
        SAGAHead(preset="by_dataset", beta=1.0)


def test_beta_one_is_the_global_score_only():
    features, text = make_inputs()
    scores = SAGAHead(preset="visa").eval()(features, text, SIZE)
    torch.testing.assert_close(scores.image_score, scores.image_logits.softmax(-1)[:, 1])


def test_missing_prototypes_are_refused_with_the_reason():
    features, text = make_inputs(prototypes=False)
    with pytest.raises(ConfigError, match=r"distance to visual prototypes.*use_ests: false"):
        SAGAHead().eval()(features, text, SIZE)
    head = SAGAHead(alpha=0.3, beta=0.8, neighbor_kernel=3, spatial_weighting=False, sigma=0).eval()
    scores = head(features, text, SIZE)
    maps, _ = slow_scores(features, text, 0.3, 0.8, 3, weighted=False)
    torch.testing.assert_close(scores.anomaly_map, maps, atol=1e-5, rtol=1e-5)
    expected = 0.8 * scores.image_logits.softmax(-1)[:, 1] + 0.2 * maps.flatten(1).amax(1)
    torch.testing.assert_close(scores.image_score, expected, atol=1e-5, rtol=1e-5)


def test_bad_head_arguments():
    with pytest.raises(ConfigError, match="temperature=0 must be a positive number"):
        SAGAHead(temperature=0)
    with pytest.raises(ConfigError, match="sigma=-1 must be >= 0"):
        SAGAHead(sigma=-1)
    with pytest.raises(ConfigError, match=r"alpha=1.5 must lie in \[0, 1\]"):
        SAGAHead(alpha=1.5)
    with pytest.raises(ConfigError, match="neighbor_kernel=2 must be an odd"):
        SAGAHead(neighbor_kernel=2)
