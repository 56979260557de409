"""The steps that must stay in fp32 under mixed precision do, exactly: same result as fp32 on the upcast inputs.

Autocast runs matrix products and convolutions in half precision even when their inputs are fp32, so casting
inputs is not enough; each of these steps turns autocast off locally. Given half-precision inputs under autocast
(CPU bf16 as Lightning's `bf16-mixed`, and fp16, the dtype of `16-mixed` on a GPU), each must return fp32 and equal,
bit for bit, the same function on the inputs cast to fp32 without autocast.
"""

from __future__ import annotations

import pytest
import torch

from zsad.heads.maps import class_logits, gaussian_smooth
from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.losses.multiclass import multiclass_focal_on_probs
from zsad.metrics.evaluator import Evaluator
from zsad.prompts.cops.ests import prototype_distances
from zsad.prompts.cops.icts import ClassTokenVAE, kl_divergence, reconstruction_loss
from zsad.structures import Scores, TextFeatures

HALF = [torch.bfloat16, torch.float16]


def half(*shape: int, dtype: torch.dtype, seed: int = 0, softmax: bool = False) -> torch.Tensor:
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return (values.softmax(dim=1) if softmax else values).to(dtype)


def assert_fp32_exact(function, dtype, *inputs) -> None:
    with torch.autocast("cpu", dtype=dtype):
        result = function(*inputs)
    expected = function(*(x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs))
    assert result.dtype == torch.float32
    assert torch.equal(result, expected)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_logits_distances_and_smoothing_stay_fp32(dtype):
    tokens, text = half(2, 5, 8, dtype=dtype), half(1, 3, 8, dtype=dtype, seed=1)
    assert_fp32_exact(lambda t, e: class_logits(t, e, 0.07), dtype, tokens, text)
    assert_fp32_exact(lambda t, e: class_logits(t[:, 0], e, 0.07), dtype, tokens, text)  # global [B, D] branch
    assert_fp32_exact(prototype_distances, dtype, tokens, half(2, 3, 8, dtype=dtype, seed=2))
    assert_fp32_exact(lambda m: gaussian_smooth(m, 2.0), dtype, half(2, 16, 16, dtype=dtype).sigmoid())


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_losses_stay_fp32(dtype):
    probs = half(2, 2, 8, 8, dtype=dtype, softmax=True)
    mask = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.7).float()
    batch = {"mask": mask, "label": torch.tensor([0, 1])}
    text = TextFeatures(embeddings=torch.zeros(1, 2, 8))

    def scores(layer_probs: torch.Tensor, logits: torch.Tensor) -> Scores:
        return Scores(logits, logits[:, 1], (layer_probs, layer_probs.flip(0)), layer_probs[:, 1])

    logits = half(2, 2, dtype=dtype, seed=4) * 14  # cosines / 0.07
    for loss in (FocalLoss(), DiceLoss(), ImageCrossEntropy()):
        assert_fp32_exact(lambda p, z, loss=loss: loss(scores(p, z), batch, text), dtype, probs, logits)
    classes = half(2, 4, 8, 8, dtype=dtype, seed=5, softmax=True)
    targets = torch.tensor([[0.0, 1, 0, 0], [0, 1, 1, 1]])
    assert_fp32_exact(lambda p: multiclass_focal_on_probs(p, mask[:, 0], targets), dtype, classes)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_vae_terms_stay_fp32(dtype):
    mean, logvar = half(4, 8, dtype=dtype), half(4, 8, dtype=dtype, seed=1)
    assert_fp32_exact(kl_divergence, dtype, mean, logvar)
    for mode in ("cross_batch_mse", "per_sample_l2"):
        assert_fp32_exact(lambda d, g, mode=mode: reconstruction_loss(d, g, mode), dtype, mean, logvar)
    vae = ClassTokenVAE(8)
    with torch.autocast("cpu", dtype=dtype):
        decoded, sample_mean, sample_logvar = vae.posterior_sample(torch.randn(4, 8))
    assert sample_mean.dtype == sample_logvar.dtype == torch.float32  # the reparameterised sample is drawn in fp32
    assert torch.isfinite(decoded).all()


def test_evaluation_is_unchanged_under_autocast():
    """Lightning runs `test_step`, and with it the evaluator's update, under autocast."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 16, 16, generator=generator)
    masks = (torch.rand(6, 1, 16, 16, generator=generator) > 0.8).float() * torch.tensor([0, 1] * 3)[
        :, None, None, None
    ]
    batch = {"mask": masks, "label": (masks.flatten(1).amax(dim=1) > 0).long(), "category": ["a"] * 6}
    scores = Scores(torch.zeros(6, 2), maps.flatten(1).amax(dim=1), (), maps)
    results = []
    for enabled in (False, True):
        evaluator = Evaluator()
        evaluator.reset([("", "a")])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            evaluator.update(scores, batch)
        results.append(evaluator.compute().to_dict())
    assert results[0] == results[1]
