"""PixelScoreStore: dedupe of padded samples, merging of process states, agreement with the functional metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from zsad.metrics.aupro import aupro_cflow, aupro_exact
from zsad.metrics.curves import binary_metrics
from zsad.metrics.pixel_state import (
    PIXEL_METRIC_NAMES,
    PixelScoreStore,
    compute_pixel_metrics,
    pack_masks,
    unpack_masks,
)

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics.py"


def random_data(count: int = 12, size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, size, size, generator=generator) > 0.85
    maps = torch.rand(count, size, size, generator=generator) + 0.5 * masks
    categories = torch.arange(count) % 3
    return maps, masks, categories, torch.arange(count)


def feed(store: PixelScoreStore, maps, masks, categories, indices, batch: int = 4) -> PixelScoreStore:
    for start in range(0, len(maps), batch):
        part = slice(start, start + batch)
        store.update(maps[part], masks[part], categories[part], indices[part])
    return store


def test_compute_groups_by_category_in_sample_order():
    maps, masks, categories, indices = random_data()
    result = feed(PixelScoreStore(), maps, masks, categories, indices).compute()
    assert sorted(result) == [0, 1, 2]
    for category, pixels in result.items():
        selected = categories == category
        assert len(pixels) == int(selected.sum())
        torch.testing.assert_close(pixels.maps(), maps[selected], rtol=0, atol=0)
        assert torch.equal(pixels.masks(), masks[selected])
        assert pixels.maps().dtype == torch.float32 and pixels.masks().dtype == torch.bool


def test_padded_repeats_are_counted_once():
    maps, masks, categories, indices = random_data()
    store = feed(PixelScoreStore(), maps, masks, categories, indices)
    store.update(maps[:3], masks[:3], categories[:3], indices[:3])  # what a DistributedSampler pads with
    reference = feed(PixelScoreStore(), maps, masks, categories, indices)
    for category, pixels in store.compute().items():
        assert torch.equal(pixels.maps(), reference.compute()[category].maps())


def split_like_ranks(maps, masks, categories, indices):
    """Two ranks of a DistributedSampler over 12 samples padded to 14: rank 0 even, rank 1 odd positions."""
    order = torch.cat([torch.arange(12), torch.tensor([0, 1])])
    ranks = []
    for rank in range(2):
        take = order[rank::2]
        ranks.append(feed(PixelScoreStore(), maps[take], masks[take], categories[take], indices[take], batch=3))
    return ranks


def test_merged_ranks_equal_one_store_fed_everything():
    data = random_data()
    single = compute_pixel_metrics(feed(PixelScoreStore(), *data))
    first, second = split_like_ranks(*data)
    first.merge_state(second)
    assert compute_pixel_metrics(first) == single


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric PixelScoreStore was called before")
def test_states_concatenated_as_after_a_ddp_sync():
    data = random_data()
    single = compute_pixel_metrics(feed(PixelScoreStore(), *data))
    ranks = split_like_ranks(*data)
    synced = PixelScoreStore()
    for name in ("maps", "masks", "category_ids", "sample_indices"):
        # torchmetrics' sync leaves one tensor per list state: every rank's rows, concatenated
        setattr(synced, name, torch.cat([torch.cat(getattr(rank, name)) for rank in ranks]))
    assert compute_pixel_metrics(synced) == single


def test_results_equal_the_functional_metrics():
    maps, masks, categories, indices = random_data()
    results = compute_pixel_metrics(feed(PixelScoreStore(), maps, masks, categories, indices), names=["a", "b", "c"])
    assert sorted(results) == ["a", "b", "c"]
    for category, name in enumerate("abc"):
        selected = categories == category
        curves = binary_metrics(maps[selected], masks[selected])
        expected = {
            "pixel_auroc": curves["auroc"],
            "pixel_ap": curves["average_precision"],
            "pixel_f1max": curves["f1_max"],
            "pixel_aupro": aupro_exact(maps[selected], masks[selected]),
            "pixel_aupro_cflow": aupro_cflow(maps[selected], masks[selected]),
        }
        assert results[name] == expected
        assert set(expected) == set(PIXEL_METRIC_NAMES)


def test_undefined_metrics_are_none_and_selection_works():
    maps, masks, categories, indices = random_data()
    masks[categories == 1] = False  # a category without any defect
    results = compute_pixel_metrics(
        feed(PixelScoreStore(), maps, masks, categories, indices), metrics=["pixel_auroc", "pixel_aupro"]
    )
    assert results[1] == {"pixel_auroc": None, "pixel_aupro": None}
    assert set(results[0]) == {"pixel_auroc", "pixel_aupro"}
    with pytest.raises(ValueError, match="unknown pixel metrics"):
        compute_pixel_metrics(PixelScoreStore(), metrics=["pixel_iou"])


def test_half_precision_storage_and_channel_axis():
    maps, masks, categories, indices = random_data()
    store = PixelScoreStore(half_precision=True)
    store.update(maps[:, None], masks[:, None].float(), categories, indices)
    assert store.maps[0].dtype == torch.float16
    assert store.masks[0].dtype == torch.uint8 and store.masks[0].shape == (12, 16 * 16 // 8)
    pixels = store.compute()[0]
    torch.testing.assert_close(pixels.maps(), maps[categories == 0].half().float(), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(3, 4, 4), (2, 5, 3), (1, 1, 1)])
def test_mask_bits_round_trip(shape):
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.5
    packed = pack_masks(masks)
    assert packed.shape == (shape[0], -(-shape[1] * shape[2] // 8))
    assert torch.equal(unpack_masks(packed, shape[1:]), masks)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        PixelScoreStore().update(torch.rand(2, 4, 4), torch.zeros(2, 4, 5), torch.zeros(2), torch.arange(2))


def test_benchmark_runs_at_tiny_size(capsys):
    spec = importlib.util.spec_from_file_location("metrics_benchmark", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    rows = benchmark.main(["--images", "24", "--size", "48", "--categories", "3", "--batch", "5"])
    assert [row["metric"] for row in rows][-1] == "all five: compute_pixel_metrics"
    assert all(row["seconds"] >= 0 and row["peak_rss_mb"] > 0 for row in rows)
    assert "AUPRO exact" in capsys.readouterr().out
