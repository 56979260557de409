"""Training epoch time on the auxiliary set, with and without the feature cache.

One model (the static method, AnomalyCLIP-style, built from the shipped configs) and one set of synthetic
auxiliary images are trained twice in this process: ``--epochs`` epochs with ``model.feature_cache: off``, then
``--epochs`` epochs with the cache (memory by default). The first cached epoch fills the cache and is reported
apart; the ratio compares the later cached epochs with the uncached ones.

The default backbone is the real ``ViT-L-14-336`` architecture with random weights (no download), so the timing
is that of the reference model; ``--backbone tiny-random`` is a quick run whose backbone costs almost nothing.

    python benchmarks/training.py                                    # ViT-L-14-336 at 336 px, 8 images, 3 epochs
    python benchmarks/training.py --image-size 518 --images 16      # the ZSAD input size
    python benchmarks/training.py --backbone tiny-random --images 64 --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L  # noqa: N812

from zsad.data.datasets.base import SampleRecord
from zsad.data.synthetic import SyntheticDataModule
from zsad.features import FeatureCacheSettings
from zsad.metrics.results import format_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BACKBONES = {
    # the reference architecture, random weights: open_clip's ViT-L/14@336 (GELU, as random weights need no QuickGELU)
    "vit-l-14-336": [
        "--config", str(CONFIGS / "backbone/vit_l_14_336_openai.yaml"),
        "--model.backbone.init_args.model_name=ViT-L-14-336", "--model.backbone.init_args.pretrained=null",
        "--model.backbone.init_args.force_quick_gelu=false",
    ],
    "tiny-random": ["--config", str(CONFIGS / "backbone/tiny.yaml")],
}  # fmt: skip
DEFAULT_SIZE = {"vit-l-14-336": 336, "tiny-random": 64}


class EpochTimer(L.Callback):
    """Wall-clock seconds of every training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class FirstImages(SyntheticDataModule):
    """The synthetic datamodule with its auxiliary set cut to its first ``limit`` images."""

    def __init__(self, limit: int, **options: object) -> None:
        super().__init__(**options)
        self.limit = limit

    def aux_records(self) -> list[SampleRecord]:
        """The first ``limit`` auxiliary samples."""
        return super().aux_records()[: self.limit]


def build_model(backbone: str, image_size: int, method: str) -> L.LightningModule:
    """The method's model on the chosen backbone, built from the shipped configs as ``zsad fit`` builds it."""
    from zsad.cli import ZSADCLI
    from zsad.config_aliases import install_loader, translate_argv

    install_loader()
    args = [*BACKBONES[backbone], "--config", str(CONFIGS / f"method/{method}.yaml"),
            f"--model.backbone.init_args.image_size={image_size}", "--data=synthetic"]  # fmt: skip
    return ZSADCLI(args=translate_argv(args), run=False).model


def time_epochs(model: L.LightningModule, data: L.LightningDataModule, epochs: int, workdir: Path) -> list[float]:
    """Seconds per epoch of one ``trainer.fit``."""
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(workdir), callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return timer.seconds


def report(uncached: list[float], cached: list[float], images: int) -> str:
    """Per-epoch table and the cached/uncached ratio (later cached epochs against all uncached ones)."""
    rows = [["off", str(i + 1), f"{s:.2f}", f"{images / s:.2f}"] for i, s in enumerate(uncached)]
    for i, s in enumerate(cached):
        rows.append(["on (filling)" if i == 0 else "on", str(i + 1), f"{s:.2f}", f"{images / s:.2f}"])
    table = format_table(["cache", "epoch", "seconds", "images/s"], rows)
    base = statistics.mean(uncached)
    lines = [table, "", f"uncached epoch (mean): {base:.2f} s", f"filling epoch: {cached[0]:.2f} s "
             f"({cached[0] / base:.2f}x uncached)"]  # fmt: skip
    if len(cached) > 1:
        later = statistics.mean(cached[1:])
        lines.append(f"cached epoch (mean of epochs 2..{len(cached)}): {later:.2f} s")
        lines.append(f"ratio cached/uncached: {later / base:.3f}  (target <= 0.2)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> tuple[list[float], list[float]]:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=list(BACKBONES), default="vit-l-14-336")
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: 336, tiny-random 64)")
    parser.add_argument("--images", type=int, default=8, help="auxiliary images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (at least 2 to see cached epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--method", default="static", help="a configs/method/*.yaml name (not dapo: it refuses)")
    parser.add_argument("--cache", choices=["memory", "disk"], default="memory")
    parser.add_argument("--fp16", action="store_true", help="store cached features as float16")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    size = args.image_size or DEFAULT_SIZE[args.backbone]
    with tempfile.TemporaryDirectory() as workdir:
        data = FirstImages(
            args.images, root=str(Path(workdir) / "synthetic"), generated_size=size, image_size=size,
            batch_size=args.batch_size, n_test_good=max(2, args.images // 4),
        )  # fmt: skip
        images = len(data.aux_records())
        started = time.perf_counter()
        model = build_model(args.backbone, size, args.method)
        print(f"built {args.backbone} in {time.perf_counter() - started:.1f} s; {images} images at {size} px")
        model.feature_cache = FeatureCacheSettings("off")
        uncached = time_epochs(model, data, args.epochs, Path(workdir))
        model.feature_cache = FeatureCacheSettings(args.cache, str(Path(workdir) / "features"), args.fp16)
        cached = time_epochs(model, data, args.epochs, Path(workdir))
    print(f"Training epochs, {args.backbone} (random weights) at {size} px, method {args.method}, {images} images, "
          f"batch {args.batch_size}, cache {args.cache}{' fp16' if args.fp16 else ''}")  # fmt: skip
    print(report(uncached, cached, images))
    return uncached, cached


if __name__ == "__main__":
    main()
