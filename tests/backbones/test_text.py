"""The text tower driven by embeddings: truncation is exact, hooks act where they should."""

from __future__ import annotations

import pytest
import torch

from zsad.backbones import InsertDeepPrompts, OverwriteDeepPrompts, create_clip


@pytest.fixture(scope="module")
def text(tiny_backbone):
    return tiny_backbone.text


@pytest.fixture(scope="module")
def prompts(text):
    ids = text.tokenize(["X X X X X X a photo of a damaged bottle.", "X X X X good object", "flawless"])
    with torch.no_grad():
        embeddings = text.embed_tokens(ids)
    return embeddings, text.eot_positions(ids)


def test_plain_sentences_match_open_clip_encode_text(text):
    model = create_clip("zsad-tiny", None)
    model.load_state_dict({**model.state_dict(), **_text_state(text)})
    sentences = ["a photo of a flawless bottle.", "a photo of a damaged bottle."]
    with torch.no_grad():
        ours = text.encode_text(sentences)
        reference = model.encode_text(text.tokenize(sentences), normalize=True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def _text_state(text):
    state = {
        "token_embedding.weight": text.token_embedding.weight,
        "positional_embedding": text.positional_embedding,
        "ln_final.weight": text.ln_final.weight,
        "ln_final.bias": text.ln_final.bias,
        "text_projection": text.text_projection,
    }
    state.update({f"transformer.{k}": v for k, v in text.transformer.state_dict().items()})
    return state


def _hooks(text):
    generator = torch.Generator().manual_seed(0)
    deep = [torch.randn(4, text.width, generator=generator) for _ in range(8)]
    return {
        "none": lambda: None,
        "overwrite": lambda: OverwriteDeepPrompts(deep, first_layer=1, position=1),
        "insert": lambda: InsertDeepPrompts(deep, position=1, blend=0.01),
    }


@pytest.mark.parametrize("hook", ["none", "overwrite", "insert"])
def test_truncated_encoding_equals_full_length(text, prompts, hook):
    embeddings, eot = prompts
    make_hook = _hooks(text)[hook]
    with torch.no_grad():
        truncated = text(embeddings, eot, deep_prompts=make_hook(), truncate=True)
        full = text(embeddings, eot, deep_prompts=make_hook(), truncate=False)
    assert int(eot.max()) + 1 < embeddings.shape[1]  # the cut really happens
    torch.testing.assert_close(truncated, full, atol=1e-6, rtol=1e-6)


def test_without_causal_mask_padding_matters_and_truncation_is_off(text, prompts):
    embeddings, eot = prompts
    with torch.no_grad():
        causal = text(embeddings, eot)
        bidirectional = text(embeddings, eot, causal=False, truncate=True)
        bidirectional_full = text(embeddings, eot, causal=False, truncate=False)
    assert not torch.allclose(causal, bidirectional)
    torch.testing.assert_close(bidirectional, bidirectional_full)


def test_overwrite_hook_replaces_positions_only_in_its_layers(text):
    tokens = torch.zeros(2, 10, text.width)
    learned = [torch.ones(3, text.width), 2 * torch.ones(3, text.width)]
    hook = OverwriteDeepPrompts(learned, first_layer=1, position=1)
    assert torch.equal(hook.before_layer(0, tokens), tokens)
    out = hook.before_layer(2, tokens)
    assert out.shape == tokens.shape
    assert torch.all(out[:, 1:4] == 2) and torch.all(out[:, 0] == 0) and torch.all(out[:, 4:] == 0)
    assert torch.equal(hook.before_layer(3, tokens), tokens)


def test_insert_hook_grows_the_sequence_then_blends(text):
    tokens = torch.zeros(1, 5, text.width)
    learned = [torch.ones(2, text.width), 3 * torch.ones(2, text.width)]
    hook = InsertDeepPrompts(learned, position=1, blend=0.25)
    grown = hook.before_layer(0, tokens)
    assert grown.shape == (1, 7, text.width) and hook.inserted_tokens == 2
    assert torch.all(grown[:, 1:3] == 1)
    blended = hook.before_layer(1, grown)
    torch.testing.assert_close(blended[:, 1:3], torch.full((1, 2, text.width), 0.25 * 1 + 0.75 * 3))


def test_gradients_reach_the_prompt_embeddings(text, prompts):
    embeddings, eot = prompts
    embeddings = embeddings.clone().requires_grad_(True)
    text(embeddings, eot).sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in text.parameters())
