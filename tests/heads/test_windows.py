"""WinCLIP windows: embeddings against a per-window reference, token counts, harmonic aggregation, the full method."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from zsad import ZSADModule
from zsad.backbones.windows import WinCLIPBackbone, WindowFeatures, encode_windows, window_patch_indices
from zsad.errors import ConfigError
from zsad.heads.windows import WindowHead, harmonic_patch_scores
from zsad.prompts.winclip import WinCLIPPrompt
from zsad.registry import BACKBONES, HEADS
from zsad.structures import Features, TextFeatures

ROOT = Path(__file__).resolve().parents[2]
WINCLIP_SMOKE = [
    str(ROOT / "configs" / c)
    for c in ("method/winclip.yaml", "backbone/tiny_winclip.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
]


@pytest.fixture(scope="module")
def backbone():
    return WinCLIPBackbone(model_name="zsad-tiny", pretrained=None, image_size=64)


def literal_windows(grid, size):
    """Every size x size window (top-left row-major), its patches row-major, by explicit loops."""
    rows, cols = grid
    return [
        [(top + i) * cols + (left + j) for i in range(size) for j in range(size)]
        for top in range(rows - size + 1)
        for left in range(cols - size + 1)
    ]


def reference_window_embedding(backbone, image, patches):
    """One window alone, as anomalib intends: [CLS + patches] after the position embedding, then ln_pre, the
    whole transformer (open_clip's own module), ln_post and proj of the class token."""
    visual = backbone.visual
    tokens = visual.conv1(image[None]).flatten(2).transpose(1, 2)[0]
    tokens = torch.cat([visual.class_embedding[None], tokens]) + backbone.pos_embed
    sequence = visual.ln_pre(tokens[[0] + [1 + p for p in patches]])
    out = visual.transformer(sequence[None])[0]
    return visual.ln_post(out[0]) @ visual.proj


def test_window_indices_match_explicit_loops():
    for grid, size, count in (((15, 15), 2, 196), ((15, 15), 3, 169), ((8, 8), 2, 49), ((8, 8), 3, 36)):
        indices = window_patch_indices(grid, size)
        assert indices.shape == (count, size * size)
        assert indices.tolist() == literal_windows(grid, size)
    assert window_patch_indices((4, 4), 2, 2).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_batched_windows_equal_each_window_run_alone(backbone, images):
    with torch.no_grad():
        windows = encode_windows(backbone, images, sizes=(2, 3))
        chunked = encode_windows(backbone, images, sizes=(2, 3), max_windows_per_pass=7)
        for size, embeddings in zip((2, 3), windows, strict=True):
            literal = literal_windows((8, 8), size)
            assert embeddings.shape == (2, len(literal), 32)
            for w in (0, 5, len(literal) // 2, len(literal) - 1):  # corners, borders, interior
                expected = torch.stack([reference_window_embedding(backbone, image, literal[w]) for image in images])
                torch.testing.assert_close(embeddings[:, w], expected, atol=1e-5, rtol=1e-4)
        for a, b in zip(windows, chunked, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(windows[0][0, 0], windows[0][0, 1])  # attention stays inside each window (anomalib#2571)


def test_backbone_gives_window_features_and_full_image_features(backbone, images):
    with torch.no_grad():
        features = backbone(images)
        plain = super(WinCLIPBackbone, backbone).forward(images)
    assert isinstance(features, WindowFeatures)
    assert features.window_sizes == (2, 3) and features.window_stride == 1 and features.layers == (24,)
    assert features.patch_tokens[0].shape == (2, 64, 32)
    torch.testing.assert_close(features.global_embedding, plain.global_embedding)
    torch.testing.assert_close(features.patch_tokens[0], plain.patch_tokens[0])
    assert BACKBONES.get("winclip_backbone") is WinCLIPBackbone


def test_token_counts_at_240_px_with_patch_16(tmp_path):
    """ecosystem.md §1.2: 196 windows of 2 x 2 (5 tokens with CLS) and 169 of 3 x 3 (10 tokens), 226 for the image."""
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 240, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    (tmp_path / "zsad-test-b16-240.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    model = WinCLIPBackbone(model_name="zsad-test-b16-240", pretrained=None, image_size=240)
    shapes = []
    first_block = model.visual.transformer.resblocks[0]  # its ln_1 sees the block's input (the block is not called)
    first_block.ln_1.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        features = model(torch.randn(2, 3, 240, 240))
    assert model.grid == (15, 15)
    assert shapes == [(2, 226, 64), (2 * 196, 5, 64), (2 * 169, 10, 64)]
    assert [w.shape for w in features.window_embeddings] == [(2, 196, 32), (2, 169, 32)]


def literal_harmonic(window_scores, grid, size):
    """|W(p)| / sum over windows w containing patch p of 1 / s_w, per patch, with containment by coordinates."""
    rows, cols = grid
    tops_lefts = [(t, left) for t in range(rows - size + 1) for left in range(cols - size + 1)]
    out = torch.zeros(window_scores.shape[0], rows * cols)
    for b in range(window_scores.shape[0]):
        for r in range(rows):
            for c in range(cols):
                covering = [
                    w for w, (t, left) in enumerate(tops_lefts) if t <= r < t + size and left <= c < left + size
                ]
                out[b, r * cols + c] = len(covering) / sum(1.0 / window_scores[b, w] for w in covering)
    return out


@pytest.mark.parametrize("size", [2, 3])
def test_harmonic_aggregation_matches_the_literal_formula(size):
    scores = torch.rand(2, (6 - size + 1) * (5 - size + 1), generator=torch.Generator().manual_seed(size)) + 0.01
    torch.testing.assert_close(harmonic_patch_scores(scores, (6, 5), size, 1), literal_harmonic(scores, (6, 5), size))


def test_harmonic_aggregation_example_and_edge_cases():
    scores = torch.tensor([[1.0, 0.75, 0.5, 0.25]])  # 3 x 3 grid, four 2 x 2 windows
    expected = torch.tensor([[1.0, 6 / 7, 0.75, 2 / 3, 0.48, 0.375, 0.5, 1 / 3, 0.25]])
    torch.testing.assert_close(harmonic_patch_scores(scores, (3, 3), 2, 1), expected)
    zero = harmonic_patch_scores(torch.tensor([[0.0, 0.5, 0.5, 0.5]]), (3, 3), 2, 1)
    assert zero[0, 0] == 0 and zero[0, 4] == 0 and zero[0, 8] == 0.5
    uncovered = harmonic_patch_scores(torch.tensor([[0.5]]), (3, 3), 2, 2)  # one window, stride 2
    assert uncovered.tolist() == [[0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]]


def window_inputs(batch=2, grid=(5, 4), dim=8):
    g = torch.Generator().manual_seed(0)
    n = lambda size: (grid[0] - size + 1) * (grid[1] - size + 1)  # noqa: E731
    features = WindowFeatures(
        global_embedding=torch.randn(batch, dim, generator=g),
        patch_tokens=(torch.randn(batch, grid[0] * grid[1], dim, generator=g),),
        layers=(1,),
        grid=grid,
        window_embeddings=tuple(torch.randn(batch, n(s), dim, generator=g) for s in (2, 3)),
        window_sizes=(2, 3),
    )
    text = F.normalize(torch.randn(batch, 2, dim, generator=g), dim=-1)
    return features, TextFeatures(embeddings=text)


def anomaly_score(embedding, text):
    cosines = F.normalize(embedding, dim=-1) @ text.T
    return torch.softmax(cosines / 0.07, dim=-1)[..., 1]


@pytest.mark.parametrize("include_image_scale", [True, False])
def test_head_matches_winclip_zero_shot_formulas(include_image_scale):
    features, text = window_inputs()
    scores = WindowHead(include_image_scale=include_image_scale).eval()(features, text, (20, 16))
    for b in range(2):
        t = text.embeddings[b]
        image = anomaly_score(features.global_embedding[b], t)
        assert scores.image_score[b].item() == pytest.approx(image.item(), abs=1e-6)
        maps = [
            literal_harmonic(anomaly_score(w[b], t)[None], (5, 4), s)[0]
            for s, w in zip((2, 3), features.window_embeddings, strict=True)
        ]
        terms = ([image.expand(20)] if include_image_scale else []) + maps
        combined = len(terms) / sum(1.0 / m for m in terms)
        upsampled = F.interpolate(combined.reshape(1, 1, 5, 4), size=(20, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(scores.anomaly_map[b], upsampled[0, 0], atol=1e-6, rtol=1e-5)
        probs = scores.layer_probs[0][b]
        torch.testing.assert_close(probs.sum(0), torch.ones(20, 16))
    assert len(scores.layer_probs) == 2 and scores.image_logits.shape == (2, 2)


def test_image_score_option_adds_the_map_maximum():
    features, text = window_inputs()
    cls_only = WindowHead().eval()(features, text, (5, 4))
    mixed = WindowHead(image_score="cls_and_map_max").eval()(features, text, (5, 4))
    torch.testing.assert_close(mixed.image_score, (cls_only.image_score + cls_only.anomaly_map.flatten(1).amax(1)) / 2)


def test_head_needs_window_features_and_checks_arguments():
    features, text = window_inputs()
    plain = Features(features.global_embedding, features.patch_tokens, features.layers, features.grid)
    with pytest.raises(ConfigError, match=r"needs window embeddings.*winclip_backbone"):
        WindowHead()(plain, text, (5, 4))
    with pytest.raises(ConfigError, match="temperature=0 must be a positive number"):
        WindowHead(temperature=0)
    with pytest.raises(ConfigError, match="image_score='max'"):
        WindowHead(image_score="max")
    with pytest.raises(ConfigError, match="Window size 9 does not fit the 8 x 8 patch grid"):
        WinCLIPBackbone(model_name="zsad-tiny", pretrained=None, image_size=64, window_sizes=(2, 9))
    assert HEADS.get("winclip_windows") is WindowHead


def test_module_scores_without_training(backbone, images):
    prompt = WinCLIPPrompt(templates=["a photo of a {}."])  # one template keeps the text passes short
    module = ZSADModule(backbone=backbone, prompt=prompt, head=WindowHead()).eval()
    assert not [p for p in module.parameters() if p.requires_grad] and module.state_dict() == {}
    batch = {"image": images, "mask": torch.zeros(2, 1, 64, 64), "label": torch.tensor([0, 1]), "category": ["a", "b"]}
    with torch.no_grad():
        scores = module(images)
        module.evaluator.reset(None)
        module.test_step(batch, 0)
    assert scores.anomaly_map.shape == (2, 64, 64) and scores.image_score.shape == (2,)
    assert set(module.prompt._cache) == {("object", "cpu"), ("a", "cpu"), ("b", "cpu")}
    with pytest.raises(ConfigError, match="no trainable parameters; use `zsad test`"):
        module.configure_optimizers()
    with pytest.raises(ConfigError, match="no losses to train"):
        module.training_step(batch, 0)


def test_cli_test_runs_and_fit_refuses(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    reproduction = ["-c", WINCLIP_SMOKE[0], "-c", WINCLIP_SMOKE[2], "-c", WINCLIP_SMOKE[3]]
    code, out = run_cli(["test", *reproduction, "--print_config"])
    assert code == 0 and "model_name: ViT-B-16-plus-240" in out and "pretrained: laion400m_e31" in out
    assert "image_size: 240" in out and "class_path: zsad.backbones.windows.WinCLIPBackbone" in out
    configs = [arg for path in WINCLIP_SMOKE for arg in ("-c", path)]
    configs += ["--data.init_args.aux_categories=[stripes]", "--data.init_args.target_categories=[ring,capsule]"]
    code, out = run_cli(["test", *configs, "--trainer.enable_progress_bar=false"])
    assert code == 0, out
    document = json.loads(next(tmp_path.glob("runs/smoke/lightning_logs/*/results.json")).read_text())
    assert set(document["per_category"]["synthetic"]) == {"ring", "capsule"}
    assert document["model"]["head"]["class_path"] == "zsad.heads.windows.WindowHead"
    code, out = run_cli(["fit", *configs, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"])
    assert code == 2 and "has no trainable parameters; use `zsad test`" in out
