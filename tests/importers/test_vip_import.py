"""ViP2-CLIP's official checkpoint format (as train.py writes it) imported onto the vip preset, then tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zsad
from zsad.checkpoints.files import read_checkpoint
from zsad.errors import CheckpointError
from zsad.importers import import_checkpoint
from zsad.importers.vip import convert, read
from zsad.inference.configs import module_from_configs

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "backbone" / "tiny.yaml"
PRESET = [ROOT / "configs" / "backbone" / "vit_l_14_336_openai.yaml", ROOT / "configs" / "method" / "vip.yaml", TINY]
N_CTX, N_CLS = 7, 3  # the official test.sh


@pytest.fixture(scope="module")
def module():
    """The vip preset on the tiny random CLIP, built as the importer builds it (preset configs, then tiny)."""
    return module_from_configs(PRESET)


def official_buffers(module):
    """The ICA buffers as the official constructor makes them: both states' pieces cut from the "damaged" sentence,
    each state's own token ids (int32, as the official tokenizer returns them)."""
    text = module.backbone.text
    context, classes = " ".join(["X"] * N_CTX), " ".join(["X"] * N_CLS)
    good, damaged = (f"{context} {word} {classes}" for word in ("good", "damaged"))
    ids = {"pos": text.tokenize([good]).int(), "neg": text.tokenize([damaged]).int()}
    with torch.no_grad():
        embedded = text.embed_tokens(ids["neg"].long()).float()
    buffers = {}
    for state in ("pos", "neg"):
        buffers[f"token_prefix_{state}"] = embedded[:, :1].clone()
        buffers[f"token_middle_{state}"] = embedded[:, 1 + N_CTX : 2 + N_CTX].clone()
        buffers[f"token_suffix_{state}"] = embedded[:, 2 + N_CTX + N_CLS :].clone()
        buffers[f"tokenized_prompts_{state}"] = ids[state]
    return buffers


