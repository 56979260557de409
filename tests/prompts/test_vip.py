"""ViP2-CLIP prompts (ICA + FGP) against literal formulas; batching, ablation flags, FGP learning rate, CLI run."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L  # noqa: N812
import pytest
import torch
import yaml

from training_steps import train_on_batch
from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.cli import main
from zsad.errors import ConfigError
from zsad.heads.topk import TopKHead
from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.prompts.vip import ViPPrompt
from zsad.registry import PROMPTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(layers=(6, 12, 18, 24), global_ln_post=False)


@pytest.fixture(scope="module")
def features(backbone):
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return backbone(images)


def make_prompt(text, seed=0, **options):
    torch.manual_seed(seed)
    prompt = ViPPrompt(n_ctx=options.pop("n_ctx", 7), **options)
    prompt.setup(text)
    return prompt


class CountingText:
    """Wraps a text encoder and records every call."""

    def __init__(self, text):
        self.text = text
        self.calls = []

    def __call__(self, prompts, eot, **kwargs):
        self.calls.append((prompts.shape, eot.clone(), kwargs))
        return self.text(prompts, eot, **kwargs)


def word_embedding(text, word):
    ids = text.tokenize([word])
    return text.embed_tokens(ids)[0, 1]


def literal_meta_net(prompt, g):
    """c_k = c_k^learn + W2 relu(W1 (normalize(g) + bias) + b1) + b2, written out."""
    x = g / g.norm() + prompt.meta_bias
    tokens = []
    for k, net in enumerate(prompt.meta_nets):
        hidden = torch.clamp(net[0].weight @ x + net[0].bias, min=0)
        tokens.append(prompt.class_tokens[k] + net[2].weight @ hidden + net[2].bias)
    return torch.stack(tokens)


def literal_fgp(fgp, text, patches, heads=8, scale=1.0):
    """Per-head attention from the text pair to the patches, written out with explicit loops."""
    q, k, v = fgp.query(text), fgp.key(patches), fgp.value(patches)
    d = text.shape[-1] // heads
    outs = []
    for c in range(text.shape[0]):
        per_head = []
        for h in range(heads):
            qh, kh, vh = q[c, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d], v[:, h * d : (h + 1) * d]
            logits = torch.stack([qh @ kh[n] for n in range(patches.shape[0])]) * scale
            per_head.append(torch.softmax(logits, 0) @ vh)
        outs.append(fgp.output(torch.cat(per_head)))
    out = torch.stack(outs)
    return out / out.norm(dim=-1, keepdim=True)


def test_registered_and_shapes(backbone, features):
    assert PROMPTS.get("vip") is ViPPrompt
    prompt = make_prompt(backbone.text)
    assert prompt.image_conditioned
    result = prompt(features, backbone.text)
    assert result.embeddings.shape == (3, 2, 32)
    assert len(result.per_layer) == 4 and all(e.shape == (3, 2, 32) for e in result.per_layer)
    for tensor in (result.embeddings, *result.per_layer):
        torch.testing.assert_close(tensor.norm(dim=-1), torch.ones(3, 2))


def test_meta_net_conditioning_and_shared_class_tokens(backbone, features):
    prompt = make_prompt(backbone.text)
    class_tokens = prompt.class_token_batch(features)
    prompts, eot = prompt.prompt_embeddings(class_tokens)
    n = 7
    assert prompts.shape[0] == 6 and eot.tolist() == [12] * 6  # SOS + 7 ctx + word + 3 class tokens -> EOT 12
    for b in range(3):
        expected = literal_meta_net(prompt, features.global_embedding[b])
        torch.testing.assert_close(class_tokens[b], expected, atol=1e-6, rtol=1e-5)
        normal, anomaly = prompts[b], prompts[3 + b]
        torch.testing.assert_close(normal[1 : 1 + n], prompt.context[0])
        torch.testing.assert_close(anomaly[1 : 1 + n], prompt.context[1])
        torch.testing.assert_close(normal[n + 2 : n + 5], expected, atol=1e-6, rtol=1e-5)  # shared class tokens
        torch.testing.assert_close(anomaly[n + 2 : n + 5], expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(class_tokens[0], class_tokens[1])  # image-conditioned


@pytest.mark.parametrize("quirk", [True, False])
def test_damaged_template_quirk(backbone, quirk):
    text = backbone.text
    prompt = make_prompt(text, anomaly_template_for_both=quirk)
    prompts, _ = prompt.prompt_embeddings(prompt.class_tokens.unsqueeze(0))
    damaged, good = word_embedding(text, "damaged"), word_embedding(text, "good")
    torch.testing.assert_close(prompts[1, 8], damaged)
    torch.testing.assert_close(prompts[0, 8], damaged if quirk else good)
    # Everything but the learnable contexts is identical under the quirk.
    fixed = [0, *range(8, prompts.shape[1])]
    assert torch.equal(prompts[0, fixed], prompts[1, fixed]) is quirk


def test_multi_token_state_word_without_quirk(backbone):
    prompt = make_prompt(backbone.text, normal_word="flawless and perfect", anomaly_template_for_both=False)
    assert prompt.word_lengths[0] > 1 and prompt.word_lengths[1] == 1
    prompts, eot = prompt.prompt_embeddings(prompt.class_tokens.unsqueeze(0))
    assert eot[0] == 1 + 7 + prompt.word_lengths[0] + 3
    torch.testing.assert_close(prompts[0, eot[0] - 3 : eot[0]], prompt.class_tokens)


def test_one_batched_text_pass_equals_separate_full_length_passes(backbone, features):
    prompt = make_prompt(backbone.text)
    counting = CountingText(backbone.text)
    result = prompt(features, counting)
    assert len(counting.calls) == 1
    shape, _, kwargs = counting.calls[0]
    assert shape[0] == 6 and kwargs.get("truncate", True)
    prompts, eots = prompt.prompt_embeddings(prompt.class_token_batch(features))
    for b in range(3):
        for state in range(2):
            i = state * 3 + b
            alone = backbone.text(prompts[i : i + 1], eots[i : i + 1], truncate=False)[0]
            torch.testing.assert_close(result.embeddings[b, state], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scaled", [False, True])
def test_fgp_is_unscaled_multi_head_cross_attention(backbone, features, scaled):
    prompt = make_prompt(backbone.text, fgp_scaled=scaled)
    result = prompt(features, backbone.text)
    scale = 1.0 / math.sqrt(32 / 8) if scaled else 1.0
    for layer, tokens in enumerate(features.patch_tokens):
        for b in range(3):
            keys = tokens[b] / tokens[b].norm(dim=-1, keepdim=True)
            expected = literal_fgp(prompt.fgp, result.embeddings[b], keys, scale=scale)
            torch.testing.assert_close(result.per_layer[layer][b], expected, atol=1e-5, rtol=1e-5)


def test_ablation_flags(backbone, features):
    no_ica = make_prompt(backbone.text, use_ica=False)
    assert not hasattr(no_ica, "meta_nets") and no_ica.image_conditioned
    counting = CountingText(backbone.text)
    result = no_ica(features, counting)
    assert counting.calls[0][0][0] == 2  # static class tokens: 2 prompts for the whole batch
    assert result.embeddings.shape == (1, 2, 32) and result.per_layer[0].shape == (3, 2, 32)
    no_fgp = make_prompt(backbone.text, use_fgp=False)
    assert not hasattr(no_fgp, "fgp") and no_fgp(features, backbone.text).per_layer is None
    static = make_prompt(backbone.text, use_ica=False, use_fgp=False)
    assert not static.image_conditioned


def test_parameter_count_formula(backbone):
    prompt = make_prompt(backbone.text)
    width, dim, hidden = 64, 32, 16
    expected = 2 * 7 * width + 3 * width + 3 * (dim * hidden + hidden + hidden * width + width) + dim
    expected += 4 * (dim * dim + dim)
    assert sum(p.numel() for p in prompt.parameters()) == expected


def test_bad_options(backbone):
    with pytest.raises(ConfigError, match="n_ctx=0 must be at least 1"):
        ViPPrompt(n_ctx=0)
    with pytest.raises(ConfigError, match="fgp_heads=5 must divide the embedding width 32"):
        ViPPrompt(fgp_heads=5).setup(backbone.text)
    with pytest.raises(ConfigError, match="do not fit the text encoder's 77 tokens"):
        ViPPrompt(n_ctx=80).setup(backbone.text)


def make_module(backbone, lr=1e-3, **options):
    torch.manual_seed(0)
    return ZSADModule(
        backbone=backbone,
        prompt=ViPPrompt(n_ctx=7, **options),
        head=TopKHead(k=50),
        losses=[ImageCrossEntropy(), FocalLoss(), DiceLoss()],
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
    )


def batch_of(images):
    masks = torch.zeros(images.shape[0], 1, 64, 64)
    masks[0, :, 8:40, 16:48] = 1
    return {"image": images, "mask": masks, "label": torch.tensor([1, 0]), "category": ["ring", "ring"]}


def test_fgp_learning_rate_scale_reaches_the_optimizer(backbone):
    module = make_module(backbone)
    optimizer = module.configure_optimizers()
    fgp_ids = {id(p) for p in module.prompt.fgp.parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[id(parameter)] = group["lr"]
    assert len(rates) == sum(1 for p in module.parameters() if p.requires_grad)
    assert all(rates[i] == pytest.approx(1e-5) for i in fgp_ids)
    assert all(rate == pytest.approx(1e-3) for i, rate in rates.items() if i not in fgp_ids)


def test_gradients_reach_every_parameter_and_training_lowers_the_loss(backbone, images):
    L.seed_everything(0)
    module = make_module(backbone, lr=1e-2, fgp_lr_scale=1.0)  # a larger rate: the tiny random CLIP learns slowly
    optimizer = module.configure_optimizers()
    losses = train_on_batch(module, optimizer, batch_of(images), steps=8, check_gradients=True)
    assert losses[-1] < losses[0] - 0.3


def test_module_from_the_reproduction_config_trains_and_tests(backbone, images):
    model = yaml.safe_load((ROOT / "configs" / "method" / "vip.yaml").read_text())["model"]
    optimizer = model["optimizer"]["init_args"]
    module = ZSADModule(
        backbone=backbone,
        prompt=model["prompt"],
        head=model["head"],
        losses=model["losses"],
        optimizer=lambda params: torch.optim.Adam(params, lr=optimizer["lr"], betas=tuple(optimizer["betas"])),
    )
    assert module.prompt.n_ctx == 7 and module.head.k == 50 and module.head.sigma == 8.0
    assert [loss.weight for loss in module.losses] == [1.0, 1.0, 1.0]
    assert module.configure_optimizers().defaults["betas"] == (0.9, 0.999)
    batch = batch_of(images)
    module.training_step(batch, 0).backward()
    module.eval()
    with torch.no_grad():
        module.evaluator.reset(None)
        module.test_step(batch, 0)
        assert module(images).anomaly_map.shape == (2, 64, 64)


def run_cli(args):
    """Exit code of an in-process CLI run (``--print_config`` exits with 0)."""
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def test_reproduction_config_fits_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ["backbone/tiny.yaml", "method/vip.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    args = [arg for c in configs for arg in ("-c", str(ROOT / "configs" / c))]
    small = ["--data.init_args.aux_categories=[stripes]", "--data.init_args.target_categories=[ring]"]
    for extra in (["--print_config"], ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false"]):
        assert run_cli(["fit", *args, *small, *extra]) == 0, capsys.readouterr()
    captured = capsys.readouterr()
    assert "class_path: zsad.prompts.vip.ViPPrompt" in captured.out and "n_ctx: 7" in captured.out
    assert (tmp_path / "runs" / "smoke" / "last.ckpt").is_file(), captured.err
