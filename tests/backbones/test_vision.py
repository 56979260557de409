"""The hand-written vision pass against slow reference formulas and open_clip itself."""

from __future__ import annotations

import math

import pytest
import torch

from zsad.backbones import TinyRandomBackbone
from zsad.backbones.vision import interpolate_pos_embed
from zsad.errors import ConfigError


def reference_attention(block, normed, mode):
    """Per-head attention written out with explicit softmax; mode 'qk' or 'vv'."""
    attn = block.attn
    width = normed.shape[-1]
    heads = attn.num_heads
    head_dim = width // heads
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width)
    q, k, v = normed @ w_q.T + b_q, normed @ w_k.T + b_k, normed @ w_v.T + b_v
    if mode == "vv":
        q, k = v, v
    outputs = []
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        logits = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(head_dim)
        weights = torch.exp(logits - logits.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        outputs.append(weights @ v[..., sl])
    return attn.out_proj(torch.cat(outputs, dim=-1))


def reference_features(backbone, images, layers, vv_start):
    """methods.md §1 written literally: two residual streams, no MLP on the V-V stream."""
    visual = backbone.visual
    tokens = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(images.shape[0], 1, -1)
    x_ori = visual.ln_pre(torch.cat([cls, tokens], dim=1) + backbone.pos_embed)
    x_vv = None
    qk, vv = {}, {}
    for index, block in enumerate(visual.transformer.resblocks, start=1):
        a = block.ln_1(x_ori)
        if vv_start is not None and index >= vv_start:
            x_vv = (x_ori if x_vv is None else x_vv) + reference_attention(block, a, "vv")
        x_ori = x_ori + reference_attention(block, a, "qk")
        x_ori = x_ori + block.mlp(block.ln_2(x_ori))
        if index in layers:
            qk[index] = x_ori.clone()
            if x_vv is not None:
                vv[index] = x_vv.clone()
    project = lambda t: visual.ln_post(t[:, 1:]) @ visual.proj  # noqa: E731
    return x_ori[:, 0] @ visual.proj, [project(qk[l]) for l in layers], [project(vv[l]) for l in layers if l in vv]


@pytest.mark.parametrize("vv_start", [1, 6, None])
def test_features_match_slow_reference(vv_start, images):
    backbone = TinyRandomBackbone(layers=(6, 12, 18, 24), vv_start_layer=vv_start, global_ln_post=False)
    with torch.no_grad():
        features = backbone(images)
        global_ref, qk_ref, vv_ref = reference_features(backbone, images, (6, 12, 18, 24), vv_start)
    torch.testing.assert_close(features.global_embedding, global_ref, atol=1e-5, rtol=1e-5)
    for ours, ref in zip(features.patch_tokens, qk_ref, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    if vv_start is None:
        assert features.vv_tokens is None
    else:
        for ours, ref in zip(features.vv_tokens, vv_ref, strict=True):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_vv_path_leaves_the_qk_path_untouched(tiny_backbone, images):
    """The V-V stream must not feed back into frozen CLIP: q-k tokens equal those of a run without V-V.

    The two runs use different attention kernels (fused SDPA vs. nn.MultiheadAttention), hence fp32 round-off.
    """
    plain = TinyRandomBackbone(vv_start_layer=None)
    plain.load_state_dict(tiny_backbone.state_dict())
    with torch.no_grad():
        with_vv, without = tiny_backbone(images), plain(images)
    for a, b in zip(with_vv.patch_tokens, without.patch_tokens, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_vv.global_embedding, without.global_embedding, atol=1e-5, rtol=1e-5)


def test_global_feature_with_ln_post_equals_open_clip(images):
    backbone = TinyRandomBackbone(global_ln_post=True)
    with torch.no_grad():
        ours = backbone(images).global_embedding
        reference = backbone.reference_global_embedding(images)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_global_feature_without_ln_post_is_the_raw_cls_projection(images):
    with_ln = TinyRandomBackbone(global_ln_post=True)
    without = TinyRandomBackbone(global_ln_post=False)
    without.load_state_dict(with_ln.state_dict())
    with torch.no_grad():
        a, b = with_ln(images).global_embedding, without(images).global_embedding
    assert not torch.allclose(a, b)


def test_multi_layer_outputs_are_distinct(tiny_backbone, images):
    """Guards against AnomalyCLIP's pre-2025 bug (uncloned in-place updates made every layer the last)."""
    with torch.no_grad():
        features = tiny_backbone(images)
    assert features.layers == (6, 12, 18, 24)
    for tokens in (features.patch_tokens, features.vv_tokens):
        for i in range(len(tokens) - 1):
            assert not torch.allclose(tokens[i], tokens[i + 1])


def test_layer_selection_and_shapes(images):
    backbone = TinyRandomBackbone(layers=(24, 3), project_patches=False)
    with torch.no_grad():
        features = backbone(images)
    assert features.layers == (24, 3)
    assert features.grid == (8, 8)
    assert [t.shape for t in features.patch_tokens] == [torch.Size([2, 64, 64])] * 2  # raw width, CLS removed
    assert features.global_embedding.shape == (2, 32)


def test_layer_beyond_depth_is_refused():
    with pytest.raises(ConfigError, match=r"layers=\[6, 25\].*\[25\].*1\.\.24"):
        TinyRandomBackbone(layers=(6, 25))


def test_layer_before_vv_start_is_refused():
    with pytest.raises(ConfigError, match=r"layers \[3\] come before vv_start_layer=6"):
        TinyRandomBackbone(layers=(3, 12), vv_start_layer=6)


def test_image_size_not_divisible_by_patch_is_refused():
    with pytest.raises(ConfigError, match=r"image_size=70 is not divisible by the patch size 8.*Nearby valid sizes"):
        TinyRandomBackbone(image_size=70)


def test_images_of_the_wrong_size_are_refused(tiny_backbone):
    with pytest.raises(ConfigError, match=r"expects \(64, 64\)"):
        tiny_backbone(torch.zeros(1, 3, 96, 96))


def test_same_size_interpolation_is_identity():
    table = torch.randn(1 + 8 * 8, 16)
    assert interpolate_pos_embed(table, (8, 8), (8, 8), "bicubic") is table
    backbone = TinyRandomBackbone(image_size=64)
    assert torch.equal(backbone.pos_embed, backbone.visual.positional_embedding)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolation_to_a_larger_grid(mode):
    table = torch.randn(1 + 4 * 4, 8)
    resized = interpolate_pos_embed(table, (4, 4), (6, 6), mode)
    assert resized.shape == (1 + 36, 8)
    assert torch.equal(resized[0], table[0])  # CLS row untouched
    grid = table[1:].T.reshape(1, 8, 4, 4)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode=mode, align_corners=False)
    torch.testing.assert_close(resized[1:], expected.reshape(8, 36).T)


def test_open_clip_interpolation_is_open_clips_own_force_image_size_resize(tmp_path):
    """``"open_clip"`` gives the table open_clip builds when a model is created with ``force_image_size`` (DAPO)."""
    import open_clip

    from zsad.backbones.tiny import register_tiny_configs

    register_tiny_configs()
    native = open_clip.create_model("zsad-tiny", pretrained=None)
    state = native.state_dict()
    table = torch.randn(state["visual.positional_embedding"].shape, generator=torch.Generator().manual_seed(1))
    state["visual.positional_embedding"] = table
    torch.save(state, tmp_path / "tiny.pt")
    forced = open_clip.create_model("zsad-tiny", pretrained=str(tmp_path / "tiny.pt"), force_image_size=96)
    ours = interpolate_pos_embed(table, (8, 8), (12, 12), "open_clip")
    assert torch.equal(ours, forced.visual.positional_embedding.detach())
    grid = table[1:].T.reshape(1, -1, 8, 8)
    bicubic_aa = torch.nn.functional.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True)
    torch.testing.assert_close(ours[1:], bicubic_aa.reshape(-1, 144).T, atol=1e-6, rtol=1e-6)
    assert (ours - interpolate_pos_embed(table, (8, 8), (12, 12), "bicubic")).abs().max() > 1e-2
    assert interpolate_pos_embed(table, (8, 8), (8, 8), "open_clip") is table
    with pytest.raises(ConfigError, match="square pretrained grid"):
        interpolate_pos_embed(torch.randn(1 + 4 * 6, 8), (4, 6), (8, 8), "open_clip")


