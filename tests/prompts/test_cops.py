"""CoPS synthesizer and losses against slow, literal formulas (methods.md §2.2-2.5, 2.7)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import lightning as L  # noqa: N812
import pytest
import torch
import yaml
from deep_prompts import ReferenceDeepPrompts

import zsad.heads.saga
from training_steps import train_on_batch
from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.cli import main
from zsad.components import build
from zsad.errors import ConfigError
from zsad.losses.cops import CenterLoss, KLLoss, ReconstructionLoss
from zsad.prompts.cops import CoPSPrompt
from zsad.prompts.cops.ests import (
    StatePrototypes,
    average_neighbor,
    center_losses,
    pool_mask_to_grid,
    prototype_distances,
)
from zsad.prompts.cops.icts import ClassTokenVAE, kl_divergence, prior_latents, reconstruction_loss
from zsad.registry import HEADS, LOSSES, PROMPTS
from zsad.structures import TextFeatures

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
COPS_CONFIGS = [
    "method/cops.yaml",
    "method/cops_visa.yaml",
    "ablation/cops_no_ests.yaml",
    "ablation/cops_no_icts.yaml",
    "ablation/cops_no_saga.yaml",
    "ablation/cops_no_ests_no_icts.yaml",
]


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(layers=[24], vv_start_layer=1, global_ln_post=False)


@pytest.fixture(scope="module")
def features(backbone):
    with torch.no_grad():
        return backbone(torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))


def make_prompt(backbone, **kwargs):
    torch.manual_seed(0)
    prompt = CoPSPrompt(**kwargs)
    prompt.setup(backbone.text)
    return prompt


def perturb(module, scale=0.1, seed=1):
    """Move every tensor off its (often constant) initial value, as §2.10 advises."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


# ---------------------------------------------------------------- literal references
def slow_layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def slow_extract(extractor, queries, tokens):
    """One image: X = T + MHA(LN1(T), LN1(F), LN1(F)); P = X + MLP(LN2(X)), written out head by head."""
    dim = queries.shape[-1]
    attn = extractor.attn
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q_in, kv_in = slow_layer_norm(queries, extractor.ln_1), slow_layer_norm(tokens, extractor.ln_1)
    q = q_in @ w[:dim].T + b[:dim]
    k = kv_in @ w[dim : 2 * dim].T + b[dim : 2 * dim]
    v = kv_in @ w[2 * dim :].T + b[2 * dim :]
    head_dim = dim // attn.num_heads
    outputs = []
    for h in range(attn.num_heads):
        s = slice(h * head_dim, (h + 1) * head_dim)
        weights = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(head_dim), dim=-1)
        outputs.append(weights @ v[:, s])
    x = queries + torch.cat(outputs, -1) @ attn.out_proj.weight.T + attn.out_proj.bias
    first, second = extractor.mlp[0], extractor.mlp[2]
    hidden = slow_layer_norm(x, extractor.ln_2) @ first.weight.T + first.bias
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    return x + hidden @ second.weight.T + second.bias


