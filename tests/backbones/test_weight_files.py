"""Weight files in every format users hold, written at test time from tiny random CLIPs, and files that are none."""

from __future__ import annotations

import copy
import json
import pickle
import zipfile
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from zsad.backbones import CLIPBackbone, create_clip
from zsad.backbones.loading import activation_name
from zsad.backbones.weight_files import FROM_WEIGHTS, OPENAI_META_KEYS, read_weight_file
from zsad.errors import ConfigError, WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (6, 12, 18, 24)
UNREGISTERED_CONFIG = {  # widths, depths, patch, grid and context length that no open_clip config has
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 48, "layers": 3, "width": 192, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
HEADS64_NAME = "zsad-test-heads64"
HEADS64_CONFIG = {  # zsad-tiny's layout (so the method configs' layers apply) with 64-wide heads
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 24, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 12},
}


class StateHolder(nn.Module):
    """A module that only holds tensors under given dotted names, as OpenAI's TorchScript archives do."""

    def __init__(self, state_dict: dict[str, Tensor]) -> None:
        super().__init__()
        for name, value in state_dict.items():
            *parents, leaf = name.split(".")
            module: nn.Module = self
            for parent in parents:
                if not hasattr(module, parent):
                    module.add_module(parent, nn.Module())
                module = getattr(module, parent)
            if value.is_floating_point():
                module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
            else:
                module.register_buffer(leaf, value.clone())


def openai_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """OpenAI's layout: the same key names, float16 matrices (as OpenAI ships them) and three int64 entries."""
    half = copy.deepcopy(model)
    open_clip.model.convert_weights_to_lp(half, dtype=torch.float16)
    state_dict = dict(half.state_dict())
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    state_dict["input_resolution"] = torch.tensor(grid * model.visual.patch_size[0])
    state_dict["context_length"] = torch.tensor(model.context_length)
    state_dict["vocab_size"] = torch.tensor(model.vocab_size)
    return state_dict


def save_torchscript(state_dict: dict[str, Tensor], path: Path) -> Path:
    with pytest.warns(FutureWarning):  # TorchScript is deprecated, and still what clip.load caches
        torch.jit.script(StateHolder(state_dict)).save(str(path))
    return path


def round_to_float16(model: nn.Module) -> nn.Module:
    """Make every weight float16-representable, so float16 and float32 files hold the same values."""
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())
    return model


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return round_to_float16(create_clip("zsad-tiny", None))


@pytest.fixture(scope="module")
def files(source, tmp_path_factory) -> dict[str, Path]:
    """The same weights in every accepted format (names that do not match the content are on purpose)."""
    folder = tmp_path_factory.mktemp("weights")
    weights = {key: value.contiguous() for key, value in source.state_dict().items()}
    paths = {
        "torchscript": save_torchscript(openai_state_dict(source), folder / "ViT-tiny.pt"),
        "openai_state_dict": folder / "openai_state_dict.pt",
        "open_clip": folder / "open_clip_pytorch_model.bin",
        "open_clip_training_checkpoint": folder / "epoch_3.pt",
        "safetensors": folder / "open_clip_model.safetensors",
        "safetensors_named_pt": folder / "safetensors_content.pt",
    }
    torch.save(openai_state_dict(source), paths["openai_state_dict"])
    torch.save(weights, paths["open_clip"])
    wrapped = {"epoch": 3, "name": "tiny", "state_dict": {f"module.{key}": value for key, value in weights.items()}}
    torch.save(wrapped, paths["open_clip_training_checkpoint"])
    save_file(weights, paths["safetensors"])
    save_file(weights, paths["safetensors_named_pt"])
    return paths


@pytest.fixture(scope="module")
def reference(files) -> CLIPBackbone:
    return tiny_backbone(files["open_clip"])


def tiny_backbone(pretrained: Path, model_name: str = "zsad-tiny", **kwargs) -> CLIPBackbone:
    return CLIPBackbone(model_name, str(pretrained), image_size=64, layers=LAYERS, vv_start_layer=6, **kwargs)


