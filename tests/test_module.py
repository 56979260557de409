"""ZSADModule composition, trainable-only optimisation and checkpoints."""

from __future__ import annotations

import lightning as L  # noqa: N812
import pytest
import torch

from training_steps import train_on_batch
from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.errors import CheckpointError, ConfigError
from zsad.heads import DualBranchHead
from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.prompts import StaticPrompt


def make_module(**prompt_args):
    return ZSADModule(
        backbone=TinyRandomBackbone(vv_start_layer=6),
        prompt=StaticPrompt(**prompt_args),
        head=DualBranchHead(),
        losses=[ImageCrossEntropy(), FocalLoss(weight=4.0), DiceLoss(weight=4.0)],
    )


def batch_of(images):
    masks = torch.zeros(images.shape[0], 1, 64, 64)
    masks[0, :, 10:30, 10:30] = 1
    return {"image": images, "mask": masks, "label": torch.tensor([1, 0])}


def test_only_prompt_parameters_train_and_are_saved():
    module = make_module()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.context", "prompt.deep"}
    assert set(module.state_dict()) == trainable
    optimizer = module.configure_optimizers()
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    assert optimizer.defaults["betas"] == (0.5, 0.999)


def test_training_step_lowers_the_loss(images):
    L.seed_everything(0)
    module = make_module()
    optimizer = module.configure_optimizers()
    losses = train_on_batch(module, optimizer, batch_of(images), steps=15)
    assert losses[-1] < losses[0] - 0.1


def test_methods_consume_features_not_images(images):
    """A batch carrying cached features is scored without touching the backbone."""
    module = make_module().eval()
    with torch.no_grad():
        features = module.backbone(images)
        direct = module.score(features)[0]
    module.backbone.forward = lambda *_: pytest.fail("backbone must not run when features are given")
    replayed = module.extract_features({"features": features, "image": None})
    with torch.no_grad():
        assert torch.equal(module.score(replayed)[0].anomaly_map, direct.anomaly_map)


def test_checkpoint_round_trip_without_pickle(tmp_path, images):
    module = make_module(n_ctx=6, deep_depth=3)
    with torch.no_grad():
        module.prompt.context.add_(0.5)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain data only: no unsafe pickle needed
    assert set(checkpoint["state_dict"]) == {"prompt.context", "prompt.deep"}
    assert checkpoint["hyper_parameters"]["prompt"]["init_args"]["n_ctx"] == 6
    assert checkpoint["zsad"]["backbone"]["class_path"].endswith("TinyRandomBackbone")
    restored = ZSADModule.load_from_checkpoint(path, weights_only=True).eval()
    module.eval()
    assert torch.equal(restored.prompt.context, module.prompt.context)
    with torch.no_grad():
        torch.testing.assert_close(restored(images).anomaly_map, module(images).anomaly_map)


def test_incompatible_checkpoint_is_refused(tmp_path):
    module = make_module(deep_depth=3)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    other = make_module(deep_depth=1)  # no deep prompts: different trainable parameters
    checkpoint = torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match=r"does not fit this model.*unexpected \['prompt.deep'\]"):
        other.on_load_checkpoint(checkpoint)


def test_specs_rebuild_equal_components():
    module = make_module(n_ctx=5)
    rebuilt = ZSADModule(**module.component_specs())
    assert rebuilt.prompt.n_ctx == 5
    assert rebuilt.backbone.vv_start_layer == 6
    assert [type(loss).__name__ for loss in rebuilt.losses] == ["ImageCrossEntropy", "FocalLoss", "DiceLoss"]


class TermPrompt(StaticPrompt):
    """A static prompt that also reports an unweighted loss term, as CoPS does."""

    lr_scales = {"extra": 0.01}  # noqa: RUF012

    def setup(self, text):
        super().setup(text)
        self.extra = torch.nn.Linear(2, 2)

    def forward(self, features, text):
        result = super().forward(features, text)
        result.terms["center"] = self.extra.weight.pow(2).sum()
        return result


class CenterLoss(ImageCrossEntropy):
    consumes = ("center",)

    def value(self, scores, batch, text):
        return text.terms["center"]


def test_unconsumed_synthesizer_terms_are_refused(images):
    module = ZSADModule(TinyRandomBackbone(), TermPrompt(deep_depth=1), DualBranchHead(), losses=[ImageCrossEntropy()])
    with pytest.raises(ConfigError, match=r"computes the loss terms \['center'\], but no configured loss uses them"):
        module.training_step(batch_of(images), 0)
    module = ZSADModule(TinyRandomBackbone(), TermPrompt(deep_depth=1), DualBranchHead(), losses=[CenterLoss(3.0)])
    loss = module.training_step(batch_of(images), 0)
    torch.testing.assert_close(loss, 3.0 * module.prompt.extra.weight.pow(2).sum())


def test_learning_rate_scales_make_parameter_groups():
    module = ZSADModule(TinyRandomBackbone(), TermPrompt(deep_depth=1), DualBranchHead(), losses=[ImageCrossEntropy()])
    optimizer = module.configure_optimizers()
    rates = sorted((group["lr"], len(group["params"])) for group in optimizer.param_groups)
    assert rates == [(pytest.approx(1e-5), 2), (pytest.approx(1e-3), 1)]  # extra.{weight,bias} at 0.01 x 1e-3
