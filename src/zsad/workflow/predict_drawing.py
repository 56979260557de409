"""The overlays of ``zsad predict``: drawn after scoring, on one colour scale for the run, in a pool of workers.

Scoring keeps, for each image, a display-size copy of the image and of its maps in a temporary spool folder under
``--out`` (so memory does not grow with the number of images); once the run's map range is known, workers draw
and write the figures. Figures are at most ``--picture-size`` pixels on a panel's longest side (the raw maps on
disk keep the image's own size).

Workers are forked processes on Linux (drawing is numpy and Pillow only, no torch) and threads elsewhere, where
forking a process that has loaded torch is not safe.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zsad.viz.overlay import ColourBar, Figure, compose_figure, heat_overlay, mask_image, png_bytes
from zsad.viz.panels import DEFECT_CAPTION, PREDICTION_CAPTION, defect_type_panel
from zsad.viz.scales import MapScale
from zsad.workflow.atomic import atomic_write

OVERLAY_MARK = ("Software", "zsad predict")
"""PNG text entry of every overlay zsad predict writes: how ``--overwrite`` tells its own files from others."""
DEFAULT_PICTURE_SIZE = 384


def default_workers() -> int:
    """Drawing workers by default: the CPUs this process may use, at most 4."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def display_size(width: int, height: int, limit: int) -> tuple[int, int]:
    """``(width, height)`` scaled down so that the longest side is at most ``limit`` (never enlarged)."""
    scale = min(1.0, limit / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class OverlayJob:
    """What one worker needs to draw one overlay (small and picklable: the arrays wait in the spool).

    Attributes:
        spool: The spool file of the image's display-size arrays.
        out: The overlay file to write.
        title: Caption lines.
        pixel_threshold: Threshold of the prediction panel (``None``: no such panel).
        class_names: Names of the class map's indices (empty without a class map).
    """

    spool: Path
    out: Path
    title: tuple[str, ...]
    pixel_threshold: float | None
    class_names: tuple[str, ...]


class Spool:
    """A temporary folder under ``--out`` holding each image's display-size arrays until the overlays are drawn.

    Args:
        parent: Where to create it (the output folder).
    """

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".zsad-predict-spool-", dir=parent))
        self.count = 0

    def put(self, image: np.ndarray, anomaly_map: np.ndarray, class_map: np.ndarray | None) -> Path:
        """Store one image's arrays; returns the file."""
        path = self.folder / f"{self.count}.npz"
        self.count += 1
        arrays = {"image": image, "map": anomaly_map}
        if class_map is not None:
            arrays["classes"] = class_map
        np.savez(path, **arrays)
        return path

    def remove(self) -> None:
        """Delete the spool."""
        shutil.rmtree(self.folder, ignore_errors=True)


def display_arrays(
    picture: Image.Image, anomaly_map: np.ndarray, class_map: np.ndarray | None, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image and its maps at display size (bilinear for images and maps, nearest for class indices)."""
    size = display_size(picture.width, picture.height, limit)
    image = picture if picture.size == size else picture.resize(size, Image.BILINEAR, reducing_gap=2.0)
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.shape[::-1] != size:
        values = np.asarray(Image.fromarray(values).resize(size, Image.BILINEAR))
    classes = None
    if class_map is not None:
        classes = np.asarray(class_map).astype(np.int32)
        if classes.shape[::-1] != size:
            classes = np.asarray(Image.fromarray(classes).resize(size, Image.NEAREST))
    return np.asarray(image.convert("RGB")), values, classes


def overlay_figure(job: OverlayJob, scale: MapScale) -> Image.Image:
    """Image | heat map (| prediction) (| defect types), with the caption and the colour bar."""
    with np.load(job.spool) as stored:
        image, anomaly_map = stored["image"], stored["map"]
        classes = stored["classes"] if "classes" in stored.files else None
    panels = [("image", image), ("anomaly map", heat_overlay(image, anomaly_map, scale))]
    legend = []
    predicted = anomaly_map >= job.pixel_threshold if job.pixel_threshold is not None else None
    if predicted is not None:
        panels.append((PREDICTION_CAPTION, mask_image(predicted)))
    if classes is not None:
        shown = predicted if predicted is not None else classes > 0
        panel, legend = defect_type_panel(image, classes, shown, job.class_names)
        panels.append((DEFECT_CAPTION, panel))
    bar = ColourBar(scale, job.pixel_threshold, f"map value ({scale.rule_words()})")
    return compose_figure(Figure(panels, list(job.title), bar, legend))


def draw_overlay(job: OverlayJob, scale: MapScale) -> float:
    """Draw and write one overlay (a worker's task); returns the seconds it took."""
    start = time.perf_counter()
    data = png_bytes(overlay_figure(job, scale), dict([OVERLAY_MARK]))
    atomic_write(job.out, lambda handle: handle.write(data), durable=False)
    return time.perf_counter() - start


def drawing_pool(workers: int) -> Executor:
    """Forked processes on Linux, threads elsewhere (see the module docstring)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def draw_overlays(jobs: Sequence[OverlayJob], scale: MapScale, workers: int) -> float:
    """Draw every overlay (``workers`` 0 or 1: in this process); returns the summed seconds of the drawings."""
    if workers <= 1 or len(jobs) <= 1:
        return sum(draw_overlay(job, scale) for job in jobs)
    with drawing_pool(min(workers, len(jobs))) as pool:
        return sum(pool.map(draw_overlay, jobs, [scale] * len(jobs), chunksize=max(1, len(jobs) // (8 * workers))))
