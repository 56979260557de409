"""AnomalyCLIP's released checkpoint format, built at test time at the tiny backbone's sizes, imported and tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zsad
from zsad.errors import CheckpointError
from zsad.importers import import_checkpoint
from zsad.importers.anomalyclip import PROJECTION_WIDTH, convert, read
from zsad.inference.configs import module_from_configs
from zsad.prompts.static import PLACEHOLDER

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "backbone" / "tiny.yaml"
PRESET = [ROOT / "configs" / "backbone" / "vit_l_14_336_openai.yaml", ROOT / "configs/released/anomalyclip.yaml"]
SMOKE = [ROOT / "configs" / "data" / "synthetic.yaml", ROOT / "configs" / "trainer" / "smoke.yaml"]


@pytest.fixture(scope="module")
def module():
    """The released preset with the tiny random CLIP swapped in, as `zsad import -c tiny.yaml` builds it."""
    return module_from_configs([*PRESET, TINY])


def official_state(module, seed=0):
    """A prompt learner state dict in the official layout and order, from the tiny model's sizes and token table.

    The buffers are what the official code derives from the same CLIP (the token embeddings of the two templates);
    the trained tensors and the unused projections are random.
    """
    g = torch.Generator().manual_seed(seed)
    prompt, text = module.prompt, module.backbone.text
    n_ctx, width, deep = prompt.n_ctx, text.width, prompt.num_deep_layers
    templates = [" ".join([PLACEHOLDER] * n_ctx + [suffix]) for suffix in prompt.suffixes]
    ids = text.tokenize(templates).to(torch.int32)  # the official tokenize returns int32
    with torch.no_grad():
        embedded = text.embed_tokens(ids.long())
    state = {f"compound_prompts_text.{i}": torch.randn(4, width, generator=g) for i in range(deep)}
    for i in range(deep):
        state[f"compound_prompt_projections.{i}.weight"] = torch.randn(PROJECTION_WIDTH, width, generator=g)
        state[f"compound_prompt_projections.{i}.bias"] = torch.randn(PROJECTION_WIDTH, generator=g)
    state["ctx_pos"] = torch.randn(1, 1, n_ctx, width, generator=g)
    state["ctx_neg"] = torch.randn(1, 1, n_ctx, width, generator=g)
    for index, name in enumerate(("pos", "neg")):
        state[f"token_prefix_{name}"] = embedded[index, :1].reshape(1, 1, 1, width).clone()
        state[f"token_suffix_{name}"] = embedded[index, 1 + n_ctx :].reshape(1, 1, -1, width).clone()
    state["tokenized_prompts_pos"] = ids[:1].reshape(1, 1, -1)
    state["tokenized_prompts_neg"] = ids[1:].reshape(1, 1, -1)
    return state


def save_like_train_py(path, state):
    """What the official train.py writes: `torch.save({"prompt_learner": prompt_learner.state_dict()}, path)`."""
    torch.save({"prompt_learner": state}, path)
    return path


@pytest.fixture(scope="module")
def released(module, tmp_path_factory):
    """A released-format file and its state."""
    state = official_state(module)
    return save_like_train_py(tmp_path_factory.mktemp("released") / "epoch_15.pth", state), state


def test_every_official_tensor_lands_in_place(module, released):
    path, state = released
    official = read(path)
    assert set(official) == set(state) and len(official) == 2 + 8 + 16 + 6
    converted = convert(official, module)
    assert set(converted) == set(module.state_dict()) == {"prompt.context", "prompt.deep"}
    assert torch.equal(converted["prompt.context"][0], state["ctx_pos"][0, 0])
    assert torch.equal(converted["prompt.context"][1], state["ctx_neg"][0, 0])
    for i in range(8):
        assert torch.equal(converted["prompt.deep"][i], state[f"compound_prompts_text.{i}"])


def test_import_then_load_and_cli_test(module, released, tmp_path, run_cli, monkeypatch, import_provenance):
    path, state = released
    out = import_checkpoint(path, "anomalyclip", "mvtec", tmp_path / "anomalyclip.ckpt", extra_configs=[TINY])
    saved = torch.load(out, weights_only=True)
    provenance = saved["zsad"]["provenance"]
    preset = ("backbone/vit_l_14_336_openai", "released/anomalyclip", "backbone/tiny")
    import_provenance(provenance, path, "anomalyclip", preset, "mvtec")
    assert saved["hyper_parameters"]["backbone"]["init_args"]["layers"] == [24]

    detector = zsad.load(out, device="cpu")
    prompt = detector.module.prompt
    assert torch.equal(prompt.context[0], state["ctx_pos"][0, 0]) and torch.equal(
        prompt.context[1], state["ctx_neg"][0, 0]
    )
    assert torch.equal(prompt.deep[3], state["compound_prompts_text.3"])
    prediction = detector(torch.zeros(2, 3, 64, 64))
    assert prediction.anomaly_maps.shape == (2, 64, 64) and torch.isfinite(prediction.image_scores).all()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    args = [a for config in SMOKE for a in ("-c", str(config))]
    code, output = run_cli(["test", *args, f"--ckpt_path={out}", "--trainer.enable_progress_bar=false"])
    assert code == 0, output
    results = json.loads(next(tmp_path.glob("runs/**/results.json")).read_text())
    assert results["checkpoint"]["provenance"]["source"]["sha256"] == provenance["source"]["sha256"]


def test_the_import_command_names_the_files(module, released, tmp_path, run_cli):
    path, _ = released
    out = tmp_path / "visa.ckpt"
    code, output = run_cli(
        ["import", "anomalyclip", str(path), "--trained-on", "visa", "--out", str(out), "-c", str(TINY)]
    )
    assert code == 0, output
    assert torch.load(out, weights_only=True)["zsad"]["provenance"]["aux"][0]["dataset"] == "visa"
    code, output = run_cli(["import", "--help"])
    assert "9_12_4_multiscale_visa on MVTec AD" in output


BAD_FILES = {
    "unknown": ({"compound_prompts_text.8": torch.zeros(4, 64)}, None, r"unknown keys \['compound_prompts_text.8'\]"),
    "missing": ({}, "ctx_neg", r"missing keys \['ctx_neg'\]"),
    "missing-unused": (
        {},
        "compound_prompt_projections.7.bias",
        r"missing keys \['compound_prompt_projections.7.bias'",
    ),
    "misshapen": (
        {"ctx_pos": torch.zeros(1, 1, 16, 64)},
        None,
        r"ctx_pos has shape \(1, 1, 16, 64\) but this preset needs \(1, 1, 12, 64\)",
    ),
    "misshapen-unused": (
        {"compound_prompt_projections.0.weight": torch.zeros(768, 64)},
        None,
        r"compound_prompt_projections.0.weight has shape \(768, 64\) but this preset needs \(896, 64\)",
    ),
}
"""Per case: entries to add or replace, an entry to delete, and what the one-line error must say."""


@pytest.mark.parametrize("case", BAD_FILES)
def test_unknown_missing_and_misshapen_keys_are_named(module, case):
    replaced, deleted, message = BAD_FILES[case]
    state = {**official_state(module), **replaced}
    state.pop(deleted, None)
    with pytest.raises(CheckpointError, match=message) as raised:
        convert(state, module)
    assert "\n" not in str(raised.value)


def test_rebuilt_buffers_are_checked_not_trusted(module):
    state = official_state(module)
    state["token_suffix_neg"] = state["token_suffix_neg"].clone()
    state["token_suffix_neg"][0, 0, 5, 3] += 0.25
    with pytest.raises(CheckpointError, match=r"buffer token_suffix_neg differs .* by up to 0.25 .*other CLIP weights"):
        convert(state, module)
    state = official_state(module)
    state["tokenized_prompts_pos"] = state["tokenized_prompts_pos"].clone()
    state["tokenized_prompts_pos"][0, 0, 13] = 1000
    with pytest.raises(CheckpointError, match=r"tokenized_prompts_pos differs .* from position 13"):
        convert(state, module)


def test_the_wrong_method_or_file_is_refused(tmp_path, foreign_files_refused):
    other = module_from_configs([TINY, ROOT / "configs" / "method" / "dapo.yaml"])
    with pytest.raises(CheckpointError, match="needs a model with the static prompt, not DAPOPrompt"):
        convert({}, other)
    foreign_files_refused(read, tmp_path)
