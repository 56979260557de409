"""Fit on synthetic data with 1 or N CPU processes, with or without the feature cache (used by test_ddp_cache.py).

Writes each rank's cache counts to ``<out>.rank<r>`` and rank 0's trained parameters to ``<out>``. Run as a
script: Lightning's DDP launcher starts the other processes by re-running this file.
"""

from __future__ import annotations

import argparse
import json

import lightning as L  # noqa: N812
import torch
from cache_fit import cache_counts, static_model, training_data

from zsad import ZSADModule


class CountsWriter(L.Callback):
    """Keeps the cache's counts before the module releases the cache at the end of fitting."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, module: ZSADModule) -> None:
        counts = cache_counts(module)
        with open(f"{self.path}.rank{trainer.global_rank}", "w") as handle:
            json.dump(None if counts is None else {"hits": counts.hits, "misses": counts.misses}, handle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache", default="off")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    model = static_model(feature_cache=args.cache)
    data = training_data(args.root)  # 16 images: each of 2 ranks trains on a shuffled half (one batch of 8) per epoch
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CountsWriter(args.out)],
    )
    trainer.fit(model, datamodule=data)
    if trainer.is_global_zero:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
