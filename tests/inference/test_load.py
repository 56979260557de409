"""`zsad.load`: a checkpoint or config files as a callable detector over paths, PIL images and tensors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tests.inference.conftest import config_paths

import zsad
from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.errors import ConfigError, DataError
from zsad.heads.multiclass import MultiClassHead
from zsad.inference import Detector, Prediction
from zsad.prompts.dapo import DAPOPrompt


@pytest.fixture(scope="module")
def detector(trained):
    return zsad.load(trained.checkpoint, device="cpu", batch_size=2)


def test_load_restores_the_trained_prompts_in_eval_mode(trained, detector):
    saved = torch.load(trained.checkpoint, weights_only=True)["state_dict"]
    assert isinstance(detector, Detector) and not detector.module.training
    assert torch.equal(detector.module.prompt.context, saved["prompt.context"])
    assert detector.image_size == 64 and detector.device == torch.device("cpu")


def test_paths_pil_images_and_tensors_agree(trained, detector):
    paths = [trained.image("ring", "good", 0), trained.image("ring", "good", 1), trained.image("capsule", "good", 0)]
    from_paths = detector(paths)  # three images, batch size 2: two forward passes
    assert isinstance(from_paths, Prediction) and len(from_paths) == 3
    assert from_paths.anomaly_maps.shape == (3, 64, 64) and from_paths.defect_types is None
    single = detector(str(paths[0]))
    assert torch.allclose(single.image_scores, from_paths.image_scores[:1], atol=1e-6)
    pictures = [Image.open(p) for p in paths]
    assert torch.allclose(detector(pictures).image_scores, from_paths.image_scores, atol=1e-6)
    batch = torch.stack([detector.transform(p.convert("RGB")) for p in pictures])
    from_tensor = detector(batch)
    assert torch.allclose(from_tensor.image_scores, from_paths.image_scores, atol=1e-6)
    assert torch.allclose(from_tensor.anomaly_maps, from_paths.anomaly_maps, atol=1e-6)
    with torch.no_grad():  # the detector is the module's own forward
        reference = detector.module(batch)
    assert torch.allclose(from_tensor.image_scores, reference.image_score, atol=1e-6)


def test_maps_come_back_at_each_image_size(trained, detector):
    image = Image.open(trained.image()).convert("RGB")
    wide, tall = image.resize((96, 40)), image.resize((30, 70))
    prediction = detector([wide, tall])
    assert isinstance(prediction.anomaly_maps, list)  # sizes differ: one map per image
    assert prediction.anomaly_maps[0].shape == (40, 96) and prediction.anomaly_maps[1].shape == (70, 30)
    assert detector(torch.zeros(2, 3, 48, 80)).anomaly_maps.shape == (2, 48, 80)  # resized in and out


def test_bad_inputs_are_clear_errors(tmp_path, detector):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(DataError, match=r"broken\.png"):
        detector([broken])
    with pytest.raises(DataError, match=r"float image batch \[N, 3, H, W\]"):
        detector(torch.zeros(2, 64, 64, dtype=torch.uint8))
    with pytest.raises(DataError, match="empty"):
        detector([])


def test_training_free_method_loads_from_its_configs():
    detector = zsad.load(config_paths("method/winclip.yaml", "backbone/tiny_winclip.yaml"), device="cpu")
    assert type(detector.module.prompt).__name__ == "WinCLIPPrompt"
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    bottle, cable = detector(images, class_name="bottle"), detector(images, class_name="cable")
    assert bottle.anomaly_maps.shape == (2, 64, 64)
    assert not torch.allclose(bottle.image_scores, cable.image_scores)  # the object name enters the prompts
    with pytest.raises(ConfigError, match="apply to a checkpoint"):
        zsad.load(config_paths("method/winclip.yaml"), weights="/some/file.pt")


def test_class_maps_give_defect_types(images):
    torch.manual_seed(0)
    prompt = DAPOPrompt(vocabulary=["crack", "hole"], prompt_count=2, vision_deep_layers=2)
    module = ZSADModule(TinyRandomBackbone(project_patches=False), prompt, MultiClassHead())
    prediction = Detector(module)(images)
    assert prediction.class_names == ("normal", "crack", "hole")
    assert prediction.defect_types.shape == (2, 64, 64)
    for index in range(2):
        classes = prediction.defect_types[index]
        present = {prediction.class_names[c] for c in classes.unique().tolist() if c > 0} or {"none"}
        assert prediction.defect_type(index) in present


def test_bad_configs_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  prompt:\n    init_args:\n      n_ctxx: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown key 'model\.prompt\.init_args\.n_ctxx'.*Did you mean 'n_ctx'"):
        zsad.load([*config_paths("backbone/tiny.yaml", "method/static.yaml"), bad])
    with pytest.raises(ConfigError, match=r"missing\.yaml' is not an existing \.yaml file"):
        zsad.load(tmp_path / "missing.yaml")
