"""Shared fixtures: a tiny random CLIP, synthetic MVTec-style data, the CLI run in-process, hermetic settings."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU-only and deterministic
os.environ["HF_HUB_OFFLINE"] = "1"  # never wait for a hub that cannot be reached
os.environ.setdefault("WANDB_MODE", "offline")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path to a folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real benchmark subsets live in ../shared/data beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _free_real_size_models(request):
    """Collect a real-size test's cyclic garbage at once.

    A LightningModule and its trainer refer to each other, so a dropped ViT-L model (1.7 GB) waits for the cyclic
    collector, which large tensors do not trigger; without this, a run of real-architecture tests keeps every model.
    """
    yield
    if request.node.get_closest_marker("real_arch") is not None:
        gc.collect()


@pytest.fixture(scope="session")
def tiny_backbone():
    """zsad-tiny with V-V from layer 6 and layers 6/12/18/24 (do not mutate)."""
    from zsad.backbones import TinyRandomBackbone

    return TinyRandomBackbone(vv_start_layer=6)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Default synthetic dataset (8 categories, 64 px) generated once per session."""
    from zsad.data.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def images():
    """Two normalised-looking random 64 px images."""
    import torch

    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[Sequence[str]], tuple[int, str]]:
    """Run the `zsad` command line in-process: ``run_cli(args)`` gives (exit code, stdout + stderr).

    Each call reads what was captured since the previous one, so its output is only that run's.
    """
    from zsad.cli import main

    def run(args: Sequence[str]) -> tuple[int, str]:
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0  # argparse and jsonargparse exit; None and 0 both mean success
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run
