"""WinCLIP's compositional prompt ensemble: sentence lists, averaging against a literal formula, caching."""

from __future__ import annotations

import pytest
import torch

from zsad.errors import ConfigError
from zsad.prompts.winclip import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, WinCLIPPrompt
from zsad.registry import PROMPTS
from zsad.structures import Features


@pytest.fixture(scope="module")
def text():
    from zsad.backbones import TinyRandomBackbone

    return TinyRandomBackbone(layers=(24,)).text


def features_named(names, batch=None):
    batch = batch or len(names or ())
    return Features(
        global_embedding=torch.zeros(batch, 32),
        patch_tokens=(torch.zeros(batch, 64, 32),),
        layers=(24,),
        grid=(8, 8),
        class_names=names,
    )


SMALL = {
    "normal_states": ("{}", "flawless {}"),
    "anomalous_states": ("damaged {}",),
    "templates": ("a photo of a {}.", "a photo of the {}.", "a photo of a {}."),  # a repeat counts double
}


def literal_ensemble(text, name, normalize_each, normal_states, anomalous_states, templates):
    """methods.md §8 written out: each sentence encoded alone, averaged per state group, then normalised."""
    groups = []
    for states in (normal_states, anomalous_states):
        sentences = [template.format(state.format(name)) for state in states for template in templates]
        embeddings = torch.cat([text.encode_text([s], normalize=normalize_each) for s in sentences])
        groups.append(embeddings.mean(0))
    return torch.nn.functional.normalize(torch.stack(groups), dim=-1)


def test_the_ensemble_has_winclips_states_and_templates():
    normal, anomalous = WinCLIPPrompt().prompts("bottle")
    assert (len(NORMAL_STATES), len(ANOMALOUS_STATES), len(TEMPLATES)) == (7, 4, 21)
    assert len(normal) == 7 * 21 and len(anomalous) == 4 * 21
    assert normal[0] == "a cropped photo of the bottle."
    assert "a photo of a flawless bottle for visual inspection." in normal
    assert "a photo of the bottle without defect for anomaly detection." in normal
    assert anomalous[21] == "a cropped photo of the bottle with flaw."
    assert normal.count("a jpeg corrupted photo of the bottle.") == 2  # anomalib's duplicate counts double
    deduplicated, _ = WinCLIPPrompt(deduplicate_templates=True).prompts("bottle")
    assert len(deduplicated) == 7 * 20 and deduplicated.count("a jpeg corrupted photo of the bottle.") == 1


@pytest.mark.parametrize("normalize_each", [False, True])
def test_embeddings_are_the_normalised_mean_of_each_state_group(text, normalize_each):
    prompt = WinCLIPPrompt(normalize_each_prompt=normalize_each, **SMALL)
    prompt.setup(text)
    result = prompt(features_named(("metal nut", "screw")), text)
    assert result.embeddings.shape == (2, 2, 32) and result.class_names == ("normal", "anomaly")
    torch.testing.assert_close(result.embeddings[0], literal_ensemble(text, "metal nut", normalize_each, **SMALL))
    torch.testing.assert_close(result.embeddings[1], literal_ensemble(text, "screw", normalize_each, **SMALL))
    torch.testing.assert_close(result.embeddings.norm(dim=-1), torch.ones(2, 2))


def test_raw_and_normalised_averaging_differ(text):
    raw = literal_ensemble(text, "object", False, **SMALL)
    assert not torch.allclose(raw, literal_ensemble(text, "object", True, **SMALL), atol=1e-6)


def test_each_name_is_encoded_once_and_cached(text, monkeypatch):
    prompt = WinCLIPPrompt()
    prompt.setup(text)
    calls = []
    original = text.encode_text
    monkeypatch.setattr(
        text, "encode_text", lambda sentences, **kw: calls.append(len(sentences)) or original(sentences, **kw)
    )
    first = prompt(features_named(("bottle", "bottle", "screw")), text).embeddings
    assert calls == [147, 84, 147, 84]  # one normal and one anomalous batch per distinct name
    second = prompt(features_named(("screw", "bottle")), text).embeddings
    assert len(calls) == 4  # image-independent: nothing is re-encoded
    torch.testing.assert_close(second[0], first[2])
    torch.testing.assert_close(first[0], first[1])
    prompt.setup(text)  # a (new) text encoder forgets the cache
    prompt(features_named(("bottle",)), text)
    assert len(calls) == 6


def test_unknown_names_default_to_object_and_underscores_are_optional(text):
    prompt = WinCLIPPrompt(**SMALL)
    prompt.setup(text)
    unnamed = prompt(features_named(None, batch=3), text).embeddings
    assert unnamed.shape == (3, 2, 32) and set(prompt._cache) == {("object", "cpu")}
    torch.testing.assert_close(unnamed[0], literal_ensemble(text, "object", False, **SMALL))
    assert WinCLIPPrompt(underscore_class_names=True).object_name("metal nut") == "metal_nut"
    assert WinCLIPPrompt(default_class_name="part").object_name(None) == "part"


def test_training_free_and_registered():
    prompt = WinCLIPPrompt()
    assert list(prompt.parameters()) == [] and prompt.image_conditioned is False
    assert prompt.vision_prompts() is None
    assert PROMPTS.get("winclip") is WinCLIPPrompt
    assert prompt.spec()["init_args"]["templates"] == list(TEMPLATES)


def test_bad_prompt_arguments():
    with pytest.raises(ConfigError, match="normal_states must be a non-empty list"):
        WinCLIPPrompt(normal_states=[])
    with pytest.raises(ConfigError, match="templates must be a non-empty list"):
        WinCLIPPrompt(templates=["a photo without placeholder."])
