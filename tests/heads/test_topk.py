"""Top-k (UTPA) head against literal formulas: top-k scoring over layers, ties, k > N, mean maps, smoothing."""

from __future__ import annotations

import math

import pytest
import torch
from head_inputs import random_features
from torch.nn import functional as F  # noqa: N812

from zsad.errors import ConfigError
from zsad.heads.maps import gaussian_smooth
from zsad.heads.topk import TopKHead
from zsad.registry import HEADS
from zsad.structures import Features, TextFeatures


def make_inputs(batch=2, grid=(4, 4), dim=8, layers=3, per_layer=True, classes=2):
    g = torch.Generator().manual_seed(0)
    features = random_features(g, batch, grid, dim, layers=range(1, layers + 1))
    text = F.normalize(torch.randn(batch, classes, dim, generator=g), dim=-1)
    layer_text = tuple(F.normalize(torch.randn(batch, classes, dim, generator=g), dim=-1) for _ in range(layers))
    return features, TextFeatures(embeddings=text, per_layer=layer_text if per_layer else None)


def literal_image_logits(features, text, k, temperature=0.07):
    """Per image: rank each layer's patches by anomaly probability (stable: lower index first on ties), keep the
    top k, collect their raw cosines over all layers, average, divide by the temperature."""
    batch = features.global_embedding.shape[0]
    logits = []
    for b in range(batch):
        picked = []
        for layer, tokens in enumerate(features.patch_tokens):
            t = text.for_layer(layer)[b if text.for_layer(layer).shape[0] > 1 else 0]
            cosines = [[float(F.normalize(p, dim=0) @ t[c]) for c in range(t.shape[0])] for p in tokens[b]]
            anomaly = []
            for row in cosines:
                exps = [math.exp(c / temperature) for c in row]
                anomaly.append(sum(exps[1:]) / sum(exps))
            order = sorted(range(len(cosines)), key=lambda n: (-anomaly[n], n))[:k]
            picked.extend(cosines[n] for n in order)
        logits.append([sum(row[c] for row in picked) / len(picked) / temperature for c in range(len(picked[0]))])
    return torch.tensor(logits)


@pytest.mark.parametrize(("k", "per_layer", "classes"), [(5, True, 2), (1, False, 2), (16, True, 2), (4, True, 3)])
def test_image_score_from_top_k_patches_over_layers(k, per_layer, classes):
    features, text = make_inputs(per_layer=per_layer, classes=classes)
    scores = TopKHead(k=k).eval()(features, text, (16, 16))
    expected = literal_image_logits(features, text, k)
    torch.testing.assert_close(scores.image_logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.image_score, 1 - expected.softmax(-1)[:, 0], atol=1e-5, rtol=1e-5)


def test_k_larger_than_the_number_of_patches_keeps_them_all():
    features, text = make_inputs()
    scores = TopKHead(k=100).eval()(features, text, (16, 16))
    cosines = [torch.einsum("bnd,bcd->bnc", F.normalize(t, dim=-1), text.per_layer[i]) for i, t in enumerate(
        features.patch_tokens)]  # fmt: skip
    expected = torch.cat(cosines, dim=1).mean(dim=1) / 0.07
    torch.testing.assert_close(scores.image_logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.image_logits, literal_image_logits(features, text, 100), atol=1e-4, rtol=1e-5)


def test_ties_are_broken_by_the_lower_patch_index():
    """Patches 0 and 1 tie exactly (equal normal and anomaly cosines, p_a = 0.5) but have different cosines."""
    text = torch.eye(4)[:2].unsqueeze(0)  # normal = e1, anomaly = e2
    patches = torch.tensor([[0, 0, 1.0, 0], [0.5, 0.5, 0.5, 0.5], [1.0, 0, 0, 0], [0, 1.0, 0, 0]]).unsqueeze(0)
    features = Features(torch.zeros(1, 4), (patches,), (1,), (2, 2))
    scores = TopKHead(k=2).eval()(features, TextFeatures(embeddings=text), (4, 4))
    # Top 2: patch 3 (p_a ~ 1), then patch 0 (lower index of the tie) -> mean cosines (0, 0.5).
    torch.testing.assert_close(scores.image_logits, torch.tensor([[0.0, 0.5]]) / 0.07)
    reordered = Features(torch.zeros(1, 4), (patches[:, [1, 0, 2, 3]],), (1,), (2, 2))
    scores = TopKHead(k=2).eval()(reordered, TextFeatures(embeddings=text), (4, 4))
    torch.testing.assert_close(scores.image_logits, torch.tensor([[0.25, 0.75]]) / 0.07)


