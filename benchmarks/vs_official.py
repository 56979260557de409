"""zsad against a method's official code: the largest difference at every stage, and the time per image of each.

Give a local checkout of the official repository; its code is imported unchanged from that path (nothing of it is in
zsad). Both sides get the same seeded random CLIP weights (an OpenAI-format file, which the official loaders and zsad's
``pretrained`` both read) and seeded random prompt weights, saved in the official training script's format and
brought into zsad only through ``zsad import``. Images: real MVTec AD bottle test images from ../shared/data when
present (``--images`` to choose), at batch 1 as the official test scripts run.

    python benchmarks/vs_official.py --method anomalyclip --src ~/src/AnomalyCLIP
    python benchmarks/vs_official.py --method cops --src ~/src/CoPS --count 4 --markdown parity.md

Methods and their repositories: anomalyclip (zqhang/AnomalyCLIP), cops (cqylunlun/CoPS), vip (kim0806/ViP2-CLIP),
dapo (boschresearch/defect-aware-prompt-optimization). Without ``--src`` the script says what it needs and exits 0.
The tables in docs/parity.md were printed by this script.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity.common import TRAINING_BATCH, default_images, describe_images

METHODS = {
    "anomalyclip": "zqhang/AnomalyCLIP",
    "cops": "cqylunlun/CoPS",
    "vip": "kim0806/ViP2-CLIP",
    "dapo": "boschresearch/defect-aware-prompt-optimization",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--src", type=Path, default=None, help="local checkout of the official repository")
    parser.add_argument("--images", type=Path, nargs="*", default=None, help="images to compare on (default: MVTec)")
    parser.add_argument("--count", type=int, default=2, help="how many default images (ViT-L at 518 px is slow on CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random CLIP and prompt weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.src is None:
        print(
            f"vs_official: give --src, a local checkout of {METHODS[args.method]} (e.g. `git clone "
            f"https://github.com/{METHODS[args.method]}`); nothing to compare without it."
        )
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = list(args.images) if args.images else default_images(args.count)
    if not images:
        print("vs_official: no images: give --images (../shared/data/mvtec_ad is not here).")
        return 2
    if len(images) < TRAINING_BATCH:
        print(
            f"vs_official: {len(images)} image; the training-step comparison needs at least {TRAINING_BATCH} "
            "(the official losses squeeze a batch of one to a scalar): give --count 2 or more images."
        )
        return 2
    module = importlib.import_module(f"parity.{args.method}")
    comparison = module.compare(args.src, images, seed=args.seed, device=args.device)
    comparison.notes.insert(0, f"{describe_images(images)}, seed {args.seed}, {args.device}, torch {torch.__version__}")
    table = comparison.table()
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    return 0 if comparison.passed else 1


if __name__ == "__main__":
    sys.exit(main())