def assert_same_features(backbone: CLIPBackbone, expected: CLIPBackbone, images: Tensor) -> None:
    with torch.no_grad():
        got, want = backbone(images), expected(images)
        tokens = backbone.text.tokenize(["a photo of a damaged object."])
        text = backbone.text(backbone.text.embed_tokens(tokens), backbone.text.eot_positions(tokens))
        expected_text = expected.text(expected.text.embed_tokens(tokens), expected.text.eot_positions(tokens))
    assert torch.equal(got.global_embedding, want.global_embedding)
    assert all(torch.equal(a, b) for a, b in zip(got.patch_tokens, want.patch_tokens, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got.vv_tokens, want.vv_tokens, strict=True))
    assert torch.equal(text, expected_text)


def assert_same_weights(model: nn.Module, source: nn.Module) -> None:
    loaded = model.state_dict()
    for key, value in source.state_dict().items():
        assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value), key


@pytest.mark.parametrize(
    "kind",
    ["torchscript", "openai_state_dict", "open_clip", "open_clip_training_checkpoint", "safetensors",
     "safetensors_named_pt"],
)  # fmt: skip
def test_every_format_loads_the_source_weights_bit_for_bit(kind, files, source, reference, images):
    backbone = tiny_backbone(files[kind])
    assert_same_weights(backbone.visual, source.visual)
    assert torch.equal(backbone.text.token_embedding.weight, source.token_embedding.weight)
    with torch.no_grad():
        assert torch.equal(backbone.reference_global_embedding(images), source.visual(images))
    assert_same_features(backbone, reference, images)


@pytest.mark.parametrize(
    ("kind", "container", "openai"),
    [
        ("torchscript", "TorchScript archive", True),
        ("openai_state_dict", "torch.save file", True),
        ("open_clip", "torch.save file", False),
        ("open_clip_training_checkpoint", "torch.save file", False),
        ("safetensors", "safetensors file", False),
        ("safetensors_named_pt", "safetensors file", False),  # the content decides, not the suffix
    ],
)
def test_format_is_detected_from_the_content(kind, container, openai, files):
    weights = read_weight_file(files[kind])
    assert weights.container == container and weights.is_openai is openai
    assert not set(OPENAI_META_KEYS) & set(weights.state_dict)
    if openai:
        assert weights.openai_meta == {"input_resolution": 64, "context_length": 77, "vocab_size": 49408}


def test_openai_format_files_get_quick_gelu(files):
    """OpenAI trained with QuickGELU: an OpenAI-format file gets it even under a GELU name; open_clip's does not."""
    assert activation_name(create_clip("zsad-tiny-gelu", str(files["torchscript"]))) == "QuickGELU"
    assert activation_name(create_clip("zsad-tiny-gelu", str(files["openai_state_dict"]))) == "QuickGELU"
    assert activation_name(create_clip("zsad-tiny-gelu", str(files["open_clip"]))) == "GELU"
    assert activation_name(create_clip(FROM_WEIGHTS, str(files["open_clip"]))) == "GELU"
    assert activation_name(create_clip(FROM_WEIGHTS, str(files["open_clip"]), force_quick_gelu=True)) == "QuickGELU"


