"""CoPS's official checkpoint format, built at test time at the tiny backbone's sizes, imported and tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zsad
from zsad.errors import CheckpointError
from zsad.importers import import_checkpoint
from zsad.importers.cops import EXTRACTOR_NAMES, convert, read
from zsad.inference.configs import module_from_configs
from zsad.prompts.cops.synthesizer import PLACEHOLDER

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "backbone" / "tiny.yaml"
PRESET = [ROOT / "configs" / "backbone" / "vit_l_14_336_openai.yaml", ROOT / "configs" / "method" / "cops.yaml"]
SMOKE = [ROOT / "configs" / "data" / "synthetic.yaml", ROOT / "configs" / "trainer" / "smoke.yaml"]
EXTRACTOR = EXTRACTOR_NAMES  # official Prototype_Extractor name -> zsad PrototypeExtractor name (a plain rename)
ENCODER = {"net.0": "encoder.0", "mean": "to_mean", "log_var": "to_logvar"}


@pytest.fixture(scope="module")
def module():
    """The MVTec-trained preset with the tiny random CLIP swapped in, as `zsad import -c tiny.yaml` builds it."""
    return module_from_configs([*PRESET, TINY])


def released_state(module, seed=0):
    """The 28 tensors train.py saves (dead modules, VAE encoder and buffers removed), at the tiny model's sizes."""
    g = torch.Generator().manual_seed(seed)
    prompt = module.prompt
    width, dim = prompt.context.shape[-1], prompt.ests.queries.shape[-1]
    state = {
        "ctx_pos": torch.randn(1, 1, 14, width, generator=g),
        "ctx_neg": torch.randn(1, 1, 14, width, generator=g),
        "t_n": torch.randn(6, dim, generator=g),
        "t_a": torch.randn(6, dim, generator=g),
    }
    extractor = dict(prompt.ests.extractor.named_parameters())
    for official, ours in EXTRACTOR.items():
        state[f"extractor.{official}"] = torch.randn(extractor[ours].shape, generator=g)
    for index in (0, 2):
        state[f"vae_decoder.net.{index}.weight"] = torch.randn(dim, dim, generator=g)
        state[f"vae_decoder.net.{index}.bias"] = torch.randn(dim, generator=g)
    state |= {f"compound_prompts_text.{i}": torch.randn(4, width, generator=g) for i in range(8)}
    return state


def full_state(module, seed=0):
    """An unfiltered `prompt_learner.state_dict()`: with VAE encoder, unused modules and template buffers."""
    g = torch.Generator().manual_seed(seed + 1)
    prompt, text = module.prompt, module.backbone.text
    width, dim = prompt.context.shape[-1], prompt.ests.queries.shape[-1]
    state = released_state(module, seed)
    for official in ENCODER:
        state[f"vae_encoder.{official}.weight"] = torch.randn(dim, dim, generator=g)
        state[f"vae_encoder.{official}.bias"] = torch.randn(dim, generator=g)
    state["projector.fc.0.weight"] = torch.randn(dim, 48, generator=g)
    state["projector.fc.0.bias"] = torch.randn(dim, generator=g)
    state["projector_cls.fc.0.weight"] = torch.randn(dim, dim, generator=g)
    state["projector_cls.fc.0.bias"] = torch.randn(dim, generator=g)
    extractor = {key.removeprefix("extractor."): value for key, value in state.items() if key.startswith("extractor.")}
    state |= {f"extractor_.{key}": torch.randn(value.shape, generator=g) for key, value in extractor.items()}
    ids = text.tokenize([" ".join([PLACEHOLDER] * 14) + "."]).to(torch.int32)  # the official tokenize gives int32
    with torch.no_grad():
        embedded = text.embed_tokens(ids.long())[0]
    for name in ("pos", "neg"):
        state[f"tokenized_prompts_{name}"] = ids.reshape(1, 1, -1)
        state[f"token_prefix_{name}"] = embedded[:1].reshape(1, 1, 1, width).clone()
        state[f"token_suffix_{name}"] = embedded[15:].reshape(1, 1, -1, width).clone()
    return state


def save_like_train_py(path, state):
    """What the official train.py writes: `torch.save({"prompt_learner": parameter_dict}, path)`."""
    torch.save({"prompt_learner": state}, path)
    return path


