"""Training with the feature cache gives the same model as training without it; DAPO's visual tokens refuse it."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L  # noqa: N812
import pytest
import torch
from cache_fit import cache_counts, static_model, training_data

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.cli import ZSADCLI
from zsad.config_aliases import install_loader, translate_argv
from zsad.errors import ConfigError
from zsad.features import FeatureCacheSettings, open_training_cache
from zsad.heads import DualBranchHead
from zsad.prompts import DAPOPrompt

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.counts = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer, module) -> None:
        self.counts = cache_counts(module)


def fit(root: Path, **cache_options) -> tuple[LossRecorder, dict[str, torch.Tensor], ZSADModule]:
    """Three epochs on 16 auxiliary images in shuffled batches of 8: each image changes batch mates every epoch.

    Every batch has 8 images: CPU matrix products may round an image's global feature differently in batches of
    different sizes (with or without a cache), which would make an uncached run itself batch-size dependent.
    """
    L.seed_everything(0, verbose=False)
    module = static_model(**cache_options)
    data = training_data(root)
    recorder = LossRecorder()
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return recorder, {k: v.clone() for k, v in module.state_dict().items()}, module


@pytest.fixture(scope="module")
def uncached(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, fit(root, feature_cache="off")


@pytest.mark.parametrize("mode", ["auto", "disk"])
def test_cached_training_equals_uncached_training_bitwise(uncached, tmp_path, mode):
    root, (plain, plain_state, _) = uncached
    recorder, state, module = fit(root, feature_cache=mode, feature_cache_dir=str(tmp_path / "cache"))
    assert plain.counts is None and len(plain.losses) == 2 * EPOCHS
    assert (recorder.counts.misses, recorder.counts.hits) == (16, 16 * (EPOCHS - 1))
    assert recorder.losses == plain.losses
    assert state.keys() == plain_state.keys()
    assert all(torch.equal(state[k], plain_state[k]) for k in state)
    assert module.training_cache is None  # released after fitting: test features are never cached
    assert bool(list((tmp_path / "cache").rglob("*.pt"))) == (mode == "disk")


def test_fp16_cached_training_stays_close(uncached):
    root, (plain, plain_state, _) = uncached
    recorder, state, _ = fit(root, feature_cache="memory", feature_cache_fp16=True)
    torch.testing.assert_close(torch.tensor(recorder.losses), torch.tensor(plain.losses), rtol=1e-3, atol=1e-4)
    for name, value in state.items():
        torch.testing.assert_close(value, plain_state[name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_dapo_visual_tokens_refuse_an_explicit_cache(mode):
    prompt = DAPOPrompt(vocabulary=["scratch"], prompt_count=1, text_deep_layers=2, vision_deep_layers=2)
    with pytest.raises(ConfigError, match=rf"feature_cache={mode} cannot be used: DAPOPrompt feeds learned tokens"):
        ZSADModule(TinyRandomBackbone(), prompt, DualBranchHead(), feature_cache=mode)


def test_dapo_visual_tokens_turn_auto_off_with_a_reason(caplog):
    prompt = DAPOPrompt(vocabulary=["scratch"], prompt_count=1, text_deep_layers=2, vision_deep_layers=2)
    module = ZSADModule(TinyRandomBackbone(), prompt, DualBranchHead())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zsad.features.policy"):
        assert open_training_cache(module.feature_cache, module.prompt, train_loader=None) is None
    assert [r.getMessage() for r in caplog.records if r.name == "zsad.features.policy"] == [
        "Feature cache off: DAPOPrompt feeds learned tokens into the image tower (e.g. DAPO's vision_deep_layers), so "
        "the backbone's features change at every training step."
    ]
    without_visual_tokens = DAPOPrompt(vocabulary=["scratch"], prompt_count=1, text_deep_layers=2, vision_deep_layers=0)
    ZSADModule(TinyRandomBackbone(), without_visual_tokens, DualBranchHead(), feature_cache="memory")  # allowed


def test_cli_sets_the_cache_options(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path))
    install_loader()
    configs = ["backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml"]
    args = [a for c in configs for a in ("--config", str(ROOT / "configs" / c))]
    options = ["--model.feature_cache=disk", f"--model.feature_cache_dir={tmp_path}", "--model.feature_cache_fp16=true"]
    cli = ZSADCLI(args=translate_argv([*args, *options]), run=False)
    assert cli.model.feature_cache == FeatureCacheSettings("disk", str(tmp_path), True)
    with pytest.raises(ConfigError, match=r"'model\.feature_cache'.*got 'ram'"):
        ZSADCLI(args=translate_argv([*args, "--model.feature_cache=ram"]), run=False)