@pytest.fixture(scope="module")
def heads64_files(tmp_path_factory) -> dict[str, Path]:
    """Files of a registered architecture with 64-wide heads, the width that from-weights assumes."""
    folder = tmp_path_factory.mktemp("heads64")
    config = {**HEADS64_CONFIG, "vision_cfg": {**HEADS64_CONFIG["vision_cfg"], "head_width": 64}}
    (folder / f"{HEADS64_NAME}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    source = round_to_float16(create_clip(HEADS64_NAME, None))
    weights = {key: value.contiguous() for key, value in source.state_dict().items()}
    save_file(weights, folder / "heads64.safetensors")
    return {
        "torchscript": save_torchscript(openai_state_dict(source), folder / "heads64.pt"),
        "safetensors": folder / "heads64.safetensors",
    }


@pytest.mark.parametrize("kind", ["torchscript", "safetensors"])
def test_from_weights_equals_the_named_architecture(kind, heads64_files, images):
    path = str(heads64_files[kind])
    force = kind != "torchscript"  # open_clip's layout does not say which activation it was trained with
    inferred = create_clip(FROM_WEIGHTS, path, force_quick_gelu=force)
    named = create_clip(HEADS64_NAME, path)
    assert repr(inferred) == repr(named)
    assert [module_signature(m) for m in inferred.modules()] == [module_signature(m) for m in named.modules()]
    assert inferred.state_dict().keys() == named.state_dict().keys()
    assert all(torch.equal(value, named.state_dict()[key]) for key, value in inferred.state_dict().items())
    assert not any(parameter.requires_grad for parameter in inferred.parameters())
    with torch.no_grad():
        tokens = open_clip.get_tokenizer(HEADS64_NAME)(["a photo of a damaged object."])
        assert torch.equal(inferred.encode_image(images), named.encode_image(images))
        assert torch.equal(inferred.encode_text(tokens), named.encode_text(tokens))
    backbone = tiny_backbone(heads64_files[kind], model_name=FROM_WEIGHTS, force_quick_gelu=force)
    assert_same_features(backbone, tiny_backbone(heads64_files[kind], model_name=HEADS64_NAME), images)
    assert backbone.text.tokenizer.context_length == 77


def module_signature(module: nn.Module) -> tuple:
    """Class and the attributes that repr leaves out (head counts) of one module."""
    return type(module).__name__, getattr(module, "num_heads", None), getattr(module, "batch_first", None)


def test_from_weights_builds_an_architecture_open_clip_does_not_name(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        source = round_to_float16(open_clip.CLIP(**copy.deepcopy(UNREGISTERED_CONFIG))).eval()
    source.requires_grad_(False)  # frozen like the backbone: attention takes another kernel when grads are off
    path = save_torchscript(openai_state_dict(source), tmp_path / "ViT-unregistered.pt")
    backbone = CLIPBackbone(FROM_WEIGHTS, str(path), image_size=None, layers=(1, 3), vv_start_layer=1)
    assert backbone.image_size == (48, 48) and backbone.grid == (3, 3) and backbone.embed_dim == 48
    assert backbone.vision_width == 192 and len(backbone.visual.transformer.resblocks) == 3
    assert backbone.visual.transformer.resblocks[0].attn.num_heads == 3
    assert backbone.text.transformer.resblocks[0].attn.num_heads == 2
    assert backbone.text.depth == 2 and backbone.text.context_length == 24
    assert activation_name(source) == activation_name_of(backbone) == "QuickGELU"
    assert_same_weights(backbone.visual, source.visual)
    tokens = backbone.text.tokenize(["a photo of a flawless object."])
    assert tokens.shape == (1, 24)  # the CLIP tokenizer at the file's context length
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(backbone.reference_global_embedding(images), source.visual(images))
        text = backbone.text(backbone.text.embed_tokens(tokens), backbone.text.eot_positions(tokens), truncate=False)
        assert torch.equal(text, source.encode_text(tokens, normalize=True))
        features = backbone(images)
    assert [tuple(t.shape) for t in features.patch_tokens] == [(2, 9, 48)] * 2


def activation_name_of(backbone: CLIPBackbone) -> str:
    return type(backbone.visual.transformer.resblocks[0].mlp[1]).__name__


class RunsWhenUnpickled:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def write_refused_file(kind: str, path: Path) -> str:
    """Write a file that is no CLIP weight file; return what the error should say was found."""
    if kind == "garbage":
        path.write_bytes(bytes(range(7, 200)))
        return "unrecognised binary data"
    if kind == "text":
        path.write_text("model: ViT-L-14-336\nweights: elsewhere\n")
        return "text starting 'model: ViT-L'"
    if kind == "image":
        Image.new("RGB", (8, 8)).save(path, format="PNG")
        return "a PNG image"
    if kind == "empty":
        path.write_bytes(b"")
        return "an empty file"
    if kind in {"pickle", "pickle_protocol_2"}:
        protocol = 2 if kind == "pickle_protocol_2" else pickle.HIGHEST_PROTOCOL
        path.write_bytes(pickle.dumps({"model": RunsWhenUnpickled(path.with_suffix(".marker"))}, protocol=protocol))
        return "a pickle of Python objects"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights.txt", "none")
        return "a zip archive that is neither"
    if kind == "tensor_list":
        torch.save([torch.zeros(2)], path)
        return "a torch.save file holding a list"
    if kind == "not_clip":
        torch.save({"encoder.weight": torch.zeros(2)}, path)
        return "a state dict of 1 entries without CLIP image-tower keys"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["garbage", "text", "image", "empty", "pickle", "pickle_protocol_2", "zip", "tensor_list", "not_clip"]
)
def test_other_files_are_refused_in_one_line(kind, tmp_path):
    path = tmp_path / "ViT-L-14-336px.pt"
    found = write_refused_file(kind, path)
    with pytest.raises(WeightsUnavailableError) as caught:
        CLIPBackbone("zsad-tiny", str(path), image_size=64)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"Cannot load CLIP weights from '{path}': found {found}")
    assert "Accepted: an OpenAI TorchScript archive" in message and ".safetensors" in message
    assert not path.with_suffix(".marker").exists()  # the pickled object never ran


