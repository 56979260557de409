"""``zsad export``: a trained checkpoint, or the configs of a training-free method, as an ONNX graph.

See :mod:`zsad.inference.export` for what the graph holds and which methods can be exported.
"""

from __future__ import annotations

import argparse

from zsad.errors import ConfigError
from zsad.inference.export import export_onnx
from zsad.inference.loading import load
from zsad.workflow.outputs import check_output_file

FORMATS = ("onnx",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad export``."""
    parser = argparse.ArgumentParser(
        prog="zsad export",
        description="Export image -> (image score, anomaly map) as one ONNX graph, with the text embeddings "
        "precomputed. Works for methods whose prompts do not depend on the image (static, winclip, dapo).",
    )
    parser.add_argument("--ckpt", default=None, help="checkpoint written by zsad fit")
    parser.add_argument(
        "-c", "--config", action="append", default=[], help="config file(s): the model of a training-free method "
        "(WinCLIP), or, with --ckpt, the configs the checkpoint was trained with"
    )  # fmt: skip
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default: onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--class-name", default=None, help="object name for prompts that use it (WinCLIP)")
    parser.add_argument(
        "--dataset", default=None, help="benchmark the graph will score (e.g. visa), for DAPO's per-dataset test words"
    )
    parser.add_argument("--weights", default=None, help="local weights file for the checkpoint's backbone")
    parser.add_argument(
        "--optimize", action="store_true", help="also run onnxscript's graph optimiser (slow; ONNX Runtime optimises "
        "on load anyway)"
    )  # fmt: skip
    return parser.parse_args(argv)


def export_main(argv: list[str]) -> int:
    """Run ``zsad export``; returns the exit status.

    Raises:
        ConfigError: Neither --ckpt nor -c, an --out that cannot be written (a folder, a read-only place), or a
            model whose prompts depend on the image.
        WriteError: The file could not be written (a full disk); a file already at --out is kept as it was.
    """
    args = parse_args(argv)
    if args.ckpt is None and not args.config:
        raise ConfigError("Give --ckpt (a trained model) or -c config files (a training-free method such as WinCLIP).")
    check_output_file(args.out)  # before the slow translation, not after it
    if args.ckpt is not None:
        detector = load(args.ckpt, device="cpu", weights=args.weights, configs=args.config)
    else:
        if args.weights is not None:
            raise ConfigError("--weights applies to --ckpt; with -c configs, set the backbone's pretrained there.")
        detector = load(args.config, device="cpu")
    path = export_onnx(
        detector.module, args.out, class_name=args.class_name, optimize=args.optimize, dataset=args.dataset
    )
    print(f"Wrote {path}: input 'images' [batch, 3, {detector.image_size}, {detector.image_size}] (CLIP-normalised).")
    return 0
