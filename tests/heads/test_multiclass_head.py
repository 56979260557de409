"""The multiclass (DAPO) head against literal formulas: mean-defect image score, summed maps, class map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from head_inputs import random_features

from zsad.errors import ConfigError
from zsad.heads.multiclass import MultiClassHead
from zsad.registry import HEADS
from zsad.structures import Features, TextFeatures

WIDTH, DIM, GRID, SIZE = 12, 8, (4, 4), (16, 16)


def make_inputs(batch=2, classes=4, layers=(6, 12)):
    g = torch.Generator().manual_seed(0)
    features = random_features(g, batch, GRID, DIM, layers, width=WIDTH)
    text = F.normalize(torch.randn(1, classes, DIM, generator=g), dim=-1)
    names = ("normal", *(f"defect{i}" for i in range(1, classes)))
    return features, TextFeatures(embeddings=text, class_names=names)


def make_head(**kwargs):
    torch.manual_seed(0)
    return MultiClassHead(**{"layers": (6, 12), "vision_width": WIDTH, "embed_dim": DIM, **kwargs}).eval()


def reference_layer_probs(head, features, text, align_corners=True):
    probs = []
    for linear, tokens in zip(head.patch_maps, features.patch_tokens, strict=True):
        projected = F.normalize(tokens @ linear.weight.T + linear.bias, dim=-1)
        sims = projected @ text.embeddings[0].T / 0.07  # [B, N, C]
        grid = sims.softmax(-1).transpose(1, 2).reshape(2, -1, *GRID)
        probs.append(F.interpolate(grid, size=SIZE, mode="bilinear", align_corners=align_corners))
    return probs


def test_registered():
    assert HEADS.get("multiclass") is MultiClassHead


@pytest.mark.parametrize("prototype", ["normalized_mean", "mean"])
def test_image_score_uses_the_mean_defect_embedding(prototype):
    """Official: the cosine with the renormalised mean of the unit defect embeddings; "mean": the mean cosine."""
    features, text = make_inputs()
    with torch.no_grad():
        scores = make_head(defect_prototype=prototype)(features, text, SIZE)
    g = F.normalize(features.global_embedding, dim=-1)
    e = text.embeddings[0]
    defect = e[1:].mean(0)
    if prototype == "normalized_mean":
        defect = defect / defect.norm()
    for b in range(2):
        logits = torch.stack([g[b] @ e[0], g[b] @ defect]) / 0.07
        torch.testing.assert_close(scores.image_logits[b], logits, atol=1e-4, rtol=1e-5)
        assert scores.image_score[b].item() == pytest.approx(logits.softmax(0)[1].item(), abs=1e-6)


def test_the_two_defect_prototypes_differ_and_unknown_ones_are_refused():
    features, text = make_inputs()
    with torch.no_grad():
        official = make_head()(features, text, SIZE).image_logits
        mean = make_head(defect_prototype="mean")(features, text, SIZE).image_logits
    torch.testing.assert_close(official[:, 0], mean[:, 0])
    assert (official[:, 1] - mean[:, 1]).abs().min() > 1e-3
    with pytest.raises(ConfigError, match="defect_prototype='median' is unknown"):
        make_head(defect_prototype="median")


def test_pixel_map_sums_defect_probabilities_over_layers_without_smoothing():
    features, text = make_inputs()
    head = make_head()
    with torch.no_grad():
        scores = head(features, text, SIZE)
        expected = reference_layer_probs(head, features, text)
    assert len(scores.layer_probs) == 2 and scores.layer_probs[0].shape == (2, 4, *SIZE)
    for ours, reference in zip(scores.layer_probs, expected, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    summed = sum(p[:, 1] + p[:, 2] + p[:, 3] for p in expected)
    torch.testing.assert_close(scores.anomaly_map, summed, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(head.train()(features, text, SIZE).anomaly_map, scores.anomaly_map)


def test_upsampling_aligns_corners_as_the_official_code_unless_switched_off():
    features, text = make_inputs()
    official, other = make_head(), make_head(align_corners=False)
    with torch.no_grad():
        aligned = official(features, text, SIZE).layer_probs[0]
        unaligned = other(features, text, SIZE).layer_probs[0]
        expected = reference_layer_probs(other, features, text, align_corners=False)[0]
    torch.testing.assert_close(unaligned, expected, atol=1e-5, rtol=1e-5)
    # align_corners=True puts each corner patch's value exactly on the corner pixel
    corners = (slice(None), slice(None), [0, 0, -1, -1], [0, -1, 0, -1])
    patch_corners = (slice(None), slice(None), [0, 0, GRID[0] - 1, GRID[0] - 1], [0, GRID[1] - 1, 0, GRID[1] - 1])
    sims = F.normalize(official.patch_maps[0](features.patch_tokens[0]), dim=-1) @ text.embeddings[0].T / 0.07
    grid = sims.softmax(-1).transpose(1, 2).reshape(2, -1, *GRID)
    torch.testing.assert_close(aligned[corners], grid[patch_corners], atol=1e-6, rtol=1e-6)
    assert (aligned - unaligned).abs().max() > 1e-3


def test_class_map_is_the_argmax_defect_where_anomalous():
    features, text = make_inputs(classes=3)
    head = make_head(class_threshold=0.5)
    with torch.no_grad():
        head.patch_maps[0].weight.mul_(8.0)  # confident, varied probabilities: both outcomes occur
        scores = head(features, text, SIZE)
        probs = reference_layer_probs(head, features, text)
    mean = (probs[0] + probs[1]) / 2
    expected = torch.zeros(2, *SIZE, dtype=torch.long)
    for b in range(2):
        for y in range(SIZE[0]):
            for x in range(SIZE[1]):
                p = mean[b, :, y, x]
                if p[1] + p[2] > 0.5:
                    expected[b, y, x] = 1 if p[1] >= p[2] else 2
    assert torch.equal(scores.class_map, expected)
    assert len(expected.unique()) >= 2


def test_without_linear_maps_tokens_are_compared_as_given():
    features, text = make_inputs()
    projected = Features(
        global_embedding=features.global_embedding,
        patch_tokens=tuple(t[..., :DIM] for t in features.patch_tokens),
        layers=features.layers,
        grid=GRID,
    )
    head = MultiClassHead(linear_maps=False).eval()
    assert not list(head.parameters())
    scores = head(projected, text, SIZE)
    sims = F.normalize(projected.patch_tokens[0], dim=-1) @ text.embeddings[0].T / 0.07
    grid = sims.softmax(-1).transpose(1, 2).reshape(2, -1, *GRID)
    up = F.interpolate(grid, size=SIZE, mode="bilinear", align_corners=True)
    torch.testing.assert_close(scores.layer_probs[0], up, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_linear_maps():
    features, text = make_inputs()
    head = make_head().train()
    head(features, text, SIZE).anomaly_map.sum().backward()
    assert all(float(linear.weight.grad.abs().sum()) > 0 for linear in head.patch_maps)


def test_mismatches_are_explained():
    features, text = make_inputs()
    with pytest.raises(ConfigError, match="linear maps for layers \\[6, 18\\]"):
        make_head(layers=(6, 18))(features, text, SIZE)
    wide_text = TextFeatures(embeddings=F.normalize(torch.randn(1, 4, WIDTH), dim=-1))
    with pytest.raises(ConfigError, match="project_patches: false"):
        make_head(vision_width=32, embed_dim=WIDTH)(features, wide_text, SIZE)
    with pytest.raises(ConfigError, match="embed_dim=16"):
        make_head(embed_dim=16)(features, text, SIZE)
    with pytest.raises(ConfigError, match="temperature=0"):
        MultiClassHead(temperature=0)
