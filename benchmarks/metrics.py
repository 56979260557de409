"""Memory and speed of the exact pixel metrics on an MVTec-size evaluation of random maps.

The default is MVTec AD's test split at the resolution every repository evaluates: 1,725 maps of 518x518
(460 M pixels) in 15 equal categories, about half the images with 1-3 disc-shaped defects. Maps are upsampled
low-resolution noise (like ViT patch maps) raised inside the defects. They are streamed in batches into a
``PixelScoreStore``, then every pixel metric is timed over all categories, one category in memory at a time.

    python benchmarks/metrics.py                          # full size (~5 min, ~3.5 GB)
    python benchmarks/metrics.py --images 150 --size 256  # seconds

Peak RSS is the kernel's high-water mark (VmHWM), reset before each metric where /proc/self/clear_refs allows it,
so each row shows the process peak during that metric (stored maps included).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional

from zsad.metrics.aupro import aupro_cflow, aupro_exact
from zsad.metrics.curves import auroc, average_precision, binary_metrics, f1_max
from zsad.metrics.pixel_state import PixelScoreStore, compute_pixel_metrics

PATCH = 14  # ViT-L/14 patch size: a 518 px map comes from a 37x37 patch grid

METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
    "pixel AUROC": auroc,
    "pixel AP": average_precision,
    "pixel F1-max": f1_max,
    "AUROC+AP+F1 (one sort)": binary_metrics,
    "AUPRO exact": aupro_exact,
    "AUPRO cflow": aupro_cflow,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1725, help="number of maps (MVTec AD test: 1725)")
    parser.add_argument("--size", type=int, default=518, help="map side in pixels")
    parser.add_argument("--categories", type=int, default=15, help="categories of equal size")
    parser.add_argument("--batch", type=int, default=32, help="maps per store update")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def peak_rss_mb() -> float:
    """High-water mark of the resident set in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def random_batch(generator: torch.Generator, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` smooth random maps and masks, about half the masks with 1-3 discs."""
    grid = max(size // PATCH, 2)
    noise = torch.rand(count, 1, grid, grid, generator=generator)
    maps = functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    for mask in masks:
        if torch.rand(1, generator=generator) < 0.5:
            continue
        discs = int(torch.randint(1, 4, (1,), generator=generator))
        centres = torch.randint(0, size, (discs, 2, 1, 1), generator=generator)
        radii = torch.randint(max(size // 100, 1), max(size // 9, 2), (discs, 1, 1), generator=generator)
        inside = (rows - centres[:, 0]) ** 2 + (cols - centres[:, 1]) ** 2 <= radii**2
        mask |= inside.any(dim=0)
    maps += 0.3 * masks * torch.rand(count, 1, 1, generator=generator)
    return maps, masks


def fill_store(args: argparse.Namespace) -> PixelScoreStore:
    """Stream the random evaluation into a store batch by batch, never building it in one tensor."""
    generator = torch.Generator().manual_seed(args.seed)
    store = PixelScoreStore()
    for start in range(0, args.images, args.batch):
        indices = torch.arange(start, min(start + args.batch, args.images))
        maps, masks = random_batch(generator, indices.numel(), args.size)
        store.update(maps, masks, indices * args.categories // args.images, indices)
    return store


def measure(name: str, work: Callable[[], object], rows: list[dict[str, object]]) -> None:
    reset_peak_rss()
    start = time.perf_counter()
    work()
    rows.append({"metric": name, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()})


def run_metric(store: PixelScoreStore, metric: Callable[[torch.Tensor, torch.Tensor], object]) -> None:
    for pixels in store.compute().values():
        maps, masks = pixels.maps(), pixels.masks()
        metric(maps, masks)
        del maps, masks


def print_table(rows: list[dict[str, object]], args: argparse.Namespace, store_mb: float, resettable: bool) -> None:
    pixels = args.images * args.size**2
    print(
        f"{args.images} maps of {args.size}x{args.size} = {pixels / 1e6:.0f} M pixels in {args.categories} "
        f"categories; store holds {store_mb:.0f} MB; torch threads: {torch.get_num_threads()}"
    )
    if not resettable:
        print("(peak RSS could not be reset: each row shows the peak since the process started)")
    print(f"{'metric':<34}{'seconds':>10}{'peak RSS MB':>14}")
    for row in rows:
        print(f"{row['metric']:<34}{row['seconds']:>10.1f}{row['peak_rss_mb']:>14.0f}")


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    rows: list[dict[str, object]] = []
    holder: dict[str, PixelScoreStore] = {}
    measure("fill store (random maps, streamed)", lambda: holder.setdefault("store", fill_store(args)), rows)
    store = holder["store"]
    store_mb = sum(t.numel() * t.element_size() for t in [*store.maps, *store.masks]) / 2**20
    measure("gather each category (no metric)", lambda: run_metric(store, lambda maps, masks: None), rows)
    for name, metric in METRICS.items():
        measure(name, lambda metric=metric: run_metric(store, metric), rows)
    measure("all five: compute_pixel_metrics", lambda: compute_pixel_metrics(store), rows)
    print_table(rows, args, store_mb, reset_peak_rss())
    return rows


if __name__ == "__main__":
    main()