def slow_average_neighbor(tokens, grid, k):
    rows, cols = grid
    maps = tokens.reshape(tokens.shape[0], rows, cols, -1)
    out = torch.zeros_like(maps)
    for i in range(rows):
        for j in range(cols):
            total = torch.zeros_like(maps[:, 0, 0])
            for di in range(-(k // 2), k // 2 + 1):
                for dj in range(-(k // 2), k // 2 + 1):
                    if 0 <= i + di < rows and 0 <= j + dj < cols:
                        total += maps[:, i + di, j + dj]
            out[:, i, j] = total / (k * k)  # zero padding counts toward the average
    return out.reshape(tokens.shape)


def slow_center(tokens, normal, anomaly, patch_mask):
    normal_sum, normal_count, anomaly_sum, anomaly_count = 0.0, 0, 0.0, 0
    for b in range(tokens.shape[0]):
        for i in range(tokens.shape[1]):
            f = tokens[b, i]
            dn = min(1 - float(torch.dot(f, p) / (f.norm() * p.norm())) for p in normal[b])
            da = min(1 - float(torch.dot(f, p) / (f.norm() * p.norm())) for p in anomaly[b])
            if patch_mask[b].flatten()[i] > 0:
                anomaly_sum, anomaly_count = anomaly_sum + da, anomaly_count + 1
            else:
                normal_sum, normal_count = normal_sum + dn, normal_count + 1
    return normal_sum / max(normal_count, 1), (anomaly_sum / anomaly_count if anomaly_count else 0.0)


# ---------------------------------------------------------------- ESTS
def test_prototype_extractor_matches_the_literal_block():
    torch.manual_seed(0)
    ests = StatePrototypes(dim=16, num_prototypes=3, num_heads=4).double()
    perturb(ests)
    tokens = torch.randn(2, 10, 16, dtype=torch.float64)
    prototypes = ests(tokens)
    assert prototypes.shape == (2, 2, 3, 16)
    for b in range(2):
        for state in range(2):  # the official code runs the shared extractor once per state
            expected = slow_extract(ests.extractor, ests.queries[state], tokens[b])
            torch.testing.assert_close(prototypes[b, state], expected, atol=1e-10, rtol=1e-10)


def test_official_initialisation():
    torch.manual_seed(0)
    ests = StatePrototypes(dim=256, num_prototypes=6, num_heads=4)
    extractor = ests.extractor
    for linear in (extractor.attn.out_proj, extractor.mlp[0], extractor.mlp[2]):
        assert abs(float(linear.weight.std()) - 0.02) < 0.002 and not linear.bias.any()
    assert abs(float(ests.queries.std()) - 0.02) < 0.002
    for ln in (extractor.ln_1, extractor.ln_2):
        assert bool((ln.weight == 1).all()) and not ln.bias.any()
    assert float(extractor.attn.in_proj_weight.std()) > 0.04  # PyTorch's xavier default is kept
    vae = ClassTokenVAE(256)
    assert abs(float(vae.decoder[2].weight.std()) - 0.02) < 0.002 and not vae.to_mean.bias.any()


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_average_neighbor_counts_zero_padding(kernel):
    tokens = torch.randn(2, 20, 3, generator=torch.Generator().manual_seed(0))
    out = average_neighbor(tokens, (4, 5), kernel)
    torch.testing.assert_close(out, slow_average_neighbor(tokens, (4, 5), kernel), atol=1e-6, rtol=1e-6)


def test_mask_is_max_pooled_to_the_grid():
    mask = torch.zeros(1, 16, 16)
    mask[0, 5, 9] = 1.0  # one pixel in patch (1, 2) of a 4 x 4 grid
    pooled = pool_mask_to_grid(mask, (4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 1, 2] = 1.0
    assert torch.equal(pooled, expected)


def test_center_losses_match_the_literal_means():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 6, 5, generator=g)
    normal, anomaly = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    patch_mask = torch.zeros(2, 2, 3)
    patch_mask[1, 0, 1:] = 1.0
    dn, da = prototype_distances(tokens, normal), prototype_distances(tokens, anomaly)
    lnc, lac = center_losses(dn.view(2, 2, 3), da.view(2, 2, 3), patch_mask)
    expected = slow_center(tokens, normal, anomaly, patch_mask)
    assert (float(lnc), float(lac)) == pytest.approx(expected, rel=1e-5)
    _, lac_empty = center_losses(dn, da, torch.zeros(2, 6))
    assert float(lac_empty) == 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # distances stay fp32 under mixed precision
        torch.testing.assert_close(prototype_distances(tokens, normal), dn)


def test_center_loss_pools_the_mask_and_sums_both_terms():
    g = torch.Generator().manual_seed(1)
    dn, da = torch.rand(2, 4, 4, generator=g), torch.rand(2, 4, 4, generator=g)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, 0:3, 0:3] = 1.0  # covers patch (0, 0) of image 0 only
    text = TextFeatures(embeddings=torch.zeros(1, 2, 4), terms={"center_normal": dn, "center_anomaly": da})
    value = CenterLoss(weight=2.0)(None, {"mask": mask, "label": torch.tensor([1, 0])}, text)
    keep = torch.ones(2, 4, 4, dtype=torch.bool)
    keep[0, 0, 0] = False
    expected = float(dn[keep].mean()) + float(da[0, 0, 0])
    assert float(value) == pytest.approx(2.0 * expected, rel=1e-6)


# ---------------------------------------------------------------- ICTS
def test_kl_matches_the_literal_formula():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    expected = 0.0
    for b in range(3):
        expected += -0.5 * sum(
            1 + float(logvar[b, d]) - float(mean[b, d]) ** 2 - math.exp(float(logvar[b, d])) for d in range(4)
        )
    assert float(kl_divergence(mean, logvar)) == pytest.approx(expected / 3, rel=1e-6)


def test_cross_batch_reconstruction_reproduces_the_broadcasting_quirk():
    g = torch.Generator().manual_seed(0)
    decoded, target = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    official = (decoded.view(3, 1, 1, 4) - target).pow(2).sum(1).mean()  # [B,1,1,D] - [B,D] -> [B,1,B,D]
    loops = sum((float(decoded[i, d]) - float(target[j, d])) ** 2 for i in range(3) for j in range(3) for d in range(4))
    value = reconstruction_loss(decoded, target, "cross_batch_mse")
    assert float(value) == pytest.approx(float(official), rel=1e-6)
    assert float(value) == pytest.approx(loops / 36, rel=1e-6)
    at_mean = target.mean(0, keepdim=True).expand(3, -1).clone().requires_grad_(True)
    reconstruction_loss(at_mean, target, "cross_batch_mse").backward()
    assert float(at_mean.grad.abs().max()) < 1e-6  # minimised by the batch mean, not by each image


def test_per_sample_reconstruction_is_the_squared_l2():
    g = torch.Generator().manual_seed(0)
    decoded, target = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    expected = sum(float(((target[i] - decoded[i]) ** 2).sum()) for i in range(3)) / 3
    assert float(reconstruction_loss(decoded, target, "per_sample_l2")) == pytest.approx(expected, rel=1e-6)


def test_prior_samples_are_seeded_per_image():
    g = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    first, again = prior_latents(g, 4, 5, base_seed=0), prior_latents(g, 4, 5, base_seed=0)
    assert first.shape == (3, 4, 5) and torch.equal(first, again)
    assert not torch.equal(first, prior_latents(g, 4, 5, base_seed=1))
    assert torch.equal(first[1:2], prior_latents(g[1:2], 4, 5, base_seed=0))  # batch-mates do not matter
    assert torch.equal(first[[2, 0]], prior_latents(g[[2, 0]], 4, 5, base_seed=0))  # nor does the order
    assert not torch.equal(first[0], first[1])


# ---------------------------------------------------------------- synthesizer
def test_shapes_terms_and_prototypes(backbone, features):
    prompt = make_prompt(backbone).train()
    text = prompt(features, backbone.text)
    assert text.embeddings.shape == (3, 2, 32)
    torch.testing.assert_close(text.embeddings.norm(dim=-1), torch.ones(3, 2))
    assert text.prototypes.shape == (3, 12, 32) and not text.prototypes.requires_grad
    assert set(text.terms) == {"center_normal", "center_anomaly", "kl", "reconstruction"}
    assert text.terms["center_normal"].shape == (3, 8, 8) and text.terms["kl"].dim() == 0
    assert prompt.eval()(features, backbone.text).terms == {}  # training only


def test_cross_and_straight_injection(backbone, features):
    for cross in (True, False):
        prompt = make_prompt(backbone, cross_inject=cross).eval()
        seen = {}
        original = prompt.contexts

        def spy(state_offsets=None, class_offsets=None, seen=seen, original=original):
            seen["state"], seen["class"] = state_offsets, class_offsets
            return original(state_offsets, class_offsets)

        prompt.contexts = spy
        text = prompt(features, backbone.text)
        normal, anomaly = text.prototypes[:, :6], text.prototypes[:, 6:]
        pad = (0, backbone.text.width - 32)  # tiny: joint dim 32 padded to text width 64
        to_normal_prompt, to_anomaly_prompt = (anomaly, normal) if cross else (normal, anomaly)
        assert torch.equal(seen["state"][:, 0], torch.nn.functional.pad(to_normal_prompt, pad))
        assert torch.equal(seen["state"][:, 1], torch.nn.functional.pad(to_anomaly_prompt, pad))
        assert seen["class"].shape == (3, 10, 64)


def test_contexts_put_offsets_in_their_slots(backbone):
    prompt = make_prompt(backbone)
    g = torch.Generator().manual_seed(0)
    state, classes = torch.randn(2, 2, 6, 64, generator=g), torch.randn(2, 3, 64, generator=g)
    contexts = prompt.contexts(state, classes)
    assert contexts.shape == (2, 3, 2, 14, 64)
    ctx = prompt.context
    for b in range(2):
        for r in range(3):
            for p in range(2):
                torch.testing.assert_close(contexts[b, r, p, :6], ctx[p, :6])
                torch.testing.assert_close(contexts[b, r, p, 6:12], ctx[p, 6:12] + state[b, p])
                torch.testing.assert_close(contexts[b, r, p, 12:], ctx[p, 12:] + classes[b, r][None])
    assert prompt.contexts().shape == (1, 1, 2, 14, 64)


def test_test_embeddings_average_normalised_prior_samples(backbone, features):
    prompt = make_prompt(backbone, r_test=4).eval()
    perturb(prompt.vae, 0.05)
    text_encoder = backbone.text
    with torch.no_grad():
        text = prompt(features, text_encoder)
        tokens = average_neighbor(features.dense_tokens[-1], features.grid, 3)
        prototypes = prompt.ests(tokens)
        b = 1
        samples = prompt.vae.decode(prior_latents(features.global_embedding[b : b + 1], 4, 32, 0))[0]
        template = prompt.template_embeddings[0]
        per_sample = []
        for r in range(4):
            pair = []
            for p, injected in ((0, prototypes[b, 1]), (1, prototypes[b, 0])):  # crossed, as released
                learned = prompt.context[p].clone()
                learned[6:12] += torch.nn.functional.pad(injected, (0, 32))
                learned[12:] += torch.nn.functional.pad(samples[r], (0, 32))
                tokens_in = torch.cat([template[:1], learned, template[15:]])[None]
                out = text_encoder(tokens_in, prompt.eot, deep_prompts=prompt.deep_prompt_hook())
                pair.append(out[0] / out[0].norm())
            per_sample.append(torch.stack(pair))
        expected = torch.stack(per_sample).mean(0)
        expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(text.embeddings[b], expected, atol=1e-5, rtol=1e-5)


def test_seeded_test_sampling(backbone, features):
    prompt = make_prompt(backbone).eval()
    with torch.no_grad():
        first = prompt(features, backbone.text).embeddings
        assert torch.equal(first, prompt(features, backbone.text).embeddings)
        alone = prompt(replace(features, **_one(features, 2)), backbone.text)
        torch.testing.assert_close(alone.embeddings[0], first[2], atol=1e-6, rtol=1e-6)
        prompt.test_seed = 1
        assert not torch.allclose(first, prompt(features, backbone.text).embeddings)
        prompt.test_seed = None  # the global RNG, like the official code
        torch.manual_seed(5)
        unseeded = prompt(features, backbone.text).embeddings
        torch.manual_seed(5)
        assert torch.equal(unseeded, prompt(features, backbone.text).embeddings)


def _one(features, index):
    return {
        "global_embedding": features.global_embedding[index : index + 1],
        "patch_tokens": tuple(t[index : index + 1] for t in features.patch_tokens),
        "vv_tokens": tuple(t[index : index + 1] for t in features.vv_tokens),
    }


def test_ablation_flags_remove_parameters_and_terms(backbone, features):
    names = lambda prompt: {n.split(".")[0] for n, _ in prompt.named_parameters()}  # noqa: E731
    full = make_prompt(backbone)
    assert names(full) == {"context", "deep", "ests", "vae"} and full.image_conditioned
    no_ests = make_prompt(backbone, use_ests=False).train()
    text = no_ests(features, backbone.text)
    assert names(no_ests) == {"context", "deep", "vae"} and text.prototypes is None
    assert set(text.terms) == {"kl", "reconstruction"}
    no_icts = make_prompt(backbone, use_icts=False).train()
    assert names(no_icts) == {"context", "deep", "ests"}
    assert set(no_icts(features, backbone.text).terms) == {"center_normal", "center_anomaly"}
    no_rec = make_prompt(backbone, rec_loss=False).train()
    assert set(no_rec(features, backbone.text).terms) == {"center_normal", "center_anomaly", "kl"}
    static = make_prompt(backbone, use_ests=False, use_icts=False)
    assert names(static) == {"context", "deep"} and not static.image_conditioned
    assert static(features, backbone.text).embeddings.shape == (1, 2, 32)
    assert make_prompt(backbone, deep_layers=0).deep is None


def test_gradients_and_stop_gradient(backbone, features):
    prompt = make_prompt(backbone).train()
    text = prompt(features, backbone.text)
    (text.embeddings[:, 1] - text.embeddings[:, 0]).sum().backward()  # a text-only objective
    grads = {n: p.grad for n, p in prompt.named_parameters()}
    assert all(grads[n] is None for n in grads if n.startswith("ests."))  # prototypes are detached
    for name in ("context", "deep", "vae.decoder.2.weight", "vae.to_mean.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    prompt.zero_grad(set_to_none=True)
    text = prompt(features, backbone.text)
    (text.terms["center_normal"].mean() + text.terms["center_anomaly"].mean() + text.terms["kl"]).backward()
    for name, parameter in prompt.named_parameters():
        if name.startswith(("ests.", "vae.to_", "vae.encoder")):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_deep_prompts_are_rounded_to_fp16(backbone):
    prompt = make_prompt(backbone)
    with torch.no_grad():
        prompt.deep.add_(1e-4 / 3)
    tokens = torch.zeros(6, 20, backbone.text.width)
    spliced = prompt.deep_prompt_hook().before_layer(1, tokens)[:, 1:5]
    assert torch.equal(spliced, prompt.deep[0].detach().half().float().expand(6, -1, -1))
    prompt.round_deep_to_fp16 = False
    assert torch.equal(prompt.deep_prompt_hook().before_layer(1, tokens)[:, 1:5], prompt.deep[0].expand(6, -1, -1))


def test_deep_prompt_gradients_round_each_prompt_copy_as_the_official_code(backbone, features):
    """Training pass of 3 images (6 prompts): the official order rounds each prompt's copy (deep_prompts.py)."""
    prompt = make_prompt(backbone).train()
    perturb(prompt, 1e-3)  # deep prompts off fp16-representable values, so that rounding matters

    def embeddings_and_deep_gradient(order=None):
        if order is not None:
            prompt.deep_prompt_hook = lambda: ReferenceDeepPrompts(prompt.deep, order)  # this instance only
        prompt.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the VAE's posterior sample
        embeddings = prompt(features, backbone.text).embeddings
        weights = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(2))
        (1e3 * (embeddings * weights).sum()).backward()
        prompt.__dict__.pop("deep_prompt_hook", None)
        return embeddings.detach(), prompt.deep.grad.clone()

    ours, our_gradient = embeddings_and_deep_gradient()
    official, official_gradient = embeddings_and_deep_gradient("official")
    assert torch.equal(ours, official) and torch.equal(our_gradient, official_gradient)
    earlier, earlier_gradient = embeddings_and_deep_gradient("round_first")
    assert torch.equal(earlier, official) and not torch.equal(earlier_gradient, official_gradient)
    prompt.round_deep_to_fp16 = False
    unrounded, unrounded_gradient = embeddings_and_deep_gradient()
    exact, exact_gradient = embeddings_and_deep_gradient("none")
    assert torch.equal(unrounded, exact) and torch.equal(unrounded_gradient, exact_gradient)


def test_test_kernel_follows_the_dataset_only_at_evaluation(backbone, features):
    prompt = make_prompt(backbone, neighbor_kernel=3, test_neighbor_kernel="by_dataset").eval()
    with torch.no_grad():
        for dataset, kernel in (("visa", 3), ("mpdd", 5), (None, 5)):
            fixed = make_prompt(backbone, neighbor_kernel=kernel).eval()
            ours = prompt(replace(features, datasets=None if dataset is None else (dataset,) * 3), backbone.text)
            theirs = fixed(features, backbone.text)
            torch.testing.assert_close(ours.prototypes, theirs.prototypes, rtol=0, atol=0)
            torch.testing.assert_close(ours.embeddings, theirs.embeddings, rtol=0, atol=0)
    assert prompt.active_kernel("visa") == 3 and prompt.train().active_kernel("mpdd") == 3  # training: its own K
    assert make_prompt(backbone, test_neighbor_kernel=7).eval().active_kernel("visa") == 7
    assert make_prompt(backbone, neighbor_kernel=5).eval().active_kernel("visa") == 5  # null: the training K
    assert prompt.eval().reads_dataset and not prompt.train().reads_dataset
    with pytest.raises(ConfigError, match="test_neighbor_kernel=4 must be an odd"):
        CoPSPrompt(test_neighbor_kernel=4)
    with pytest.raises(ConfigError, match=r"test_neighbor_kernel=by-dataset must be an odd .*, or by_dataset\."):
        CoPSPrompt(test_neighbor_kernel="by-dataset")


def test_bad_options_and_missing_terms(backbone):
    with pytest.raises(ConfigError, match="rec_mode='l1' is unknown"):
        CoPSPrompt(rec_mode="l1")
    with pytest.raises(ConfigError, match="neighbor_kernel=4 must be an odd"):
        CoPSPrompt(neighbor_kernel=4)
    with pytest.raises(ConfigError, match="r_test=0"):
        CoPSPrompt(r_test=0)
    with pytest.raises(ConfigError, match="deep_length=7"):
        CoPSPrompt(deep_length=7)
    with pytest.raises(ConfigError, match=r"deep_layers=12 needs text layers 2\.\.13"):
        make_prompt(backbone, deep_layers=12)
    text = TextFeatures(embeddings=torch.zeros(1, 2, 4), terms={"kl": torch.tensor(1.0)})
    with pytest.raises(ConfigError, match="'reconstruction' loss needs the term 'reconstruction'"):
        ReconstructionLoss()(None, {}, text)
    with pytest.raises(ConfigError, match="use_ests: false"):
        CenterLoss()(None, {"mask": torch.zeros(1, 1, 8, 8)}, text)
    assert float(KLLoss(weight=3.0)(None, {}, text)) == 3.0


def test_registry_names_resolve():
    assert PROMPTS.get("cops") is CoPSPrompt
    assert HEADS.get("saga") is zsad.heads.saga.SAGAHead
    assert (LOSSES.get("center"), LOSSES.get("kl"), LOSSES.get("reconstruction")) == (
        CenterLoss,
        KLLoss,
        ReconstructionLoss,
    )


# ---------------------------------------------------------------- module and configs
def module_from_config(name):
    model = yaml.safe_load((CONFIGS / name).read_text())["model"]
    backbone = TinyRandomBackbone(**model["backbone"]["init_args"])
    return ZSADModule(backbone, build(model["prompt"]), build(model["head"]), losses=build(model["losses"]))


def test_module_from_the_config_trains_and_tests(images):
    L.seed_everything(0)
    module = module_from_config("method/cops.yaml")
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 10:30, 10:30] = 1
    batch = {"image": images, "mask": masks, "label": torch.tensor([1, 0]), "category": ["a", "a"]}
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["betas"] == (0.5, 0.999) and optimizer.defaults["lr"] == 1e-3
    losses = train_on_batch(module, optimizer, batch, steps=8)
    assert losses[-1] < losses[0] - 0.1
    module.eval()
    with torch.no_grad():
        module.test_step(batch, 0)
    assert module.evaluator.images.scores  # scored and recorded


@pytest.mark.parametrize("name", COPS_CONFIGS)
def test_configs_build(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(CONFIGS / "backbone/tiny.yaml"), "-c", str(CONFIGS / name)]
    args += ["-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "trainer/smoke.yaml"), "--print_config"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert not exit_.value.code
    out = capsys.readouterr().out
    assert "CoPSPrompt" in out and "vv_start_layer: 1" in out and "global_ln_post: false" in out


def test_cli_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ["backbone/tiny.yaml", "method/cops.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    args = [a for c in configs for a in ("-c", str(CONFIGS / c))] + ["--trainer.enable_progress_bar=false"]
    main(["fit", *args, "--trainer.max_steps=2"])
    checkpoint = torch.load(tmp_path / "runs" / "smoke" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["head"]["init_args"]["preset"] == "by_dataset"
    assert any(key.startswith("prompt.vae.encoder") for key in checkpoint["state_dict"])
