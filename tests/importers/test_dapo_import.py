"""DAPO's official checkpoint format (as train.py writes it) read safely and mapped onto the zsad preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zsad.errors import CheckpointError
from zsad.importers.dapo import convert, read
from zsad.inference.configs import module_from_configs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "configs" / "backbone" / "tiny.yaml", ROOT / "configs" / "method" / "dapo.yaml"]
PROMPTS = 3  # keeps the tiny model quick; the file's sizes must equal the model's


@pytest.fixture(scope="module")
def module():
    """The DAPO preset at tiny-random size, built as the importer builds it: from the configs."""
    return module_from_configs(CONFIGS, overrides=[f"--model.prompt.init_args.prompt_count={PROMPTS}"])


def official_parts(module, seed=0):
    """Random tensors in the official layout, sized from the model: (prompt_learner, visual_prompt, adapter)."""
    g = torch.Generator().manual_seed(seed)
    prompt, head = module.prompt, module.head
    width = prompt.normal_context.shape[-1]
    prompt_learner = {
        "learnable_normal_tokens": torch.randn(prompt.normal_context.shape, generator=g),
        "learnable_abnormal_tokens": torch.randn(prompt.anomaly_context.shape, generator=g),
        **{f"learnable_layer_tokens.{i}": torch.randn(prompt.text_deep[i].shape, generator=g) for i in range(12)},
        "meta_net.0.weight": torch.randn(width // 16, width, generator=g),
        "meta_net.0.bias": torch.randn(width // 16, generator=g),
        "meta_net.2.weight": torch.randn(width, width // 16, generator=g),
        "meta_net.2.bias": torch.randn(width, generator=g),
    }
    visual_prompt = {"learnable_visual_tokens": torch.randn(prompt.vision_deep.shape, generator=g)}
    adapter = {}
    for i, linear in enumerate(head.patch_maps):
        adapter[f"fc.{i}.weight"] = torch.randn(linear.weight.shape, generator=g)
        adapter[f"fc.{i}.bias"] = torch.randn(linear.bias.shape, generator=g)
    return prompt_learner, visual_prompt, adapter


def save_like_train_py(path, prompt_learner, visual_prompt, adapter):
    """The document train.py's save_checkpoint writes, optimizer state and numpy epoch losses included."""
    parameters = [*prompt_learner.values(), *adapter.values(), *visual_prompt.values()]
    optimizer = torch.optim.Adam([torch.nn.Parameter(p.clone()) for p in parameters], lr=1e-3, betas=(0.5, 0.999))
    torch.save(
        {
            "epoch": 4,
            "prompt_learner": prompt_learner,
            "visual_prompt": visual_prompt,
            "linear_adapter": adapter,
            "optimizer_state_dict": optimizer.state_dict(),
            "train_loss": np.mean([1.5, 2.5]),
            "train_image_loss": np.float64(0.7),
        },
        path,
    )
    return path


def test_train_py_file_is_read_safely_and_every_tensor_lands_in_place(module, tmp_path):
    prompt_learner, visual_prompt, adapter = official_parts(module)
    official = read(save_like_train_py(tmp_path / "epoch_4.pth", prompt_learner, visual_prompt, adapter))
    assert len(official) == 2 + 12 + 4 + 1 + len(adapter)  # contexts, layer tokens, meta-net, visual, maps
    state = convert(official, module)
    assert set(state) == set(module.state_dict())
    assert all(not key.startswith("backbone.") for key in state)
    module.load_state_dict(state)
    prompt, head = module.prompt, module.head
    assert torch.equal(prompt.normal_context, prompt_learner["learnable_normal_tokens"])
    assert torch.equal(prompt.anomaly_context, prompt_learner["learnable_abnormal_tokens"])
    for i in range(12):
        assert torch.equal(prompt.text_deep[i], prompt_learner[f"learnable_layer_tokens.{i}"])
    assert torch.equal(prompt.vision_deep, visual_prompt["learnable_visual_tokens"])
    for i, linear in enumerate(head.patch_maps):
        assert torch.equal(linear.weight, adapter[f"fc.{i}.weight"])
        assert torch.equal(linear.bias, adapter[f"fc.{i}.bias"])


def test_the_keys_test_py_asks_for_are_accepted_too(module, tmp_path):
    prompt_learner, visual_prompt, adapter = official_parts(module, seed=1)
    path = tmp_path / "released.pth"
    torch.save(
        {
            "prompt_learner_state_dict": prompt_learner,
            "visual_prompt_state_dict": visual_prompt,
            "trainable_adapter_state_dict": adapter,
        },
        path,
    )
    state = convert(read(path), module)
    assert torch.equal(state["prompt.vision_deep"], visual_prompt["learnable_visual_tokens"])


def test_unknown_missing_and_misshapen_keys_are_named(module, tmp_path):
    prompt_learner, visual_prompt, adapter = official_parts(module)
    official = read(save_like_train_py(tmp_path / "epoch_0.pth", prompt_learner, visual_prompt, adapter))
    extra = {**official, "prompt_learner.learnable_layer_tokens.12": torch.zeros(4, 64)}
    with pytest.raises(CheckpointError, match=r"unknown keys \['prompt_learner.learnable_layer_tokens.12'\]"):
        convert(extra, module)
    fewer = {k: v for k, v in official.items() if k != "linear_adapter.fc.3.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \['linear_adapter.fc.3.bias'\]"):
        convert(fewer, module)
    more_sets = {**official, "prompt_learner.learnable_normal_tokens": torch.zeros(10, 5, 64)}
    with pytest.raises(CheckpointError, match=r"prompt.normal_context has shape \(10, 5, 64\) but this preset needs"):
        convert(more_sets, module)
    bad_meta = {**official, "prompt_learner.meta_net.0.weight": torch.zeros(48, 768)}
    with pytest.raises(CheckpointError, match=r"meta_net.0.weight has shape \(48, 768\) but text width 64"):
        convert(bad_meta, module)


def test_unreadable_or_foreign_files_are_refused(module, tmp_path, foreign_files_refused):
    with pytest.raises(CheckpointError, match="does not exist"):
        read(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        read(tmp_path / "empty.pth")
    foreign_files_refused(read, tmp_path)  # a file without prompt_learner, garbage bytes, code in the pickle


def test_zsad_import_knows_the_format_and_its_preset():
    from zsad.importers import IMPORTERS
    from zsad.importers.base import preset_paths

    released = IMPORTERS["dapo"]
    assert released.read is read and released.convert is convert
    assert [path.name for path in preset_paths(released, "mvtec")] == ["vit_l_14_336_openai.yaml", "dapo.yaml"]
    assert all(path.is_file() for path in preset_paths(released, "mvtec"))