def test_resized_backbone_runs_at_a_new_input_size():
    bilinear = TinyRandomBackbone(image_size=96, pos_interpolation="bilinear")
    bicubic = TinyRandomBackbone(image_size=96, pos_interpolation="bicubic")
    bicubic.load_state_dict(bilinear.state_dict())
    assert not torch.allclose(bilinear.pos_embed, bicubic.pos_embed)
    with torch.no_grad():
        features = bilinear(torch.randn(1, 3, 96, 96))
    assert features.grid == (12, 12)
    assert features.patch_tokens[0].shape == (1, 144, 32)


def test_visual_deep_prompts_are_inserted_after_cls_and_left_out_of_patch_tokens(images):
    from zsad.backbones import InsertDeepPrompts

    backbone = TinyRandomBackbone(layers=(6, 24), vv_start_layer=6)
    learned = [torch.randn(4, 64, requires_grad=True) for _ in range(24)]
    features = backbone(images, deep_prompts=InsertDeepPrompts(learned, position=1, blend=0.01))
    assert [t.shape for t in features.patch_tokens] == [torch.Size([2, 64, 32])] * 2  # 64 patches, 4 prompts cut
    assert [t.shape for t in features.vv_tokens] == [torch.Size([2, 64, 32])] * 2
    features.patch_tokens[-1].sum().backward()
    assert learned[0].grad is not None and learned[10].grad.abs().sum() > 0
    with torch.no_grad():
        plain = backbone(images)
    assert not torch.allclose(plain.patch_tokens[-1], features.patch_tokens[-1].detach())
