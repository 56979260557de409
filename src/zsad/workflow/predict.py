"""``zsad predict --images``: score every image of a folder or glob, write ``scores.csv`` and overlay pictures.

``zsad predict`` with ``--images`` comes here; without it, ``zsad predict -c ...`` is LightningCLI's predict over a
datamodule. Unreadable files are skipped and listed (printed and in ``skipped.txt``), never silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from zsad.data.transforms import load_rgb
from zsad.errors import ConfigError, DataError
from zsad.inference.detector import Detector, Prediction, chunks
from zsad.inference.files import InputFile, find_input_files, overlay_names
from zsad.inference.loading import load
from zsad.viz.overlay import heat_overlay, panel_row, save_image
from zsad.workflow.atomic import atomic_write_text

SCORES_FILE = "scores.csv"
SKIPPED_FILE = "skipped.txt"
OVERLAY_FOLDER = "overlays"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad predict --images``."""
    parser = argparse.ArgumentParser(
        prog="zsad predict",
        description="Score every image of a folder (recursively) or glob pattern with a trained checkpoint or a "
        "training-free config; write <out>/scores.csv, <out>/skipped.txt and one overlay PNG per image.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint written by zsad fit")
    source.add_argument("-c", "--config", action="append", help="config file(s) of a training-free method (WinCLIP)")
    parser.add_argument("--images", required=True, help="folder (searched recursively) or glob pattern ('**' recurses)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the first GPU, else cpu)")
    parser.add_argument("--class-name", default=None, help="object name for prompts that use it (WinCLIP)")
    parser.add_argument("--weights", default=None, help="local weights file for the checkpoint's backbone")
    parser.add_argument(
        "--vmax",
        type=float,
        default=None,
        help="anomaly-map value shown as the hottest colour (default: each map's max)",
    )
    return parser.parse_args(argv)


def overlay_picture(image: np.ndarray, anomaly_map: np.ndarray, title: str, vmax: float | None) -> Image.Image:
    """Image | heat-map overlay, captioned, with ``title`` above."""
    panels = [("image", image), ("anomaly map", heat_overlay(image, anomaly_map, vmax=vmax))]
    return panel_row(panels, [title])


def scores_csv(rows: list[list[str]], with_defect_type: bool) -> str:
    """``path,score[,defect_type]`` lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "score", "defect_type"] if with_defect_type else ["path", "score"])
    writer.writerows(rows)
    return buffer.getvalue()


def score_files(
    detector: Detector,
    files: list[InputFile],
    out: Path,
    class_name: str | None = None,
    vmax: float | None = None,
) -> tuple[list[list[str]], list[tuple[str, str]], bool]:
    """Score the files batch by batch, writing one overlay per readable image.

    Returns:
        ``(csv rows, skipped (name, reason) pairs, whether the rows carry a defect type)``.
    """
    overlays = overlay_names([file.name for file in files])
    rows: list[list[str]] = []
    skipped: list[tuple[str, str]] = []
    typed = False
    with tqdm(total=len(files), desc="zsad predict", unit="file") as progress:
        for part in chunks(len(files), detector.batch_size):
            readable, pictures = [], []
            for file in files[part]:
                try:
                    pictures.append(load_rgb(file.path))
                    readable.append(file)
                except DataError as error:
                    skipped.append((file.name, str(error)))
            if pictures:
                prediction: Prediction = detector(pictures, class_name=class_name)
                typed = prediction.defect_types is not None
                for index, (file, picture) in enumerate(zip(readable, pictures, strict=True)):
                    score = float(prediction.image_scores[index])
                    defect = prediction.defect_type(index)
                    rows.append([file.name, f"{score:.6f}", *([defect] if defect is not None else [])])
                    title = f"{file.name}  score {score:.4f}" + (f"  defect type: {defect}" if defect else "")
                    picture_map = prediction.anomaly_maps[index].numpy()
                    panel = overlay_picture(np.asarray(picture), picture_map, title, vmax)
                    save_image(panel, out / OVERLAY_FOLDER / overlays[file.name])
            progress.update(part.stop - part.start)
    return rows, skipped, typed


def predict_main(argv: list[str]) -> int:
    """Run ``zsad predict --images ...``; returns the exit status.

    Raises:
        DataError: No files at all, or not one readable image among them.
        ConfigError: A batch size below 1.
    """
    args = parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1.")
    files = find_input_files(args.images)  # before loading the model: a wrong path fails fast
    out = Path(args.out)
    source = args.ckpt or args.config
    detector = load(source, device=args.device, weights=args.weights, batch_size=args.batch_size)
    rows, skipped, typed = score_files(detector, files, out, args.class_name, args.vmax)
    atomic_write_text(out / SKIPPED_FILE, "".join(f"{name}\t{reason}\n" for name, reason in skipped))
    atomic_write_text(out / SCORES_FILE, scores_csv(rows, typed))
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    if not rows:
        raise DataError(
            f"None of the {len(files)} files under '{args.images}' is a readable image (listed in "
            f"{out / SKIPPED_FILE}). Point --images at image files."
        )
    print(
        f"Scored {len(rows)} images ({len(skipped)} skipped, listed in {out / SKIPPED_FILE}): "
        f"{out / SCORES_FILE}, overlays in {out / OVERLAY_FOLDER}."
    )
    return 0