def official_document(module, seed=0, patch_selecter=False):
    """A file in train.py's format, sized from the tiny model: random ICA and FGP weights, the true buffers."""
    g = torch.Generator().manual_seed(seed)
    width = module.backbone.text.width
    dim = module.backbone.text.embed_dim
    hidden = dim // 2
    ica = {
        "cls_ctx": torch.randn(N_CLS, width, generator=g),
        "ctx_pos": torch.randn(N_CTX, width, generator=g),
        "ctx_neg": torch.randn(N_CTX, width, generator=g),
        "cls_prompter.bias": torch.randn(1, dim, generator=g),
    }
    for k in range(N_CLS):
        ica[f"cls_prompter.fc.{k}.0.weight"] = torch.randn(hidden, dim, generator=g)
        ica[f"cls_prompter.fc.{k}.0.bias"] = torch.randn(hidden, generator=g)
        ica[f"cls_prompter.fc.{k}.2.weight"] = torch.randn(width, hidden, generator=g)
        ica[f"cls_prompter.fc.{k}.2.bias"] = torch.randn(width, generator=g)
    ica.update(official_buffers(module))
    fgp = {"prompt_temp_l1": torch.tensor(2.6593)}
    for name in ("q_proj_pre", "k_proj_pre_1", "v_proj_pre_1", "proj_post_t"):
        fgp[f"{name}.weight"] = torch.randn(dim, dim, 1, generator=g)
        fgp[f"{name}.bias"] = torch.randn(dim, generator=g)
    document = {"prompt_learner": ica, "Zero_try": fgp}
    if patch_selecter:
        document["patch_selecter"] = {
            "attention_net.0.weight": torch.randn(dim // 4, dim, generator=g),
            "attention_net.0.bias": torch.randn(dim // 4, generator=g),
            "attention_net.2.weight": torch.randn(1, dim // 4, generator=g),
            "attention_net.2.bias": torch.randn(1, generator=g),
        }
    return document


def save(document, path):
    torch.save(document, path)
    return path


def assert_landed(prompt, document):
    """Every trained official tensor equals the zsad parameter it maps to."""
    ica, fgp = document["prompt_learner"], document["Zero_try"]
    assert torch.equal(prompt.context[0], ica["ctx_pos"]) and torch.equal(prompt.context[1], ica["ctx_neg"])
    assert torch.equal(prompt.class_tokens, ica["cls_ctx"])
    assert torch.equal(prompt.meta_bias, ica["cls_prompter.bias"][0])
    for k, net in enumerate(prompt.meta_nets):
        for layer in (0, 2):
            assert torch.equal(net[layer].weight, ica[f"cls_prompter.fc.{k}.{layer}.weight"])
            assert torch.equal(net[layer].bias, ica[f"cls_prompter.fc.{k}.{layer}.bias"])
    for official, ours in (("q_proj_pre", "query"), ("k_proj_pre_1", "key"), ("v_proj_pre_1", "value")):
        assert torch.equal(getattr(prompt.fgp, ours).weight, fgp[f"{official}.weight"][..., 0])
        assert torch.equal(getattr(prompt.fgp, ours).bias, fgp[f"{official}.bias"])
    assert torch.equal(prompt.fgp.output.weight, fgp["proj_post_t.weight"][..., 0])
    assert torch.equal(prompt.fgp.output.bias, fgp["proj_post_t.bias"])


def test_train_py_file_lands_in_every_parameter(module, tmp_path):
    document = official_document(module)
    state = convert(read(save(document, tmp_path / "epoch_10.pth")), module)
    assert set(state) == set(module.state_dict())
    assert all(not key.startswith("backbone.") for key in state)
    module.load_state_dict(state)
    assert_landed(module.prompt, document)


def test_import_load_and_cli_test(module, tmp_path, monkeypatch, run_cli, import_provenance):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    document = official_document(module, seed=1)
    source = save(document, tmp_path / "mvtec_train_epoch_10.pth")
    out = import_checkpoint(source, "vip", "visa", tmp_path / "vip_visa.ckpt", extra_configs=[TINY])
    detector = zsad.load(out, device="cpu")
    assert_landed(detector.module.prompt, document)
    provenance = read_checkpoint(out)["zsad"]["provenance"]
    import_provenance(
        provenance, source, "vip", ("backbone/vit_l_14_336_openai", "method/vip", "backbone/tiny"), "visa"
    )
    data, trainer = (str(ROOT / "configs" / name) for name in ("data/synthetic.yaml", "trainer/smoke.yaml"))
    code, output = run_cli(
        ["test", "-c", data, "-c", trainer, f"--ckpt_path={out}", "--trainer.enable_progress_bar=false"]
    )
    assert code == 0, output
    results = json.loads(next(tmp_path.glob("runs/smoke/lightning_logs/*/results.json")).read_text())
    assert results["model"]["prompt"]["class_path"] == "zsad.prompts.vip.ViPPrompt"
    assert 0.0 <= results["mean"]["image_auroc"] <= 1.0


def test_the_command_line_import(module, tmp_path, run_cli):
    source = save(official_document(module, seed=2), tmp_path / "epoch_10.pth")
    out = tmp_path / "vip.ckpt"
    args = ["import", "vip", str(source), "--trained-on", "mvtec", "--out", str(out), "-c", str(TINY)]
    code, output = run_cli(args)
    assert code == 0, output
    assert read_checkpoint(out)["zsad"]["provenance"]["aux"][0]["dataset"] == "mvtec"


def test_unused_official_tensors_are_dropped(module, tmp_path):
    document = official_document(module, patch_selecter=True)
    state = convert(read(save(document, tmp_path / "other_version.pth")), module)
    assert set(state) == set(module.state_dict())  # prompt_temp_l1 and patch_selecter are left out


def test_unknown_missing_and_misshapen_keys_are_named(module, tmp_path):
    official = read(save(official_document(module), tmp_path / "epoch_10.pth"))
    with pytest.raises(CheckpointError, match=r"unknown keys \['Zero_try.extra'\]"):
        convert({**official, "Zero_try.extra": torch.zeros(2)}, module)
    fewer = {k: v for k, v in official.items() if k != "prompt_learner.cls_prompter.fc.2.2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \['prompt_learner.cls_prompter.fc.2.2.bias'\]"):
        convert(fewer, module)
    longer = {**official, "prompt_learner.ctx_pos": torch.zeros(9, 64)}
    with pytest.raises(CheckpointError, match=r"ctx_pos has shape \(9, 64\) but this preset needs \(7, 64\)"):
        convert(longer, module)
    selector = {**official, "patch_selecter.attention_net.0.weight": torch.zeros(192, 768)}
    with pytest.raises(CheckpointError, match=r"attention_net.0.weight has shape \(192, 768\) but this preset needs"):
        convert(selector, module)


def test_a_rebuilt_buffer_that_differs_is_refused(module, tmp_path):
    official = read(save(official_document(module), tmp_path / "epoch_10.pth"))
    shifted = official["prompt_learner.token_suffix_pos"].clone()
    shifted[0, 3, 5] += 0.25
    with pytest.raises(CheckpointError, match=r"buffer prompt_learner.token_suffix_pos differs .* by up to 0.25"):
        convert({**official, "prompt_learner.token_suffix_pos": shifted}, module)
    tokens = official["prompt_learner.tokenized_prompts_neg"].clone()
    tokens[0, 8] = 1000
    with pytest.raises(CheckpointError, match=r"buffer prompt_learner.tokenized_prompts_neg differs"):
        convert({**official, "prompt_learner.tokenized_prompts_neg": tokens}, module)


def test_unreadable_or_foreign_files_are_refused(module, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read(tmp_path / "missing.pth")
    torch.save({"prompt_learner": {"cls_ctx": torch.zeros(3, 64)}}, tmp_path / "ica_only.pth")
    with pytest.raises(CheckpointError, match=r"has no 'Zero_try' state dict"):
        read(tmp_path / "ica_only.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        read(tmp_path / "list.pth")
    static = module_from_configs([PRESET[0], ROOT / "configs" / "method" / "static.yaml", TINY])
    with pytest.raises(CheckpointError, match="needs a model with the vip prompt"):
        convert(read(save(official_document(module), tmp_path / "epoch_10.pth")), static)