def assert_in_place(prompt, state):
    """Every official tensor equals its zsad parameter."""
    assert torch.equal(prompt.context[0], state["ctx_pos"][0, 0])  # ctx_pos is the normal prompt
    assert torch.equal(prompt.context[1], state["ctx_neg"][0, 0])
    assert torch.equal(prompt.ests.queries[0], state["t_n"]) and torch.equal(prompt.ests.queries[1], state["t_a"])
    extractor = dict(prompt.ests.extractor.named_parameters())
    for official, ours in EXTRACTOR.items():
        assert torch.equal(extractor[ours], state[f"extractor.{official}"]), official
    for index in (0, 2):
        assert torch.equal(prompt.vae.decoder[index].weight, state[f"vae_decoder.net.{index}.weight"])
        assert torch.equal(prompt.vae.decoder[index].bias, state[f"vae_decoder.net.{index}.bias"])
    for i in range(8):
        assert torch.equal(prompt.deep[i], state[f"compound_prompts_text.{i}"])


def test_released_file_lands_in_place_and_the_encoder_keeps_its_init(module, tmp_path):
    state = released_state(module)
    official = read(save_like_train_py(tmp_path / "epoch_5.pth", state))
    assert set(official) == set(state) and len(official) == 28
    converted = convert(official, module)
    assert set(converted) == set(module.state_dict())
    encoder_keys = [key for key in converted if key.startswith(("prompt.vae.encoder", "prompt.vae.to_"))]
    assert len(encoder_keys) == 6
    for key in encoder_keys:  # not in the file: the module's own initialisation, untouched
        assert torch.equal(converted[key], module.state_dict()[key])
    copy = module_from_configs([*PRESET, TINY])
    copy.load_state_dict(converted)
    assert_in_place(copy.prompt, state)


def test_an_unfiltered_state_dict_maps_the_encoder_and_drops_the_rest(module):
    state = full_state(module)
    copy = module_from_configs([*PRESET, TINY])
    copy.load_state_dict(convert(state, copy))
    assert_in_place(copy.prompt, state)
    vae = copy.prompt.vae
    for official, layer in (("net.0", vae.encoder[0]), ("mean", vae.to_mean), ("log_var", vae.to_logvar)):
        assert torch.equal(layer.weight, state[f"vae_encoder.{official}.weight"])
        assert torch.equal(layer.bias, state[f"vae_encoder.{official}.bias"])


def test_import_then_load_and_cli_test(module, tmp_path, run_cli, monkeypatch, import_provenance):
    state = released_state(module, seed=3)
    path = save_like_train_py(tmp_path / "epoch_5.pth", state)
    out = import_checkpoint(path, "cops", "mvtec", tmp_path / "cops_mvtec.ckpt", extra_configs=[TINY])
    saved = torch.load(out, weights_only=True)
    provenance = saved["zsad"]["provenance"]
    import_provenance(
        provenance, path, "cops", ("backbone/vit_l_14_336_openai", "method/cops", "backbone/tiny"), "mvtec"
    )
    head = saved["hyper_parameters"]["head"]["init_args"]
    prompt = saved["hyper_parameters"]["prompt"]["init_args"]
    assert head["preset"] == "by_dataset" and head["neighbor_kernel"] == 3  # test constants follow each dataset
    assert prompt["neighbor_kernel"] == 3 and prompt["test_neighbor_kernel"] == "by_dataset"

    detector = zsad.load(out, device="cpu")
    assert_in_place(detector.module.prompt, state)
    prediction = detector(torch.zeros(2, 3, 64, 64))
    assert prediction.anomaly_maps.shape == (2, 64, 64) and torch.isfinite(prediction.image_scores).all()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    args = [
        *(a for config in SMOKE for a in ("-c", str(config))),
        f"--ckpt_path={out}",
        "--trainer.enable_progress_bar=false",
    ]
    pinned = [  # the docs' way to fix one dataset's constants for a whole run (the preset follows each dataset)
        "--model.head.init_args.preset=others",
        "--model.head.init_args.neighbor_kernel=null",
        "--model.prompt.init_args.test_neighbor_kernel=5",
    ]
    code, output = run_cli(["test", *args, *pinned])
    assert code == 0, output
    results = json.loads(next(tmp_path.glob("runs/**/results.json")).read_text())
    assert results["checkpoint"]["provenance"]["source"]["sha256"] == provenance["source"]["sha256"]
    assert results["model"]["head"]["init_args"]["preset"] == "others"
    assert results["model"]["prompt"]["init_args"]["test_neighbor_kernel"] == 5


