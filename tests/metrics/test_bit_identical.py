"""Every metric gives the same bits whatever the thread count, the input order, the batches and the process split.

The thread test runs :func:`metric_bits` in two subprocesses, one with every thread pool (OpenMP, OpenBLAS, MKL,
torch) at 1 thread and one at 2, on inputs large enough for BLAS and torch to split their work (a BLAS dot product
of 300 k values differed in its last bits between 1 and 2 threads, which made DDP and single-process metrics differ).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from zsad.metrics import aupro, curves
from zsad.metrics.aupro import aupro_cflow, aupro_exact, connected_regions
from zsad.metrics.curves import binary_metrics
from zsad.metrics.evaluator import native_map_and_mask
from zsad.metrics.exact_sum import ExactSum, exact_sum
from zsad.metrics.image_state import ImageScoreStore
from zsad.metrics.native_state import NativePixelStore, native_pixel_metrics
from zsad.metrics.pixel_state import PixelScoreStore, compute_pixel_metrics
from zsad.metrics.results import macro_mean

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blob_category(seed: int, count: int = 8, height: int = 96, width: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 maps and bool masks with 1-3 discs per image; every other map rounded to 2 decimals (many ties)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, height, width), dtype=bool)
    rows, cols = np.mgrid[:height, :width]
    for mask in masks[: count - 2]:  # the last two images are normal
        for _ in range(rng.integers(1, 4)):
            row, col, radius = rng.integers(0, height), rng.integers(0, width), rng.uniform(1, 12)
            mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    maps = rng.random(masks.shape) + masks * rng.uniform(0.1, 0.6)
    maps[::2] = np.round(maps[::2], 2)
    return torch.from_numpy(maps.astype(np.float32)), torch.from_numpy(masks)


def image_scores(seed: int, count: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.4
    return torch.from_numpy(np.round(rng.normal(size=count) + labels, 1).astype(np.float32)), torch.from_numpy(labels)


def hex_values(values: dict) -> dict[str, str | None]:
    """Floats as exact hex strings, so that JSON comparison is bit for bit."""
    return {name: None if value is None else float(value).hex() for name, value in values.items()}


def all_metrics(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float | None]:
    values = dict(binary_metrics(maps, masks))
    values["aupro"] = aupro_exact(maps, masks)
    values["aupro_cflow"] = aupro_cflow(maps, masks)
    values["aupro_float64"] = aupro_exact(maps.double(), masks)
    values.update({f"{name}_float64": value for name, value in binary_metrics(maps.double(), masks).items()})
    return values


NATIVE_BATCH = {"native_size": [(200, 260), (157, 99), (96, 96)], "mask_path": ["", "", ""], "mask_threshold": [0] * 3}


def metric_bits() -> dict[str, dict[str, str | None]]:
    """Every metric of zsad.metrics on fixed random data; it shrinks the chunk sizes, so run it in a fresh process."""
    maps, masks = blob_category(0)
    bits = {"category": hex_values(all_metrics(maps, masks))}
    curves.CHUNK_SIZE, aupro.PIXEL_CHUNK = 1 << 12, 1 << 13  # many chunks, tie groups split across them
    bits["small_chunks"] = hex_values({**binary_metrics(maps, masks), "aupro": aupro_exact(maps, masks)})
    scores, labels = image_scores(1)
    bits["image"] = hex_values(binary_metrics(scores, labels))
    store = PixelScoreStore()
    for start in range(0, len(maps), 5):
        part = slice(start, start + 5)
        store.update(maps[part], masks[part], torch.arange(len(maps))[part] % 2, torch.arange(len(maps))[part])
    tables = compute_pixel_metrics(store)
    bits.update({f"store_{category}": hex_values(values) for category, values in tables.items()})
    bits["macro_mean"] = hex_values(macro_mean(list(tables.values()), list(tables[0])))
    native = [native_map_and_mask(maps[i], NATIVE_BATCH, i) for i in range(len(NATIVE_BATCH["native_size"]))]
    upsampled = [anomaly_map for anomaly_map, _ in native]
    bits["upsampled"] = {"sha256": hashlib.sha256(b"".join(m.numpy().tobytes() for m in upsampled)).hexdigest()}
    native_masks = [(anomaly_map > 0.9) | mask for anomaly_map, mask in native]
    bits["native"] = hex_values(native_pixel_metrics(upsampled, native_masks, ("pixel_auroc", "pixel_aupro")))
    return bits


def run_with_threads(threads: int) -> subprocess.Popen:
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    code = (
        "import json, sys, torch\n"
        f"torch.set_num_threads({threads})\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_bit_identical as probe\n"
        "print(json.dumps({'threads': torch.get_num_threads(), 'bits': probe.metric_bits()}))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_one_and_two_threads_give_the_same_bits():
    processes = {threads: run_with_threads(threads) for threads in (1, 2)}  # concurrently: half the wall time
    outputs = {}
    for threads, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        outputs[threads] = json.loads(stdout.strip().splitlines()[-1])
    assert outputs[1]["threads"] == 1 and outputs[2]["threads"] == 2
    assert outputs[1]["bits"] == outputs[2]["bits"]
    assert outputs[1]["bits"]["category"]["aupro"] is not None  # every metric was defined, not all None


def test_pixel_order_does_not_change_curve_metrics():
    maps, masks = blob_category(2, count=6, height=64, width=64)
    order = torch.from_numpy(np.random.default_rng(3).permutation(maps.numel()))
    for dtype in (torch.float32, torch.float64):
        scores = maps.reshape(-1).to(dtype)
        assert binary_metrics(scores[order], masks.reshape(-1)[order]) == binary_metrics(scores, masks.reshape(-1))


def test_image_order_and_region_numbering_do_not_change_aupro():
    maps, masks = blob_category(4, count=10, height=48, width=48)
    order = torch.from_numpy(np.random.default_rng(5).permutation(len(maps)))
    # region ids renumbered at random, with gaps: only the regions themselves may matter
    regions = connected_regions(masks).long()
    renumbered = torch.from_numpy(np.random.default_rng(6).permutation(3 * int(regions.max())) + 1)
    regions = torch.where(regions > 0, renumbered[regions - 1], 0)
    for metric in (aupro_exact, aupro_cflow):
        for scores in (maps, maps.double()):
            expected = metric(scores, masks)
            assert metric(scores[order], masks[order]) == expected
            assert metric(scores, None, regions=regions) == expected


def test_batches_and_process_order_do_not_change_stored_metrics():
    maps, masks = blob_category(7, count=12, height=32, width=32)
    categories, indices = torch.arange(12) % 3, torch.arange(12)
    labels, scores = masks.flatten(1).any(1), maps.flatten(1).amax(1)

    def fed(order: list[int], batch: int) -> tuple[PixelScoreStore, ImageScoreStore, NativePixelStore]:
        pixels, images, native = PixelScoreStore(), ImageScoreStore(), NativePixelStore()
        for start in range(0, len(order), batch):
            take = torch.tensor(order[start : start + batch])
            pixels.update(maps[take], masks[take], categories[take], indices[take])
            images.update(scores[take], labels[take], categories[take], indices[take])
            for i in take.tolist():
                native.update(maps[i, : 20 + i], masks[i, : 20 + i], int(categories[i]), i)
        return pixels, images, native

    def metrics(stores: tuple[PixelScoreStore, ImageScoreStore, NativePixelStore]) -> list:
        pixels, images, native = stores
        image_values = {c: binary_metrics(s.scores, s.labels) for c, s in images.compute().items()}
        native_values = {
            c: native_pixel_metrics(*pair, ("pixel_ap", "pixel_aupro")) for c, pair in native.compute().items()
        }
        return [compute_pixel_metrics(pixels), image_values, native_values]

    expected = metrics(fed(list(range(12)), 4))
    shuffled = np.random.default_rng(8).permutation(12).tolist()
    assert metrics(fed(shuffled, 5)) == expected
    # two "ranks" holding odd and even samples, padded with a repeat, merged in the opposite order
    second, first = fed([1, 3, 5, 7, 9, 11, 1], 3), fed([0, 2, 4, 6, 8, 10, 0], 2)
    for mine, other in zip(second, first, strict=True):
        mine.merge_state(other)
    assert metrics(second) == expected


def test_macro_mean_does_not_depend_on_table_order():
    tables = [{"m": value} for value in np.random.default_rng(9).random(50).tolist()]
    expected = math.fsum(table["m"] for table in tables) / 50
    assert macro_mean(tables, ["m"]) == macro_mean(tables[::-1], ["m"]) == {"m": expected}


@pytest.mark.parametrize("scale", ["unit", "wide", "subnormal"])
def test_exact_sum_is_correctly_rounded_in_any_order(scale):
    rng = np.random.default_rng(10)
    values = rng.normal(size=5000)
    if scale == "wide":
        values *= 10.0 ** rng.integers(-300, 300, values.size)
    elif scale == "subnormal":
        values *= 1e-310
    values = np.concatenate([values, -values[:100], [0.0, -0.0, 5e-324]])
    expected = math.fsum(values.tolist())
    assert exact_sum(values) == expected
    total = ExactSum()
    for part in np.array_split(rng.permutation(values), 7):
        total.add(part)
    assert total.value() == expected
    exact = sum((Fraction(v) for v in values.tolist()), Fraction(0))
    assert total.value(3) == float(exact / 3)  # one rounding of the exact quotient


def test_exact_sum_rejects_infinity():
    with pytest.raises(ValueError, match="infinite or NaN"):
        exact_sum(np.array([1.0, np.inf]))
