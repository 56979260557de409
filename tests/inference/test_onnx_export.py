"""`zsad export --format onnx`: one graph image -> (score, map) that ONNX Runtime runs like PyTorch."""

from __future__ import annotations

import pytest
import torch
from tests.inference.conftest import config_args, config_paths

import zsad

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4
WINCLIP_CONFIGS = ("method/winclip.yaml", "backbone/tiny_winclip.yaml")


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX Runtime warns about constant folding it skips; not ours to fix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_matches_pytorch(path, detector, class_name=None):
    """Batches of 1 and 2 through the same file (the batch axis is symbolic), against the PyTorch detector."""
    graph = session(path)
    assert [i.shape for i in graph.get_inputs()] == [["batch", 3, 64, 64]]
    assert [o.name for o in graph.get_outputs()] == ["image_score", "anomaly_map"]
    for batch in (1, 2):
        images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        expected = detector(images, class_name=class_name)
        scores, maps = graph.run(None, {"images": images.numpy()})
        assert scores.shape == (batch,) and maps.shape == (batch, 64, 64)
        assert (torch.from_numpy(scores) - expected.image_scores).abs().max() <= TOLERANCE
        assert (torch.from_numpy(maps) - expected.anomaly_maps).abs().max() <= TOLERANCE
    return graph


@pytest.mark.slow
def test_static_checkpoint_exports(trained, tmp_path, run_cli):
    path = tmp_path / "static.onnx"
    args = ["export", "--ckpt", str(trained.checkpoint), "--format", "onnx", "--out", str(path)]
    code, output = run_cli(args)
    assert code == 0, output
    graph = assert_matches_pytorch(path, zsad.load(trained.checkpoint, device="cpu"))
    metadata = graph.get_modelmeta().custom_metadata_map
    assert metadata["image_size"] == "64" and metadata["class_names"] == "normal,anomaly"
    assert metadata["zsad_version"] == zsad.__version__


@pytest.mark.slow
def test_winclip_exports_from_its_configs(tmp_path, run_cli):
    path = tmp_path / "winclip.onnx"
    code, output = run_cli(["export", *config_args(*WINCLIP_CONFIGS), "--out", str(path), "--class-name", "bottle"])
    assert code == 0, output
    graph = assert_matches_pytorch(path, zsad.load(config_paths(*WINCLIP_CONFIGS), device="cpu"), "bottle")
    assert graph.get_modelmeta().custom_metadata_map["object_name"] == "bottle"


def test_image_conditioned_prompts_are_refused(tmp_path, run_cli):
    path = tmp_path / "cops.onnx"
    code, output = run_cli(["export", *config_args("backbone/tiny.yaml", "method/cops.yaml"), "--out", str(path)])
    assert code == 2 and "zsad: error: CoPSPrompt builds its prompts from each image" in output
    assert "text encoder would have to run inside the ONNX graph" in output and not path.exists()


def test_export_needs_a_model(run_cli):
    code, output = run_cli(["export", "--out", "model.onnx"])
    assert code == 2 and "zsad: error: Give --ckpt" in output
