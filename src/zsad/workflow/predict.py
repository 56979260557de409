"""``zsad predict --images``: score every image of a folder or glob; write ``scores.csv``, overlays, masks and maps.

``zsad predict`` with ``--images`` comes here (and so does a bare ``zsad predict --help``); without it,
``zsad predict -c ...`` is LightningCLI's predict over a datamodule, which writes ``scores.csv`` into its log folder
(:class:`~zsad.workflow.results.ResultsWriter`). Unreadable files are skipped and listed (printed and in
``skipped.txt``), never silently dropped.

Everything that can be checked is checked before the model loads: the input files, ``--out`` (a writable folder),
``--device``, the thresholds file and the outputs of an earlier run in ``--out`` (refused, or with ``--overwrite``
removed; see :mod:`zsad.workflow.predict_outputs`).

Scoring comes first; the overlays are drawn afterwards on one colour scale for the whole run, in a pool of workers
(:mod:`zsad.workflow.predict_drawing`), and the summary prints the time spent on each.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from tqdm import tqdm

from zsad.data.transforms import load_rgb
from zsad.errors import ConfigError, DataError
from zsad.inference.detector import Detector, Prediction, chunks
from zsad.inference.files import InputFile, find_input_files
from zsad.inference.loading import load
from zsad.metrics.thresholds import given_thresholds
from zsad.viz.scales import MapScale, ScaleRule, choose_scale, module_range
from zsad.workflow.atomic import atomic_write, atomic_write_text
from zsad.workflow.outputs import check_output_folder
from zsad.workflow.predict_drawing import (
    DEFAULT_PICTURE_SIZE,
    OVERLAY_MARK,
    OverlayJob,
    Spool,
    default_workers,
    display_arrays,
    draw_overlays,
)
from zsad.workflow.predict_outputs import (
    MAP_FOLDER,
    MASK_FOLDER,
    OVERLAY_FOLDER,
    SCORES_FILE,
    SKIPPED_FILE,
    clear_earlier_outputs,
    output_stems,
)
from zsad.workflow.raw_maps import MAP_FORMATS, MapFormat, write_class_map, write_manifest, write_map

HELP_OPTIONS = ("-h", "--help")
CONFIG_OPTIONS = ("-c", "--config")
LIGHTNING_MODE = (
    "Without --images, `zsad predict -c CONFIG ... [--ckpt_path C]` is LightningCLI's predict over a datamodule's "
    "target images; it writes their scores to scores.csv in the log folder. `zsad predict -c CONFIG --help` lists "
    "its options (trainer, model, data)."
)
__all__ = ["OVERLAY_MARK", "PredictOptions", "predict_main", "save_overlay", "score_files", "scores_csv"]


@dataclass(frozen=True)
class PredictOptions:
    """What ``zsad predict --images`` writes besides ``scores.csv`` and how.

    Attributes:
        scale: Colour scale of the overlays: ``"run"`` (lowest to highest map value of the run) or ``"range"``
            (the head's documented range, :mod:`zsad.viz.scales`).
        vmin: Map value drawn with the lowest colour (replaces the scale's low end).
        vmax: Map value drawn with the highest colour (replaces the scale's high end).
        image_threshold: Images scoring at or above it get ``pred_label`` 1 (``None``: no ``pred_label`` column).
        pixel_threshold: Pixels at or above it are white in the mask PNGs (``None``: no masks).
        threshold_note: Where the thresholds come from, for the overlays' captions.
        maps: Raw maps to write: ``"none"``, ``"npy"`` or ``"png16"``.
        overlays: Draw overlays.
        workers: Drawing workers (0 or 1: in this process).
        picture_size: Longest side of an overlay panel, in pixels.
    """

    scale: ScaleRule = "run"
    vmin: float | None = None
    vmax: float | None = None
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    threshold_note: str = ""
    maps: MapFormat = "none"
    overlays: bool = True
    workers: int = 0
    picture_size: int = DEFAULT_PICTURE_SIZE


@dataclass
class Timings:
    """Seconds spent on each part of a prediction run (wall clock).

    Attributes:
        reading: Reading and decoding the image files.
        model: Preprocessing and the model.
        writing: Writing raw maps and masks.
        preparing: Making the display-size copies the overlays are drawn from.
        drawing: Drawing and writing the overlays (all workers, wall clock).
        workers: Drawing workers used.
    """

    reading: float = 0.0
    model: float = 0.0
    writing: float = 0.0
    preparing: float = 0.0
    drawing: float = 0.0
    workers: int = 0

    @property
    def scoring(self) -> float:
        """Reading plus the model: what scoring alone costs."""
        return self.reading + self.model

    @property
    def pictures(self) -> float:
        """Preparing plus drawing: what the overlays cost."""
        return self.preparing + self.drawing

    def summary(self, count: int) -> str:
        """One sentence with both times, for the command's summary."""
        text = f"scoring {self.scoring:.2f} s (reading {self.reading:.2f} s, model {self.model:.2f} s)"
        if self.writing:
            text += f", writing maps and masks {self.writing:.2f} s"
        if self.workers:
            text += (
                f", drawing {count} overlays {self.pictures:.2f} s ({self.workers} worker(s); preparing "
                f"{self.preparing:.2f} s)"
            )
        else:
            text += ", no overlays drawn"
        return text


@dataclass
class PredictionRun:
    """The outcome of scoring a list of files.

    Attributes:
        rows: ``scores.csv`` rows.
        skipped: ``(name, reason)`` of unreadable files.
        typed: Whether the rows carry a defect type (heads with a class map).
        timings: Time spent per part.
        scale: The overlays' colour scale (``None`` when no overlay was drawn).
    """

    rows: list[list[str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    typed: bool = False
    timings: Timings = field(default_factory=Timings)
    scale: MapScale | None = None


def is_folder_predict(argv: Sequence[str]) -> bool:
    """Whether a ``zsad predict`` command line is this tool's: it has ``--images``, or asks for help without ``-c``.

    ``zsad predict -c CONFIG --help`` stays LightningCLI's help.
    """
    names = {arg.split("=", 1)[0] for arg in argv}
    if "--images" in names:
        return True
    return bool(names & set(HELP_OPTIONS)) and not names & set(CONFIG_OPTIONS)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad predict --images``."""
    parser = argparse.ArgumentParser(
        prog="zsad predict",
        description="Score every image of a folder (recursively) or glob pattern with a trained checkpoint or a "
        "training-free config; write <out>/scores.csv, <out>/skipped.txt, one overlay PNG per image and, on "
        "request, binary masks and raw maps.",
        epilog=LIGHTNING_MODE,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint written by zsad fit")
    source.add_argument("-c", "--config", action="append", help="config file(s) of a training-free method (WinCLIP)")
    parser.add_argument("--images", required=True, help="folder (searched recursively) or glob pattern ('**' recurses)")
    parser.add_argument("--out", required=True, help="output folder (created when missing)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier zsad predict in --out (only the files it wrote are removed)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the first GPU, else cpu)")
    parser.add_argument("--class-name", default=None, help="object name for prompts that use it (WinCLIP)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="benchmark the images come from (e.g. visa), for prompts whose words follow it (DAPO's test words)",
    )
    parser.add_argument("--weights", default=None, help="local weights file for the checkpoint's backbone")
    pictures = parser.add_argument_group("overlays")
    pictures.add_argument(
        "--scale",
        choices=("run", "range"),
        default="run",
        help="colour scale of every overlay: the run's lowest to highest map value (run, default) or the head's "
        "documented range (range, e.g. 0..4 for AnomalyCLIP-style maps)",
    )
    pictures.add_argument("--vmin", type=float, default=None, help="map value drawn with the lowest colour")
    pictures.add_argument("--vmax", type=float, default=None, help="map value drawn with the highest colour")
    pictures.add_argument("--no-overlays", action="store_true", help="skip the overlays (scores, masks, maps only)")
    pictures.add_argument(
        "--workers", type=int, default=None, help="drawing processes (default: the CPUs, at most 4; 0: in-process)"
    )
    pictures.add_argument(
        "--picture-size",
        type=int,
        default=DEFAULT_PICTURE_SIZE,
        help=f"longest side of an overlay panel in pixels (default: {DEFAULT_PICTURE_SIZE})",
    )
    decisions = parser.add_argument_group("thresholds, masks and raw maps")
    decisions.add_argument(
        "--image-threshold", type=float, default=None, help="adds pred_label (score >= it) to scores.csv"
    )
    decisions.add_argument("--pixel-threshold", type=float, default=None, help="writes binary mask PNGs (map >= it)")
    decisions.add_argument(
        "--thresholds",
        default=None,
        metavar="RESULTS_JSON",
        help="take both thresholds from a zsad test results.json (--category picks the category)",
    )
    decisions.add_argument(
        "--category", default=None, help="category of --thresholds ('dataset/category' if ambiguous)"
    )
    decisions.add_argument(
        "--maps", choices=MAP_FORMATS, default="none", help="raw maps: npy (float32) or png16 (16-bit, scale recorded)"
    )
    return parser.parse_args(argv)


def scores_csv(rows: list[list[str]], with_defect_type: bool, with_pred_label: bool = False) -> str:
    """``path,score[,defect_type][,pred_label]`` lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [
        "path",
        "score",
        *(["defect_type"] if with_defect_type else []),
        *(["pred_label"] if with_pred_label else []),
    ]
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def save_overlay(picture: Image.Image, path: Path) -> Path:
    """Write an overlay PNG atomically, marked as zsad predict's (:data:`OVERLAY_MARK`)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(*OVERLAY_MARK)
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG", pnginfo=info), durable=False)


def save_mask(mask: np.ndarray, path: Path) -> Path:
    """Write a binary mask (white: predicted anomalous) as a 1-bit PNG marked as zsad predict's."""
    return save_overlay(Image.fromarray(np.asarray(mask, dtype=bool)), path)


def image_title(name: str, score: float, defect: str | None, options: PredictOptions) -> tuple[str, ...]:
    """Caption lines of an overlay: the file, its score, the predicted label and defect type, the thresholds."""
    first = f"{name}  score {score:.4g}"
    if options.image_threshold is not None:
        label = "anomalous" if score >= options.image_threshold else "normal"
        first += f"  predicted {label} (image t {options.image_threshold:.4g})"
    if defect is not None:
        first += f"  defect type: {defect}"
    lines = [first]
    if options.threshold_note and (options.image_threshold is not None or options.pixel_threshold is not None):
        lines.append(f"thresholds {options.threshold_note}")
    return tuple(lines)


def score_files(
    detector: Detector,
    files: list[InputFile],
    out: Path,
    class_name: str | None = None,
    options: PredictOptions | None = None,
    dataset: str | None = None,
) -> tuple[list[list[str]], list[tuple[str, str]], bool]:
    """Score the files and write the overlays (and masks and maps, by option); see :func:`run_prediction`.

    Returns:
        ``(csv rows, skipped (name, reason) pairs, whether the rows carry a defect type)``.
    """
    run = run_prediction(detector, files, out, class_name, options or PredictOptions(), dataset)
    return run.rows, run.skipped, run.typed


def run_prediction(
    detector: Detector,
    files: list[InputFile],
    out: Path,
    class_name: str | None,
    options: PredictOptions,
    dataset: str | None = None,
) -> PredictionRun:
    """Score the files batch by batch; write masks and maps as they come; then draw the overlays on one scale.

    Args:
        detector: The loaded model.
        files: The input files.
        out: The output folder.
        class_name: Object name for prompts that use it.
        options: What to write and how.
        dataset: The images' benchmark, for prompts whose words follow it (DAPO's ``by_dataset`` test words).

    Returns:
        The rows, skipped files, timings and the overlays' scale.
    """
    stems = output_stems([file.name for file in files])
    run = PredictionRun()
    timings = run.timings
    jobs: list[OverlayJob] = []
    low, high = math.inf, -math.inf
    spool = Spool(out) if options.overlays else None
    try:
        with tqdm(total=len(files), desc="zsad predict", unit="file") as progress:
            for part in chunks(len(files), detector.batch_size):
                start = time.perf_counter()
                readable, pictures = [], []
                for file in files[part]:
                    try:
                        pictures.append(load_rgb(file.path))
                        readable.append(file)
                    except DataError as error:
                        run.skipped.append((file.name, str(error)))
                timings.reading += time.perf_counter() - start
                if pictures:
                    start = time.perf_counter()
                    prediction: Prediction = detector(pictures, class_name=class_name, dataset=dataset)
                    timings.model += time.perf_counter() - start
                    run.typed = prediction.defect_types is not None
                    for index, (file, picture) in enumerate(zip(readable, pictures, strict=True)):
                        anomaly_map = prediction.anomaly_maps[index].numpy()
                        low, high = min(low, float(anomaly_map.min())), max(high, float(anomaly_map.max()))
                        job = _one_image(prediction, index, file, picture, anomaly_map, out / stems[file.name], run,
                                         options, spool, out)  # fmt: skip
                        if job is not None:
                            jobs.append(job)
                progress.update(part.stop - part.start)
        if options.maps != "none" and run.rows:
            names = list(prediction.class_names or ()) if run.typed else []
            write_manifest(out / MAP_FOLDER, options.maps, "native (each image's own size)", {"class_names": names})
        if jobs:
            documented = module_range(detector.module)
            observed = (low, high)
            run.scale = choose_scale(options.scale, observed, observed, documented, (options.vmin, options.vmax))
            timings.workers = max(1, options.workers)
            start = time.perf_counter()
            draw_overlays(jobs, run.scale, options.workers)
            timings.drawing = time.perf_counter() - start
    finally:
        if spool is not None:
            spool.remove()
    return run


def _one_image(
    prediction: Prediction,
    index: int,
    file: InputFile,
    picture: Image.Image,
    anomaly_map: np.ndarray,
    stem_path: Path,
    run: PredictionRun,
    options: PredictOptions,
    spool: Spool | None,
    out: Path,
) -> OverlayJob | None:
    """Record one image's row, write its mask and maps, and spool what its overlay needs."""
    score = float(prediction.image_scores[index])
    defect = prediction.defect_type(index)
    row = [file.name, f"{score:.6f}", *([defect] if defect is not None else [])]
    if options.image_threshold is not None:
        row.append(str(int(score >= options.image_threshold)))
    run.rows.append(row)
    class_map = prediction.defect_types[index].numpy() if prediction.defect_types is not None else None
    stem = stem_path.relative_to(out)
    if options.pixel_threshold is not None or options.maps != "none":
        start = time.perf_counter()
        if options.pixel_threshold is not None:
            save_mask(anomaly_map >= options.pixel_threshold, out / MASK_FOLDER / f"{stem}.png")
        if options.maps != "none":
            write_map(out / MAP_FOLDER / stem, anomaly_map, options.maps)
            if class_map is not None:
                write_class_map(out / MAP_FOLDER / stem, class_map, prediction.class_names or ())
        run.timings.writing += time.perf_counter() - start
    if spool is None:
        return None
    start = time.perf_counter()
    image, values, classes = display_arrays(picture, anomaly_map, class_map, options.picture_size)
    job = OverlayJob(
        spool=spool.put(image, values, classes),
        out=out / OVERLAY_FOLDER / f"{stem}.png",
        title=image_title(file.name, score, defect, options),
        pixel_threshold=options.pixel_threshold,
        class_names=tuple(prediction.class_names or ()),
    )
    run.timings.preparing += time.perf_counter() - start
    return job


def thresholds_from_results(path: str, category: str | None) -> tuple[float | None, float | None, str]:
    """A category's image and pixel thresholds from a ``zsad test`` ``results.json``, and a note on their origin.

    Raises:
        ConfigError: The file is unreadable, records no thresholds, or ``category`` is missing or ambiguous.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--thresholds '{path}' cannot be read as a results.json ({error}).") from None
    given = given_thresholds(document) if isinstance(document, dict) else {}
    found = {f"{d}/{c}": values for d, categories in given.items() for c, values in categories.items()}
    if not found:
        raise ConfigError(f"--thresholds '{path}' records no thresholds; test with zsad test (threshold_rule f1).")
    matches = [key for key in found if category is not None and (key == category or key.split("/", 1)[1] == category)]
    if len(found) == 1 and category is None:
        matches = list(found)
    if len(matches) != 1:
        listed = ", ".join(sorted(found))
        raise ConfigError(f"--thresholds '{path}': give --category as one of {listed} (got {category!r}).")
    values = found[matches[0]]
    entry = document["thresholds"]
    tuned = " (tuned on that run's target set)" if entry.get("tuned_on_target") else ""
    rule = entry.get("rule", "?")
    note = f"from {path} ({matches[0]}, rule {rule}{tuned})"
    return values.get("image"), values.get("pixel"), note


def check_device(text: str | None) -> None:
    """Refuse a ``--device`` that PyTorch cannot use here, before the model loads.

    Raises:
        ConfigError: Not a device name, a CUDA or MPS device that is not there, or a CUDA index beyond the GPUs.
    """
    if text is None:
        return
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device '{text}' is not a device name; use cpu, cuda, cuda:1, mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            note = f"; CUDA_VISIBLE_DEVICES is '{visible}'" if visible is not None else ""
            raise ConfigError(
                f"--device {text}: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is false{note}). Use "
                "--device cpu, or leave --device out to use a GPU when there is one."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {text}: there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0. Give another "
                "index."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {text}: Apple's MPS is not available here. Use --device cpu.")


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The :class:`PredictOptions` of the command line (thresholds read from ``--thresholds`` when given).

    Raises:
        ConfigError: A bad picture size, worker count or thresholds file.
    """
    if args.picture_size < 16:
        raise ConfigError(f"--picture-size {args.picture_size}: give at least 16 pixels.")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give 0 (draw in this process) or more.")
    image, pixel, note = args.image_threshold, args.pixel_threshold, "fixed (given on the command line)"
    if args.thresholds is not None:
        from_file = thresholds_from_results(args.thresholds, args.category)
        image = image if image is not None else from_file[0]
        pixel = pixel if pixel is not None else from_file[1]
        note = from_file[2]
    elif args.category is not None:
        raise ConfigError("--category picks the category of --thresholds; give --thresholds RESULTS_JSON too.")
    return PredictOptions(
        scale=args.scale,
        vmin=args.vmin,
        vmax=args.vmax,
        image_threshold=image,
        pixel_threshold=pixel,
        threshold_note=note,
        maps=args.maps,
        overlays=not args.no_overlays,
        workers=default_workers() if args.workers is None else args.workers,
        picture_size=args.picture_size,
    )


def predict_main(argv: list[str]) -> int:
    """Run ``zsad predict --images ...``; returns the exit status.

    Raises:
        DataError: No files at all, or not one readable image among them.
        ConfigError: A batch size below 1, an --out that cannot be written or holds an earlier run's outputs
            (without --overwrite), a --device that is not there, or unusable thresholds.
    """
    args = parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1.")
    # before loading the model: a wrong path, place, device or thresholds file fails fast
    files = find_input_files(args.images)
    out = check_output_folder(args.out)
    check_device(args.device)
    options = predict_options(args)
    clear_earlier_outputs(out, args.overwrite)
    source = args.ckpt or args.config
    detector = load(source, device=args.device, weights=args.weights, batch_size=args.batch_size)
    run = run_prediction(detector, files, out, args.class_name, options, args.dataset)
    atomic_write_text(out / SKIPPED_FILE, "".join(f"{name}\t{reason}\n" for name, reason in run.skipped))
    atomic_write_text(out / SCORES_FILE, scores_csv(run.rows, run.typed, options.image_threshold is not None))
    for name, reason in run.skipped:
        print(f"skipped {name}: {reason}")
    if not run.rows:
        raise DataError(
            f"None of the {len(files)} files under '{args.images}' is a readable image (listed in "
            f"{out / SKIPPED_FILE}). Point --images at image files."
        )
    written = [str(out / SCORES_FILE)]
    if run.scale is not None:
        written.append(f"overlays in {out / OVERLAY_FOLDER} ({run.scale.describe()})")
    if options.pixel_threshold is not None:
        written.append(f"masks in {out / MASK_FOLDER}")
    if options.maps != "none":
        written.append(f"{options.maps} maps in {out / MAP_FOLDER}")
    print(
        f"Scored {len(run.rows)} images ({len(run.skipped)} skipped, listed in {out / SKIPPED_FILE}): "
        f"{', '.join(written)}."
    )
    print(f"Time: {run.timings.summary(len(run.rows))}.")
    return 0
