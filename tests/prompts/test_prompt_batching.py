"""Image-conditioned prompts cost one batched text pass per batch, cut to the longest prompt (issue 7, item 2)."""

from __future__ import annotations

import pytest
import torch
from text_passes import recorded_text_passes

from zsad.backbones import TinyRandomBackbone
from zsad.prompts.cops import CoPSPrompt
from zsad.prompts.vip import ViPPrompt

BATCH = 3


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(layers=(6, 12, 18, 24), vv_start_layer=1, global_ln_post=False)


@pytest.fixture(scope="module")
def features(backbone):
    with torch.no_grad():
        return backbone(torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(0)))


def built(prompt, backbone):
    torch.manual_seed(0)
    prompt.setup(backbone.text)
    return prompt.eval()


@pytest.mark.parametrize("samples", [1, 10])
def test_cops_sends_every_image_sample_and_state_through_one_truncated_pass(backbone, features, samples):
    prompt = built(CoPSPrompt(r_test=samples), backbone)
    with torch.no_grad(), recorded_text_passes(backbone.text) as passes:
        result = prompt.synthesize(features, backbone.text)
    # [SOS] 14 learnable tokens "." [EOT]: 17 tokens, not the 77 of CLIP's context
    assert [(p.prompts, p.tokens) for p in passes] == [(BATCH * samples * 2, int(prompt.eot.max()) + 1)]
    assert int(prompt.eot.max()) + 1 == 17
    assert result.embeddings.shape == (BATCH, 2, 32)


def test_cops_in_training_also_uses_one_pass(backbone, features):
    prompt = built(CoPSPrompt(), backbone).train()
    with recorded_text_passes(backbone.text) as passes:
        prompt.synthesize(features, backbone.text)
    assert [(p.prompts, p.tokens) for p in passes] == [(BATCH * 2, 17)]


def test_vip_sends_both_states_of_every_image_through_one_truncated_pass(backbone, features):
    prompt = built(ViPPrompt(n_ctx=7), backbone)
    with torch.no_grad(), recorded_text_passes(backbone.text) as passes:
        prompt.synthesize(features, backbone.text)
    # [SOS] 7 context, "damaged", 3 class tokens, [EOT]: 13 tokens
    assert [(p.prompts, p.tokens) for p in passes] == [(BATCH * 2, 13)]


def test_image_conditioned_prompts_are_never_reused(backbone, features):
    """Their embeddings differ per image, so every batch encodes its own (no cache between batches)."""
    prompt = built(CoPSPrompt(r_test=2), backbone)
    with torch.no_grad(), recorded_text_passes(backbone.text) as passes:
        first = prompt.synthesize(features, backbone.text).embeddings
        second = prompt.synthesize(features, backbone.text).embeddings
    assert len(passes) == 2 and torch.equal(first, second)
