"""AnomalyCLIP's static prompts: the deep prompts' fp16 rounding, values and gradients (methods.md §3, §2.5).

The reference order of the official code is described in ``deep_prompts.py``.
"""

from __future__ import annotations

import pytest
import torch
from deep_prompts import ReferenceDeepPrompts
from torch import Tensor

from zsad.backbones import TinyRandomBackbone
from zsad.prompts.static import StaticPrompt


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(vv_start_layer=6)


def make_prompt(backbone, **kwargs) -> StaticPrompt:
    torch.manual_seed(0)
    prompt = StaticPrompt(**kwargs)
    prompt.setup(backbone.text)
    with torch.no_grad():  # move the deep prompts off fp16-representable values, so that rounding matters
        prompt.deep.add_(torch.randn(prompt.deep.shape, generator=torch.Generator().manual_seed(1)) * 1e-3)
    return prompt


def embeddings_and_deep_gradient(prompt: StaticPrompt, text, hook=None) -> tuple[Tensor, Tensor]:
    """Text embeddings and the gradient of a fixed random objective on them w.r.t. the deep prompts."""
    if hook is not None:
        prompt.deep_prompt_hook = lambda: hook  # this instance only
    prompt.deep.grad = None
    embeddings = prompt(None, text).embeddings
    weights = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(2))
    (1e3 * (embeddings * weights).sum()).backward()
    if hook is not None:
        del prompt.deep_prompt_hook
    return embeddings.detach(), prompt.deep.grad.clone()


def test_deep_prompt_gradients_round_each_prompt_copy_as_the_official_code(backbone):
    prompt = make_prompt(backbone)
    assert prompt.round_deep_to_fp16 and prompt.deep.shape == (8, 4, backbone.text.width)
    ours, our_gradient = embeddings_and_deep_gradient(prompt, backbone.text)
    official, official_gradient = embeddings_and_deep_gradient(
        prompt, backbone.text, ReferenceDeepPrompts(prompt.deep, "official")
    )
    assert torch.equal(ours, official)
    assert torch.equal(our_gradient, official_gradient)
    # the test can tell the orders apart: rounding first gives the same values but another gradient
    earlier, earlier_gradient = embeddings_and_deep_gradient(
        prompt, backbone.text, ReferenceDeepPrompts(prompt.deep, "round_first")
    )
    assert torch.equal(earlier, official)
    assert not torch.equal(earlier_gradient, official_gradient)


def test_unrounded_deep_prompts_keep_full_precision(backbone):
    prompt = make_prompt(backbone, round_deep_to_fp16=False)
    ours, our_gradient = embeddings_and_deep_gradient(prompt, backbone.text)
    exact, exact_gradient = embeddings_and_deep_gradient(
        prompt, backbone.text, ReferenceDeepPrompts(prompt.deep, "none")
    )
    assert torch.equal(ours, exact) and torch.equal(our_gradient, exact_gradient)
    rounded = make_prompt(backbone)
    assert not torch.equal(rounded(None, backbone.text).embeddings.detach(), ours)  # rounding changes the values


def test_hook_splices_rounded_copies_of_the_shared_deep_prompts(backbone):
    prompt = make_prompt(backbone)
    tokens = torch.zeros(3, 10, backbone.text.width)
    spliced = prompt.deep_prompt_hook().before_layer(1, tokens)
    expected = prompt.deep[0].detach().half().float().expand(3, -1, -1)
    assert torch.equal(spliced[:, 1:5], expected) and torch.equal(spliced[:, 5:], tokens[:, 5:])
    prompt.round_deep_to_fp16 = False
    assert torch.equal(prompt.deep_prompt_hook().before_layer(1, tokens)[:, 1:5], prompt.deep[0].expand(3, -1, -1))
