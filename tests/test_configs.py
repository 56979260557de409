"""Every method and ablation config prints, builds and runs; reproduction configs build on the real architecture.

The tiny checks put `configs/backbone/tiny.yaml` first and the method config after it, as users do for smoke runs.
The real-architecture checks build OpenAI ViT-L-14-336 (QuickGELU) at 518 px with random weights (no download):
every config builds there, and the static and CoPS reproduction configs run one forward/backward step, with their
trainable-parameter counts compared to methods.md (§3 for AnomalyCLIP, §2.8 for CoPS, §4 for ViP2, §9 for DAPO).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsad.cli import ZSADCLI
from zsad.config_aliases import install_loader, translate_argv

ROOT = Path(__file__).resolve().parents[1]
METHOD_CONFIGS = [
    path for part in ("method", "ablation", "released") for path in sorted((ROOT / "configs").glob(f"{part}/*.yaml"))
]
TINY_AFTER = {"winclip.yaml": "backbone/tiny_winclip.yaml"}  # configs that swap the backbone class need it after
# Trainable parameters at the real size (ViT-L/14@336: text width 768, vision width 1024, joint 768).
EXPECTED_PARAMETERS = {
    "method/static.yaml": 43_008,  # 2 x 12 x 768 contexts + 8 x 4 x 768 deep prompts; AnomalyCLIP's "effective 43 k"
    "released/anomalyclip.yaml": 43_008,  # the same prompts as static.yaml, scored from layer 24 only
    "method/cops.yaml": 6_554_880,  # methods.md §2.8: effectively trained 6.55 M (encoder included)
    "method/vip.yaml": 4_149_120,  # methods.md §4: ≈ 4.15 M
    "method/dapo.yaml": 3_360_768,  # methods.md §9: ≈ 3.4 M
}


def build(config: Path, backbone: str, extra: list[str], tmp_path: Path):
    install_loader()
    configs = [ROOT / "configs" / backbone, config]
    if config.name in TINY_AFTER and backbone == "backbone/tiny.yaml":
        configs.append(ROOT / "configs" / TINY_AFTER[config.name])
    args = [a for c in configs for a in ("--config", str(c))]
    args += ["--config", str(ROOT / "configs/data/synthetic.yaml"), f"--data.init_args.root={tmp_path / 'data'}"]
    return ZSADCLI(args=translate_argv([*args, *extra]), run=False)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds_and_scores_on_the_tiny_backbone(config, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    cli = build(config, "backbone/tiny.yaml", [], tmp_path)
    model, data = cli.model, cli.datamodule
    batch = next(iter(data.test_dataloader()))
    model.eval()
    with torch.no_grad():
        scores = model(batch["image"])
    assert scores.anomaly_map.shape == (batch["image"].shape[0], 64, 64)
    assert torch.isfinite(scores.image_score).all()


@pytest.mark.slow
@pytest.mark.real_arch
@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds_on_the_real_architecture(config, tmp_path, capsys):
    backbone = "backbone/vit_l_14_336_openai.yaml"
    if config.name == "winclip.yaml":
        extra = ["--model.backbone.init_args.pretrained=null"]
    else:
        extra = ["--model.backbone.init_args.pretrained=null", "--model.backbone.init_args.force_quick_gelu=true"]
    model = build(config, backbone, extra, tmp_path).model
    count = trainable(model)
    with capsys.disabled():
        print(f"\n{config.parent.name}/{config.name}: {count:,} trainable parameters at the real size")
    key = f"{config.parent.name}/{config.name}"
    if key in EXPECTED_PARAMETERS:
        assert count == EXPECTED_PARAMETERS[key]


@pytest.mark.slow
@pytest.mark.real_arch
@pytest.mark.parametrize("name", ["static.yaml", "cops.yaml"])
def test_real_size_forward_backward(name, tmp_path):
    extra = ["--model.backbone.init_args.pretrained=null", "--model.backbone.init_args.force_quick_gelu=true"]
    model = build(ROOT / "configs/method" / name, "backbone/vit_l_14_336_openai.yaml", extra, tmp_path).model
    images = torch.randn(1, 3, 518, 518)
    masks = torch.zeros(1, 1, 518, 518)
    masks[..., 200:260, 100:180] = 1
    batch = {"image": images, "mask": masks, "label": torch.tensor([1]), "category": ["bottle"],
             "defect_type": ["broken_large"]}  # fmt: skip
    model.train()
    loss = model.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None for g in grads)
    assert model.backbone.grid == (37, 37)
