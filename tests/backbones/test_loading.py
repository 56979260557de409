"""Weights, activations and failure modes of backbone construction."""

from __future__ import annotations

import open_clip
import pytest
import torch

from zsad.backbones import CLIPBackbone, create_clip
from zsad.backbones.loading import activation_name, needs_quick_gelu
from zsad.errors import ConfigError, WeightsUnavailableError


def test_tiny_configs_pick_their_activation():
    assert activation_name(create_clip("zsad-tiny", None)) == "QuickGELU"
    assert activation_name(create_clip("zsad-tiny-gelu", None)) == "GELU"
    assert activation_name(create_clip("zsad-tiny-gelu", None, force_quick_gelu=True)) == "QuickGELU"


@pytest.mark.parametrize(
    ("name", "pretrained", "force", "openai_file", "expected"),
    [
        ("ViT-L-14-336", "openai", False, False, True),  # OpenAI weights were trained with QuickGELU
        ("ViT-L-14-336-quickgelu", "openai", False, False, False),  # the config already says so
        ("ViT-L-14-336", "/weights/ViT-L-14-336px.pt", False, True, True),  # an OpenAI-format file says so
        ("ViT-L-14-336", "/weights/open_clip_model.safetensors", False, False, False),  # others: the user must say
        ("ViT-L-14-336", "/weights/open_clip_model.safetensors", True, False, True),
        ("ViT-B-16-plus-240", "laion400m_e31", False, False, False),
    ],
)
def test_quick_gelu_decision(name, pretrained, force, openai_file, expected):
    assert needs_quick_gelu(name, pretrained, force, openai_file=openai_file) is expected


def test_real_openai_config_builds_with_quick_gelu():
    """ViT-L-14-336-quickgelu is the name the reference configs use; check its activation without weights."""
    config = open_clip.get_model_config("ViT-L-14-336-quickgelu")
    assert config["quick_gelu"] is True
    assert "quick_gelu" not in open_clip.get_model_config("ViT-L-14-336")


def test_local_checkpoint_file_round_trip(tmp_path):
    source = create_clip("zsad-tiny-gelu", None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = create_clip("zsad-tiny-gelu", str(path), force_quick_gelu=True)
    assert activation_name(loaded) == "QuickGELU"
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert not any(p.requires_grad for p in loaded.parameters())


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ConfigError, match=r"Unknown open_clip model 'ViT-L-14-366'.*Did you mean.*ViT-L-14-336"):
        create_clip("ViT-L-14-366", None)


def test_unknown_pretrained_tag_lists_the_tags():
    with pytest.raises(ConfigError, match=r"'laion9000' is not a pretrained tag of 'ViT-B-32'.*openai"):
        create_clip("ViT-B-32", "laion9000")


def test_missing_checkpoint_file():
    with pytest.raises(WeightsUnavailableError, match=r"Checkpoint file '/no/such/clip.pt' does not exist"):
        create_clip("ViT-B-32", "/no/such/clip.pt")


def test_offline_download_names_the_remedy(monkeypatch):
    """With the hub unreachable, the error names the local-path and tiny-random remedies, never random weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"Could not load weights 'openai'.*local path") as caught:
        CLIPBackbone("ViT-B-32", pretrained="openai", image_size=224)
    # the remedies are ones that `zsad fit` and `zsad test` accept (`--backbone` is a `zsad demo` flag)
    assert "add `-c configs/backbone/tiny.yaml` after the other configs" in str(caught.value)
    assert "--model.backbone=tiny-random" not in str(caught.value)  # keeps the real init_args: downloads again
    assert "--backbone tiny-random" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.real_arch
def test_real_vit_l_14_336_architecture_at_518_with_random_weights():
    """The reference architecture and input size, exercised on random weights (no download)."""
    backbone = CLIPBackbone(
        "ViT-L-14-336-quickgelu",
        pretrained=None,
        image_size=518,
        layers=(6, 12, 18, 24),
        vv_start_layer=6,
        global_ln_post=False,
    )
    assert activation_name_of(backbone) == "QuickGELU"
    assert backbone.grid == (37, 37) and backbone.pos_embed.shape == (1 + 37 * 37, 1024)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 518, 518))
    assert features.global_embedding.shape == (1, 768)
    assert [t.shape for t in features.vv_tokens] == [torch.Size([1, 1369, 768])] * 4
    assert backbone.text.width == 768 and backbone.text.depth == 12


def activation_name_of(backbone):
    return type(backbone.visual.transformer.resblocks[0].mlp[1]).__name__
