"""Native-resolution pixel metrics: maps upsampled to each image's size, masks read at that size."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from zsad.metrics.aupro import aupro_cflow, aupro_exact
from zsad.metrics.curves import binary_metrics
from zsad.metrics.evaluator import Evaluator
from zsad.metrics.native_state import native_pixel_metrics
from zsad.structures import Scores


def test_mixed_sizes_equal_separate_labelling():
    """Two images of different sizes: regions are labelled per image and numbered across the category."""
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(6, 9, generator=g), torch.rand(11, 4, generator=g)]
    masks = [torch.zeros(6, 9, dtype=torch.bool), torch.zeros(11, 4, dtype=torch.bool)]
    masks[0][1:3, 2:5] = True
    masks[1][5:9, 0:2] = True
    masks[1][0, 3] = True
    values = native_pixel_metrics(
        maps, masks, ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro", "pixel_aupro_cflow")
    )
    flat_scores = torch.cat([m.reshape(-1) for m in maps])
    flat_masks = torch.cat([m.reshape(-1) for m in masks])
    assert values["pixel_auroc"] == binary_metrics(flat_scores, flat_masks)["auroc"]
    # AUPRO equals the computation with regions numbered by hand across both images: three regions
    regions = torch.zeros_like(flat_scores, dtype=torch.long)
    regions[:54][masks[0].reshape(-1)] = 1
    second = torch.zeros(44, dtype=torch.long)
    second[masks[1].reshape(-1)] = 2
    second[3] = 3  # the lone pixel at (0, 3) is its own region
    regions[54:] = second
    assert values["pixel_aupro"] == aupro_exact(flat_scores, None, regions=regions)
    assert values["pixel_aupro_cflow"] == aupro_cflow(flat_scores, None, regions=regions)


def test_same_size_native_equals_eval_resolution(tmp_path):
    """When images already have the evaluation size, native metrics equal eval-resolution metrics."""
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(4, 16, 16, generator=g)
    masks = torch.zeros(4, 1, 16, 16)
    masks[1, 0, 3:8, 4:9] = 1
    masks[3, 0, 10:14, 2:6] = 1
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}_mask.png"
        Image.fromarray((masks[i, 0].numpy() * 255).astype(np.uint8)).save(path)
        paths.append(str(path) if masks[i].any() else "")
    batch = {
        "label": torch.tensor([0, 1, 0, 1]),
        "mask": masks,
        "category": ["c"] * 4,
        "dataset": ["d"] * 4,
        "index": torch.arange(4),
        "native_size": torch.tensor([[16, 16]] * 4),
        "mask_path": paths,
        "mask_threshold": torch.zeros(4, dtype=torch.long),
    }
    scores = Scores(image_logits=torch.zeros(4, 2), image_score=maps.amax(dim=(1, 2)), layer_probs=(), anomaly_map=maps)
    results = {}
    for resolution in ("eval", "native"):
        evaluator = Evaluator(resolution=resolution)
        evaluator.update(scores, batch)
        results[resolution] = evaluator.compute().per_category["d"]["c"]
    assert results["eval"] == results["native"]


def test_native_resolution_uses_the_image_size(tmp_path):
    """A 40x30 image: the map is upsampled to 40x30 and the mask read at that size."""
    mask = np.zeros((40, 30), dtype=np.uint8)
    mask[10:20, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    batch = {
        "label": torch.tensor([1, 0]),
        "mask": torch.zeros(2, 1, 8, 8),
        "category": ["c", "c"],
        "dataset": ["d", "d"],
        "index": torch.arange(2),
        "native_size": torch.tensor([[40, 30], [40, 30]]),
        "mask_path": [str(tmp_path / "m.png"), ""],
        "mask_threshold": torch.zeros(2, dtype=torch.long),
    }
    small = torch.zeros(2, 8, 8)
    small[0, 2:4, 1:4] = 1.0
    scores = Scores(
        image_logits=torch.zeros(2, 2), image_score=torch.tensor([0.9, 0.1]), layer_probs=(), anomaly_map=small
    )
    evaluator = Evaluator(resolution="native")
    evaluator.update(scores, batch)
    stored = evaluator.native.compute()[0]
    assert [tuple(m.shape) for m in stored[0]] == [(40, 30), (40, 30)]
    assert int(stored[1][0].sum()) == 100
    assert evaluator.compute().per_category["d"]["c"]["pixel_auroc"] > 0.9
