"""Cutting collated batches: runs of one dataset each, in the batch's order."""

from __future__ import annotations

import torch

from zsad.data.batch import dataset_runs


def test_dataset_runs_keep_the_order_and_every_entry():
    batch = {
        "image": torch.arange(5.0).view(5, 1),
        "dataset": ["mvtec", "mvtec", "visa", "visa", "mvtec"],
        "path": ["a", "b", "c", "d", "e"],
        "resolution": torch.tensor(64),  # not per sample: kept as it is
    }
    runs = dataset_runs(batch)
    assert [run["path"] for run in runs] == [["a", "b"], ["c", "d"], ["e"]]
    assert [run["image"].flatten().tolist() for run in runs] == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    assert all(run["resolution"] is batch["resolution"] for run in runs)
    single = {"image": torch.zeros(2, 1), "dataset": ["visa", "visa"]}
    assert dataset_runs(single) == [single]
