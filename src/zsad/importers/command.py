"""``zsad import``: convert a released official checkpoint into a zsad checkpoint (docs/methods/*.md)."""

from __future__ import annotations

import argparse

from zsad.importers import IMPORTERS, import_checkpoint


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad import``."""
    methods = "\n".join(f"  {name:<12} {IMPORTERS[name].description}" for name in sorted(IMPORTERS))
    parser = argparse.ArgumentParser(
        prog="zsad import",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a checkpoint released with a method's official code into a zsad checkpoint bound to "
        "that method's official preset, ready for `zsad test --ckpt_path`. Every key and shape is checked, and the "
        "checkpoint records the file's SHA-256 and the data it was trained on (for the leakage check).",
        epilog=f"methods:\n{methods}",
    )
    parser.add_argument("method", choices=sorted(IMPORTERS), help="the method whose official code wrote the file")
    parser.add_argument("source", help="the released file, e.g. checkpoints/9_12_4_multiscale/epoch_15.pth")
    parser.add_argument(
        "--trained-on", required=True, help="the data the authors trained it on: mvtec or visa (see the method's docs)"
    )
    parser.add_argument("--out", required=True, help="the zsad checkpoint to write, e.g. anomalyclip_mvtec.ckpt")
    parser.add_argument(
        "--weights", default=None, help="local CLIP weights for the preset's backbone (e.g. ViT-L-14-336px.pt); "
        "default: the preset's own source, downloaded by open_clip"
    )  # fmt: skip
    parser.add_argument(
        "-c", "--config", action="append", default=[], help="extra config file(s) applied after the preset's, "
        "e.g. another backbone for a file the official code trained on it"
    )  # fmt: skip
    return parser.parse_args(argv)


def import_main(argv: list[str]) -> int:
    """Run ``zsad import``; returns the exit status."""
    args = parse_args(argv)
    path = import_checkpoint(
        args.source, args.method, args.trained_on, args.out, weights=args.weights, extra_configs=args.config
    )
    print(f"Wrote {path}: {args.method} trained on {args.trained_on}; test it with `zsad test --ckpt_path {path}`.")
    return 0
