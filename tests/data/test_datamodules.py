"""Tests for MVTecDataModule and SyntheticDataModule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dataset_items import ITEM_KEYS
from lightning.pytorch.trainer.states import TrainerFn

from zsad.data import MVTecDataModule, SyntheticDataModule
from zsad.data.datasets import mvtec_records
from zsad.data.synthetic import SYNTHETIC_CATEGORIES
from zsad.errors import ConfigError
from zsad.registry import DATAMODULES

AUX = ["stripes", "disc"]
TARGETS = ["checker", "ring"]


def _module(root: Path, **kwargs) -> MVTecDataModule:
    options = {
        "aux_categories": AUX,
        "target_categories": TARGETS,
        "image_size": 64,
        "batch_size": 8,
        "num_workers": 0,
    }
    return MVTecDataModule(str(root), **{**options, **kwargs})


def _paths(loader) -> list[str]:
    return [path for batch in loader for path in batch["path"]]


def _categories(loader) -> set[str]:
    return {category for batch in loader for category in batch["category"]}


def test_registered_names() -> None:
    assert DATAMODULES.get("mvtec") is MVTecDataModule
    assert DATAMODULES.get("synthetic") is SyntheticDataModule


# ---------------------------------------------------------------------------------------------- overlap


@pytest.mark.parametrize("records", ["aux_records", "target_records"])
def test_overlap_is_refused(synthetic_root: Path, records: str) -> None:
    module = _module(synthetic_root, aux_categories=["disc", "ring"], target_categories=["ring", "checker"])
    with pytest.raises(ConfigError, match="allow_overlap") as info:
        getattr(module, records)()
    message = str(info.value)
    assert "'ring'" in message
    assert "'disc'" not in message and "'checker'" not in message
    assert str(synthetic_root) in message


def test_overlap_with_all_targets_explains_null(synthetic_root: Path) -> None:
    # target_categories=None means every category on disk, which includes the auxiliary ones
    module = _module(synthetic_root, target_categories=None)
    with pytest.raises(ConfigError, match="null") as info:
        module.target_records()
    assert "'disc'" in str(info.value) and "'stripes'" in str(info.value)


def test_allow_overlap_accepts(synthetic_root: Path) -> None:
    module = _module(synthetic_root, aux_categories=["ring"], target_categories=["ring"], allow_overlap=True)
    assert {r.category for r in module.aux_records()} == {"ring"}
    assert module.aux_records() == module.target_records()


def test_targets_default_to_every_category(synthetic_root: Path) -> None:
    module = _module(synthetic_root, aux_categories=None, target_categories=None)
    assert module.targets() == sorted(SYNTHETIC_CATEGORIES)
    assert module.aux_records() == []
    assert {r.category for r in module.target_records()} == set(SYNTHETIC_CATEGORIES)


def test_no_aux_categories_cannot_train(synthetic_root: Path) -> None:
    with pytest.raises(ConfigError, match="aux_categories"):
        _module(synthetic_root, aux_categories=[]).train_dataloader()


# ------------------------------------------------------------------------------------------- dataloaders


def test_train_loader(synthetic_root: Path) -> None:
    module = _module(synthetic_root)
    loader = module.train_dataloader()
    batches = list(loader)
    assert len(batches) == 4  # 2 categories x 16 images / 8
    for batch in batches:
        assert set(batch) == ITEM_KEYS
        assert batch["image"].shape == (8, 3, 64, 64)
        assert batch["image"].dtype == torch.float32
        assert batch["mask"].shape == (8, 1, 64, 64)
        assert batch["label"].shape == (8,)
        assert batch["label"].dtype == torch.int64
        assert isinstance(batch["category"], list) and len(batch["category"]) == 8
        assert set(batch["dataset"]) == {"mvtec"}
    assert _categories(batches) == set(AUX)
    aux_paths = [str(r.path) for r in module.aux_records()]
    assert sorted(_paths(batches)) == sorted(aux_paths)  # every auxiliary image exactly once per epoch


def test_train_loader_shuffles(synthetic_root: Path) -> None:
    module = _module(synthetic_root, image_size=32)
    torch.manual_seed(0)
    first = _paths(module.train_dataloader())
    assert first != [str(r.path) for r in module.aux_records()]


def test_test_loader(synthetic_root: Path) -> None:
    module = _module(synthetic_root, eval_batch_size=5)
    loader = module.test_dataloader()
    assert loader.batch_size == 5
    batches = list(loader)
    assert len(batches) == 7  # 32 images in batches of 5
    assert batches[0]["image"].shape == (5, 3, 64, 64)
    assert batches[0]["mask"].shape == (5, 1, 64, 64)
    assert batches[-1]["image"].shape == (2, 3, 64, 64)
    assert _categories(batches) == set(TARGETS)
    labels = torch.cat([batch["label"] for batch in batches])
    masks = torch.cat([batch["mask"] for batch in batches])
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks[labels == 0] == 0).all()
    assert (masks[labels == 1].flatten(1).sum(1) > 0).all()


def test_test_order_is_deterministic(synthetic_root: Path) -> None:
    module = _module(synthetic_root, image_size=32)
    expected = [str(r.path) for c in TARGETS for r in mvtec_records(synthetic_root, c)]
    assert _paths(module.test_dataloader()) == expected
    assert _paths(module.test_dataloader()) == expected
    assert _paths(_module(synthetic_root, image_size=32).test_dataloader()) == expected


def test_eval_batch_size_defaults_to_batch_size(synthetic_root: Path) -> None:
    assert _module(synthetic_root, batch_size=3).test_dataloader().batch_size == 3
    assert _module(synthetic_root, batch_size=3).train_dataloader().batch_size == 3


def test_val_and_predict_serve_the_targets_without_trainer(synthetic_root: Path) -> None:
    module = _module(synthetic_root, image_size=32)
    assert module.trainer is None
    expected = _paths(module.test_dataloader())
    validation = module.val_dataloader()
    assert not isinstance(validation, list)
    assert _paths(validation) == expected
    assert _paths(module.predict_dataloader()) == expected


@pytest.mark.parametrize(("stage", "serves_targets"), [(TrainerFn.FITTING, False), (TrainerFn.VALIDATING, True)])
def test_val_loader_is_empty_while_fitting(synthetic_root: Path, stage: TrainerFn, serves_targets: bool) -> None:
    module = _module(synthetic_root, image_size=32)
    module.trainer = SimpleNamespace(state=SimpleNamespace(fn=stage))  # stands in for a Trainer
    loader = module.val_dataloader()
    assert (loader != []) is serves_targets


# -------------------------------------------------------------------------------------------- synthetic


SMALL = {"aux_categories": ("stripes",), "target_categories": ("disc",), "generated_size": 32}
SMALL_COUNTS = {"n_test_good": 2, "n_test_per_defect": 1}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_module_caches_under_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    module = SyntheticDataModule(**SMALL, **SMALL_COUNTS, image_size=32)
    root = Path(module.root)
    assert root.parent == tmp_path / "cache"
    assert root.name.startswith("synthetic-")
    assert not root.exists()  # nothing is written before the data is needed
    module.prepare_data()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["disc", "stripes"]
    assert len(module.target_records()) == 2 + 5 * 1
    assert {r.dataset for r in module.target_records()} == {"synthetic"}

    files = _files(root)
    again = SyntheticDataModule(**SMALL, **SMALL_COUNTS, image_size=64)  # load size is not part of the data
    assert Path(again.root) == root
    again.prepare_data()
    assert again.aux_records() and again.target_records()
    assert _files(root) == files  # nothing regenerated

    other = SyntheticDataModule(**SMALL, **SMALL_COUNTS, seed=1)
    assert Path(other.root).parent == root.parent
    assert Path(other.root) != root
    bigger = SyntheticDataModule(**SMALL, n_test_good=3, n_test_per_defect=1)
    assert Path(bigger.root) not in (root, Path(other.root))
    marked = SyntheticDataModule(**SMALL, **SMALL_COUNTS, defect_look="marked")
    assert marked.spec.defect_look == "marked"
    assert Path(marked.root) not in (root, Path(other.root), Path(bigger.root))


def test_synthetic_module_explicit_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    module = SyntheticDataModule(root=str(tmp_path / "mine"), **SMALL, **SMALL_COUNTS, image_size=32)
    assert Path(module.root) == tmp_path / "mine"
    batch = next(iter(module.train_dataloader()))  # generates on first use
    assert batch["image"].shape[1:] == (3, 32, 32)
    assert set(batch["category"]) == {"stripes"}
    assert {category for b in module.test_dataloader() for category in b["category"]} == {"disc"}
    assert not (tmp_path / "cache").exists()


def test_synthetic_module_refuses_overlap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_overlap"):
        SyntheticDataModule(
            root=str(tmp_path), aux_categories=("disc",), target_categories=("disc",), **SMALL_COUNTS
        ).target_records()


def test_workers_start_from_a_fork_server_only_under_ddp(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zsad.data.datamodule.usable_cpus", lambda: 2)
    assert _module(synthetic_root, num_workers=2).test_dataloader().multiprocessing_context is None  # torch's default
    monkeypatch.setattr("zsad.data.datamodule.in_process_group", lambda: True)
    assert _module(synthetic_root, num_workers=0).test_dataloader().multiprocessing_context is None  # no workers
    module = _module(synthetic_root, num_workers=2, eval_batch_size=16)
    loader = module.test_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    direct = _module(synthetic_root, eval_batch_size=16).test_dataloader()
    assert _paths(loader) == _paths(direct)  # the dataset travels to the fork-server's workers and reads the same
    train = module.train_dataloader()
    assert train.multiprocessing_context.get_start_method() == "forkserver"
    assert next(iter(train))["image"].shape == (8, 3, 64, 64)