def test_openai_meta_entries_must_be_consistent_integers(source, tmp_path):
    state_dict = openai_state_dict(source)
    torch.save({**state_dict, "context_length": torch.tensor(77.0)}, tmp_path / "float.pt")
    with pytest.raises(ConfigError, match=r"float.pt': OpenAI meta entry 'context_length' is a torch.float32"):
        create_clip("zsad-tiny", str(tmp_path / "float.pt"))
    torch.save({**state_dict, "vocab_size": torch.tensor(1000)}, tmp_path / "contradicts.pt")
    with pytest.raises(ConfigError, match=r"vocab_size=1000 contradicts the weights, which imply 49408"):
        create_clip("zsad-tiny", str(tmp_path / "contradicts.pt"))


def test_a_file_of_another_architecture_names_the_difference(files):
    with pytest.raises(
        ConfigError,
        match=r"open_clip_model.safetensors' \(an open_clip-format safetensors file\) "
        r"does not fit 'ViT-B-32': 144 unexpected keys \(e.g. '[^']+'\), \d+ shape differences",
    ) as caught:
        create_clip("ViT-B-32", str(files["safetensors"]))
    message = str(caught.value)
    assert f"model_name: {FROM_WEIGHTS}" in message and "\n" not in message


def test_from_weights_needs_a_weight_file(files, tmp_path):
    with pytest.raises(ConfigError, match=r"from-weights builds the architecture from the weight file"):
        create_clip(FROM_WEIGHTS, None)
    with pytest.raises(ConfigError, match=r"needs a weight file, not the tag 'openai'"):
        create_clip(FROM_WEIGHTS, "openai")
    with pytest.raises(WeightsUnavailableError, match=r"does not exist"):
        create_clip(FROM_WEIGHTS, str(tmp_path / "absent.pt"))
    with pytest.raises(WeightsUnavailableError, match=r"is a folder; set it to the weight file inside"):
        create_clip("zsad-tiny", str(tmp_path))


def test_local_dir_weights_are_not_called_random(files, source, tmp_path, caplog):
    folder = tmp_path / "tiny-folder"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config("zsad-tiny"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_pytorch_model.bin").write_bytes(files["open_clip"].read_bytes())
    with caplog.at_level("WARNING"):
        model = create_clip(f"local-dir:{folder}", None)
    assert "RANDOM" not in caplog.text
    assert_same_weights(model, source)
    (folder / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(WeightsUnavailableError, match=r"Could not load weights 'local-dir:"):
        create_clip(f"local-dir:{folder}", None)


def test_zsad_fit_runs_on_an_openai_torchscript_archive(heads64_files, tmp_path, monkeypatch, run_cli, caplog):
    """The documented offline recipe, end to end on the command line, with no Python step."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
    args = ["fit", *[arg for c in configs for arg in ("-c", str(ROOT / "configs" / c))]]
    args += [
        f"--model.backbone.init_args.model_name={FROM_WEIGHTS}",
        f"--model.backbone.init_args.pretrained={heads64_files['torchscript']}",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
    ]
    with caplog.at_level("INFO"):
        code, out = run_cli(args)
    assert code == 0, out
    assert list((tmp_path / "runs").rglob("last.ckpt"))
    saved_config = next((tmp_path / "runs").rglob("config.yaml")).read_text()
    assert f"model_name: {FROM_WEIGHTS}" in saved_config and "heads64.pt" in saved_config
    assert "RANDOM" not in caplog.text + out


def test_from_weights_refuses_what_it_cannot_build(source, tmp_path):
    weights = dict(source.state_dict())
    torch.save({key: value for key, value in weights.items() if key != "visual.proj"}, tmp_path / "no_proj.pt")
    with pytest.raises(ConfigError, match=r"no_proj.pt' \(an open_clip-format torch.save file\) has no ViT image"):
        create_clip(FROM_WEIGHTS, str(tmp_path / "no_proj.pt"))
    with pytest.raises(ConfigError, match=r"Unknown open_clip model 'from_weights'.*Did you mean 'from-weights'"):
        create_clip("from_weights", str(tmp_path / "no_proj.pt"))