def test_pixel_map_is_the_mean_of_upsampled_layer_probabilities():
    features, text = make_inputs()
    scores = TopKHead(sigma=0).eval()(features, text, (16, 16))
    expected = torch.zeros(2, 16, 16)
    for layer, tokens in enumerate(features.patch_tokens):
        sims = torch.einsum("bnd,bcd->bnc", F.normalize(tokens, dim=-1), text.per_layer[layer]) / 0.07
        probs = sims.softmax(-1).transpose(1, 2).reshape(2, 2, 4, 4)
        up = F.interpolate(probs, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(scores.layer_probs[layer], up, atol=1e-5, rtol=1e-5)
        expected += up[:, 1] / 3
    torch.testing.assert_close(scores.anomaly_map, expected, atol=1e-5, rtol=1e-5)
    summed = TopKHead(sigma=0, aggregation="sum").eval()(features, text, (16, 16)).anomaly_map
    torch.testing.assert_close(summed, 3 * expected, atol=1e-5, rtol=1e-5)


def test_smoothing_with_sigma_8_only_at_evaluation():
    features, text = make_inputs(grid=(8, 8))
    head = TopKHead()
    assert head.sigma == 8.0 and head.k == 50 and head.aggregation == "mean"
    raw = head.train()(features, text, (40, 40)).anomaly_map
    torch.testing.assert_close(head.eval()(features, text, (40, 40)).anomaly_map, gaussian_smooth(raw, 8.0))


def test_gradients_flow_through_the_selected_patches():
    features, text = make_inputs()
    layer_text = tuple(t.clone().requires_grad_(True) for t in text.per_layer)
    scores = TopKHead(k=3)(features, TextFeatures(embeddings=text.embeddings, per_layer=layer_text), (16, 16))
    torch.nn.functional.cross_entropy(scores.image_logits, torch.tensor([0, 1])).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layer_text)


def test_registered_and_bad_arguments():
    assert HEADS.get("topk") is TopKHead
    with pytest.raises(ConfigError, match="k=0 must be at least 1"):
        TopKHead(k=0)
    with pytest.raises(ConfigError, match="temperature=0 must be a positive number"):
        TopKHead(temperature=0)
    with pytest.raises(ConfigError, match="sigma=-1 must be >= 0"):
        TopKHead(sigma=-1)


def test_static_prompts_with_the_topk_head_train(tiny_backbone, images):
    from zsad import ZSADModule
    from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
    from zsad.prompts import StaticPrompt

    torch.manual_seed(0)
    module = ZSADModule(
        tiny_backbone, StaticPrompt(deep_depth=3), TopKHead(), [ImageCrossEntropy(), FocalLoss(), DiceLoss()]
    )
    batch = {"image": images, "mask": torch.zeros(2, 1, 64, 64), "label": torch.tensor([0, 1])}
    batch["mask"][1, :, 8:24, 8:24] = 1
    module.training_step(batch, 0).backward()
    assert module.prompt.context.grad is not None and module.prompt.deep.grad is not None


def test_scores_stay_fp32_under_autocast():
    features, text = make_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = TopKHead(sigma=0).eval()(features, text, (16, 16))
    assert scores.image_logits.dtype == torch.float32 and scores.layer_probs[0].dtype == torch.float32
    torch.testing.assert_close(scores.image_logits, literal_image_logits(features, text, 50), atol=1e-4, rtol=1e-5)
