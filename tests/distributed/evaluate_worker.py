"""Run `trainer.test` on synthetic data with 1 or N CPU processes and write the metrics (used by test_ddp.py).

Run as a script: Lightning's DDP launcher starts the other processes by re-running this file.
"""

from __future__ import annotations

import argparse
import json

import lightning as L  # noqa: N812

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.data import SyntheticDataModule
from zsad.heads import DualBranchHead
from zsad.prompts import StaticPrompt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    model = ZSADModule(TinyRandomBackbone(vv_start_layer=6), StaticPrompt(deep_depth=3), DualBranchHead())
    # 3 categories x 15 samples (5 good + 5 defects x 2) = 45: odd, so the distributed sampler pads with a repeat
    data = SyntheticDataModule(
        root=args.root,
        aux_categories=[],
        target_categories=["ring", "grain", "disc"],
        n_test_good=5,
        eval_batch_size=4,
        num_workers=0,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.test(model, datamodule=data, verbose=False)
    local_samples = sum(len(part) for part in model.evaluator.images.scores)  # before de-duplication
    with open(f"{args.out}.rank{trainer.global_rank}", "w") as handle:
        handle.write(str(local_samples))
    if trainer.is_global_zero:
        results = model.test_results
        document = {"results": results.to_dict(), "world_size": trainer.world_size}
        with open(args.out, "w") as handle:
            json.dump(document, handle)


if __name__ == "__main__":
    main()
