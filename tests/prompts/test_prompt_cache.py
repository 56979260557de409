"""Image-independent prompts are encoded once per evaluation and never reused when they could have changed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from text_passes import recorded_text_passes

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.heads import DualBranchHead
from zsad.losses import ImageCrossEntropy
from zsad.prompts import CoPSPrompt, DAPOPrompt, StaticPrompt, ViPPrompt, WinCLIPPrompt

WINCLIP_SMALL = {"normal_states": ("{}",), "anomalous_states": ("damaged {}",), "templates": ("a photo of a {}.",)}

IMAGE_INDEPENDENT = {
    "static": lambda: StaticPrompt(n_ctx=4),
    "dapo": lambda: DAPOPrompt(vocabulary=["scratch", "hole"], prompt_count=2, vision_deep_layers=0),
    "winclip": lambda: WinCLIPPrompt(**WINCLIP_SMALL),
    "vip_without_ica_and_fgp": lambda: ViPPrompt(n_ctx=4, use_ica=False, use_fgp=False),
    "cops_without_ests_and_icts": lambda: CoPSPrompt(use_ests=False, use_icts=False),
}


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(layers=(6, 12, 18, 24), global_ln_post=False)


@pytest.fixture(scope="module")
def features(backbone):
    with torch.no_grad():
        found = backbone(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    return replace(found, class_names=("bottle", "bottle"))


@pytest.fixture(scope="module")
def other_features(backbone):
    with torch.no_grad():
        found = backbone(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return replace(found, class_names=("bottle", "bottle"))


def built(name, backbone):
    torch.manual_seed(0)
    prompt = IMAGE_INDEPENDENT[name]()
    prompt.setup_backbone(backbone)
    prompt.setup(backbone.text)
    return prompt.eval()


@pytest.mark.parametrize("name", list(IMAGE_INDEPENDENT))
def test_encoded_once_per_evaluation_and_equal_to_the_uncached_output(name, backbone, features, other_features):
    prompt = built(name, backbone)
    assert not prompt.image_conditioned
    with torch.inference_mode():
        with recorded_text_passes(backbone.text) as passes:
            first = prompt.synthesize(features, backbone.text)
            calls_for_first_batch = len(passes)
            second = prompt.synthesize(other_features, backbone.text)
            third = prompt.synthesize(features, backbone.text)
        uncached = built(name, backbone)(other_features, backbone.text)  # a fresh twin: nothing cached anywhere
    assert calls_for_first_batch >= 1 and len(passes) == calls_for_first_batch  # later batches encoded nothing
    for reused in (second, third):
        assert torch.equal(reused.embeddings, uncached.embeddings)
        assert reused.class_names == uncached.class_names
    assert torch.equal(first.embeddings, uncached.embeddings)


def test_not_reused_while_gradients_are_on(backbone, features):
    """In eval mode with autograd on (e.g. attribution maps), each call builds its own graph."""
    prompt = built("static", backbone)
    with recorded_text_passes(backbone.text) as passes:
        first = prompt.synthesize(features, backbone.text)
        prompt.synthesize(features, backbone.text)
    assert len(passes) == 2 and first.embeddings.requires_grad


def test_not_reused_in_training_mode_even_without_gradients(backbone, features):
    prompt = built("static", backbone).train()
    with torch.no_grad(), recorded_text_passes(backbone.text) as passes:
        prompt.synthesize(features, backbone.text)
        prompt.synthesize(features, backbone.text)
    assert len(passes) == 2


def test_an_optimizer_step_invalidates_without_a_mode_switch(backbone, features):
    prompt = built("static", backbone)
    with torch.no_grad():
        before = prompt.synthesize(features, backbone.text).embeddings
    optimizer = torch.optim.Adam(prompt.parameters(), lr=0.1)
    prompt(features, backbone.text).embeddings[..., 1, :].sum().backward()  # eval mode kept on purpose
    optimizer.step()
    with torch.no_grad(), recorded_text_passes(backbone.text) as passes:
        after = prompt.synthesize(features, backbone.text).embeddings
        fresh = prompt(features, backbone.text).embeddings
    assert len(passes) == 2  # the cached pair was stale, so it was encoded again (plus the uncached reference)
    assert torch.equal(after, fresh) and not torch.equal(after, before)


@pytest.mark.parametrize("change", ["load_state_dict", "in_place_edit", "mode_switch", "cast"])
def test_changed_parameters_or_mode_switches_invalidate(change, backbone, features):
    prompt = built("static", backbone)
    with torch.no_grad():
        prompt.synthesize(features, backbone.text)
        if change == "load_state_dict":
            prompt.load_state_dict({k: v + 1 for k, v in prompt.state_dict().items()})
        elif change == "in_place_edit":
            prompt.context.mul_(2)
        elif change == "mode_switch":
            prompt.train().eval()
        else:
            prompt.double().float()
        with recorded_text_passes(backbone.text) as passes:
            reused = prompt.synthesize(features, backbone.text).embeddings
        assert len(passes) == 1
        torch.testing.assert_close(reused, prompt(features, backbone.text).embeddings, rtol=0, atol=0)


def test_winclip_keeps_one_entry_per_tuple_of_object_names(backbone, features):
    prompt = built("winclip", backbone)
    screws = replace(features, class_names=("screw", "bottle"))
    with torch.no_grad():
        bottles = prompt.synthesize(features, backbone.text).embeddings
        mixed = prompt.synthesize(screws, backbone.text).embeddings
        again = prompt.synthesize(features, backbone.text).embeddings
    assert torch.equal(bottles, again) and torch.equal(mixed[1], bottles[1]) and not torch.equal(mixed[0], bottles[0])
    assert torch.equal(mixed, prompt(screws, backbone.text).embeddings)


def test_the_module_encodes_static_prompts_once_per_evaluation(backbone, features):
    model = ZSADModule(backbone, built("static", backbone), DualBranchHead(), losses=[ImageCrossEntropy()])
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.inference_mode(), recorded_text_passes(backbone.text) as passes:
        first = model(images)
        second = model(images.flip(-1))
        assert len(passes) == 1
        uncached = model.head(
            model.extract_features({"image": images}), model.prompt(features, backbone.text), (64, 64)
        )
    torch.testing.assert_close(first.anomaly_map, uncached.anomaly_map, rtol=0, atol=0)
    torch.testing.assert_close(first.image_score, uncached.image_score, rtol=0, atol=0)
    assert not torch.equal(first.anomaly_map, second.anomaly_map)
