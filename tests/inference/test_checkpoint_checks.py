"""Checkpoints that cannot fit are refused with a CheckpointError that names the problem."""

from __future__ import annotations

import pytest
import torch

import zsad
from zsad.errors import CheckpointError
from zsad.inference import WEIGHT_SOURCE_KEYS, is_compatible_version


@pytest.fixture(scope="module")
def saved(trained):
    return torch.load(trained.checkpoint, weights_only=True)


def edited(saved, tmp_path, edit):
    """A copy of the checkpoint changed by ``edit`` (which mutates a fresh copy)."""
    copy = {**saved, "zsad": dict(saved["zsad"]), "state_dict": dict(saved["state_dict"])}
    edit(copy)
    path = tmp_path / "edited.ckpt"
    torch.save(copy, path)
    return path


def test_version_compatibility_is_same_major_minor():
    assert is_compatible_version("0.1.0", "0.1.7") and is_compatible_version("0.1.3.dev2", "0.1.0")
    assert not is_compatible_version("0.2.0", "0.1.0") and not is_compatible_version("1.1.0", "0.1.0")
    assert not is_compatible_version("unknown", "0.1.0")


def test_not_a_zsad_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        zsad.load(tmp_path / "missing.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable zsad checkpoint"):
        zsad.load(text)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, plain)  # a Lightning-like file from something else
    with pytest.raises(CheckpointError, match=r"not a zsad checkpoint.*'zsad', 'hyper_parameters'"):
        zsad.load(plain)


def test_incompatible_version(saved, tmp_path):
    path = edited(saved, tmp_path, lambda c: c["zsad"].update(version="0.2.0"))
    with pytest.raises(CheckpointError, match=r"saved by zsad 0\.2\.0.*same major\.minor"):
        zsad.load(path)
    patch_release = edited(saved, tmp_path, lambda c: c["zsad"].update(version="0.1.99"))
    assert zsad.load(patch_release, device="cpu").image_size == 64


def test_backbone_override_follows_the_test_time_rule(saved, trained):
    """Another architecture or class is refused; settings that leave the trained parameters alone are recorded."""
    spec = saved["zsad"]["backbone"]
    other_architecture = {**spec, "init_args": {**spec["init_args"], "model_name": "zsad-tiny-gelu"}}
    with pytest.raises(CheckpointError, match=r"other components.*model_name: 'zsad-tiny' -> 'zsad-tiny-gelu'"):
        zsad.load(trained.checkpoint, backbone=other_architecture)
    other_class = {"class_path": "clip", "init_args": spec["init_args"]}
    with pytest.raises(CheckpointError, match=r"backbone\.class_path: .*TinyRandomBackbone' -> '.*CLIPBackbone'"):
        zsad.load(trained.checkpoint, backbone=other_class)
    smaller = {**spec, "init_args": {**spec["init_args"], "image_size": 32, "layers": [12, 24]}}
    detector = zsad.load(trained.checkpoint, backbone=smaller, device="cpu")
    assert detector.image_size == 32
    changes = detector.module.evaluated_checkpoint["changes"]
    assert {"key": "model.backbone.init_args.image_size", "trained": 64, "requested": 32} in changes
    assert {"key": "model.backbone.init_args.layers", "trained": [6, 12, 18, 24], "requested": [12, 24]} in changes
    assert "pretrained" in WEIGHT_SOURCE_KEYS  # the weight source may differ: a local file instead of a tag
    moved = {"class_path": "tiny-random", "init_args": {**spec["init_args"], "cache_dir": "/elsewhere"}}
    assert (
        zsad.load(trained.checkpoint, backbone=moved, device="cpu").module.backbone.spec()["init_args"]["cache_dir"]
        == "/elsewhere"
    )


def test_trainable_parameters_must_fit(saved, tmp_path):
    wrong_shape = edited(saved, tmp_path, lambda c: c["state_dict"].update({"prompt.context": torch.zeros(2, 5, 64)}))
    with pytest.raises(CheckpointError, match=r"prompt\.context: checkpoint \(2, 5, 64\), model \(2, 12, 64\)"):
        zsad.load(wrong_shape)
    missing = edited(saved, tmp_path, lambda c: c["state_dict"].pop("prompt.deep"))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: prompt\.deep"):
        zsad.load(missing)


def test_the_cli_prints_one_line(tmp_path, run_cli):
    code, out = run_cli(["predict", "--ckpt", str(tmp_path / "none.ckpt"), "--images", str(tmp_path), "--out",
                         str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and "Traceback" not in out
    assert "zsad: error: No files found in the folder" in out  # the input is checked before the model loads
    (tmp_path / "a.png").write_bytes(b"")
    code, out = run_cli(["predict", "--ckpt", str(tmp_path / "none.ckpt"), "--images", str(tmp_path), "--out",
                         str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and "zsad: error: Checkpoint" in out and "does not exist" in out
