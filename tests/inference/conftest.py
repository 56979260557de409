"""A tiny static-prompt checkpoint from one `zsad fit` step, shared by the inference tests of a session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from zsad.cli import main

ROOT = Path(__file__).resolve().parents[2]
STATIC_CONFIGS = ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")


def config_paths(*names: str) -> list[str]:
    return [str(ROOT / "configs" / name) for name in names]


def config_args(*names: str) -> list[str]:
    return [arg for path in config_paths(*names) for arg in ("-c", path)]


@dataclass(frozen=True)
class TrainedRun:
    """A checkpoint and the synthetic dataset it was trained on."""

    checkpoint: Path
    data_root: Path

    def image(self, category: str = "ring", defect: str = "good", index: int = 0) -> Path:
        return next((self.data_root / category / "test" / defect).glob(f"{index:03d}.png"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedRun:
    """`zsad fit` of static prompts on the tiny backbone for one step (about 10 s), once per session."""
    work = tmp_path_factory.mktemp("inference_fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("ZSAD_CACHE_DIR", str(work / "cache"))
        args = [*config_args(*STATIC_CONFIGS), "--trainer.max_steps=1", "--trainer.enable_progress_bar=false"]
        main(["fit", *args, "--trainer.logger=false", "--trainer.enable_model_summary=false"])
    checkpoint = work / "runs" / "smoke" / "last.ckpt"
    assert checkpoint.is_file()
    return TrainedRun(checkpoint, next((work / "cache").glob("synthetic-*")))