def test_the_import_command_binds_the_visa_trained_preset(module, tmp_path, run_cli):
    path = save_like_train_py(tmp_path / "epoch_10.pth", released_state(module))
    out = tmp_path / "visa.ckpt"
    code, output = run_cli(["import", "cops", str(path), "--trained-on", "visa", "--out", str(out), "-c", str(TINY)])
    assert code == 0, output
    saved = torch.load(out, weights_only=True)
    assert saved["zsad"]["provenance"]["aux"][0]["dataset"] == "visa"
    assert saved["zsad"]["provenance"]["preset"][1] == "configs/method/cops_visa.yaml"
    head = saved["hyper_parameters"]["head"]["init_args"]
    assert head["preset"] == "by_dataset" and head["neighbor_kernel"] == 5  # VisA's training K
    code, output = run_cli(["import", "--help"])
    assert "cops" in output and "epoch_10" in output


EDITS = {
    "unknown": ({"compound_prompts_text.8": (4, 64)}, r"unknown keys \['compound_prompts_text.8'\]"),
    "unknown-extractor": ({"extractor.ln_3.weight": (32,)}, r"unknown keys \['extractor.ln_3.weight'\]"),
    "missing": ({"t_a": None}, r"missing keys \['t_a'\]"),
    "missing-encoder": ({"vae_encoder.log_var.bias": None}, r"missing keys \['vae_encoder.log_var.bias'\]"),
    "misshapen": (
        {"ctx_pos": (1, 1, 12, 64)},
        r"ctx_pos has shape \(1, 1, 12, 64\) but .* needs \(1, 1, 14, 64\)",
    ),
    "misshapen-mlp": (
        {"extractor.mlp.c_fc.weight": (768, 768)},
        r"c_fc.weight has shape \(768, 768\) .* \(32, 32\)",
    ),
    "misshapen-unused": ({"extractor_.ln_1.weight": (768,)}, r"unused keys \['extractor_.ln_1.weight'\] do not fit"),
    "prototype-count": ({"t_n": (4, 32), "t_a": (4, 32)}, r"t_n has shape \(4, 32\) but this preset needs \(6, 32\)"),
}
"""Edits of an unfiltered official state (a shape to replace a tensor with zeros, None to remove it) and the error."""


@pytest.mark.parametrize("case", list(EDITS))
def test_unknown_missing_and_misshapen_keys_are_named(module, case):
    edits, message = EDITS[case]
    state = full_state(module)
    for key, shape in edits.items():
        if shape is None:
            del state[key]
        else:
            state[key] = torch.zeros(shape)
    with pytest.raises(CheckpointError, match=message) as raised:
        convert(state, module)
    assert "\n" not in str(raised.value)


def test_rebuilt_buffers_are_checked_not_trusted(module):
    state = full_state(module)
    state["token_suffix_neg"] = state["token_suffix_neg"].clone()
    state["token_suffix_neg"][0, 0, 5, 3] += 0.25
    with pytest.raises(
        CheckpointError, match=r"Buffer token_suffix_neg differs .* by up to 0.25: .*other CLIP weights"
    ):
        convert(state, module)
    state = full_state(module)
    state["tokenized_prompts_pos"] = state["tokenized_prompts_pos"].clone()
    state["tokenized_prompts_pos"][0, 0, 13] = 1000
    with pytest.raises(CheckpointError, match=r"Buffer tokenized_prompts_pos holds other token ids"):
        convert(state, module)
    state = full_state(module)
    state["token_prefix_pos"] = torch.zeros(1, 1, 2, 64)
    with pytest.raises(CheckpointError, match=r"Buffer token_prefix_pos has shape \(1, 1, 2, 64\)"):
        convert(state, module)


def test_the_wrong_model_or_file_is_refused(tmp_path, foreign_files_refused):
    ablated = module_from_configs([PRESET[0], ROOT / "configs" / "ablation" / "cops_no_icts.yaml", TINY])
    with pytest.raises(CheckpointError, match=r"needs the cops prompt with ESTS, ICTS and deep prompts"):
        convert({}, ablated)
    foreign_files_refused(read, tmp_path)
