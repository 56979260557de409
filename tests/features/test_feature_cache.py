"""The training feature cache: hits and misses, what its key covers, fp16 storage, disk reuse and atomic writes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from zsad.backbones import TinyRandomBackbone
from zsad.backbones.windows import WindowFeatures
from zsad.data.datasets.base import AnomalyDataset, SampleRecord
from zsad.errors import ConfigError
from zsad.features import FeatureCacheSettings, open_training_cache
from zsad.features.keys import FileHasher
from zsad.features.records import FeatureLayout, split_features, stack_entries
from zsad.prompts import StaticPrompt


def write_image(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def image_files(tmp_path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    return [write_image(folder / f"{i}.png", i) for i in range(3)]


def loader_of(paths: list[Path], image_size: int = 64, interpolation: str = "bicubic") -> DataLoader:
    records = [SampleRecord(path=p, label=0, category="tile", defect_type="good") for p in paths]
    return DataLoader(AnomalyDataset(records, image_size, interpolation=interpolation), batch_size=len(records))


def batch_of(paths: list[Path]) -> dict:
    dataset = loader_of(paths).dataset
    return default_collate([dataset[i] for i in range(len(paths))])


def open_cache(paths, mode="memory", **options):
    return open_training_cache(FeatureCacheSettings(mode, **options), StaticPrompt(), loader_of(paths))


def assert_same_features(a, b):
    assert torch.equal(a.global_embedding, b.global_embedding)
    assert all(torch.equal(x, y) for x, y in zip(a.patch_tokens, b.patch_tokens, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a.vv_tokens, b.vv_tokens, strict=True))
    assert (a.layers, a.grid) == (b.layers, b.grid)


def test_hits_and_misses_are_counted_and_replays_are_exact(tiny_backbone, image_files):
    cache = open_cache(image_files)
    batch = batch_of(image_files)
    with torch.no_grad():
        direct = tiny_backbone(batch["image"])
    first = cache.features(batch, tiny_backbone)
    assert (cache.counts.hits, cache.counts.misses) == (0, 3)
    again = cache.features(batch, tiny_backbone)
    assert (cache.counts.hits, cache.counts.misses) == (3, 3)
    assert_same_features(first, direct)
    assert_same_features(again, direct)
    # a batch mixing seen and unseen images computes only the unseen one, and keeps the batch order
    extra = write_image(image_files[0].parent / "extra.png", 99)
    mixed = cache.features(batch_of([image_files[2], extra, image_files[0]]), tiny_backbone)
    assert (cache.counts.hits, cache.counts.misses) == (5, 4)
    assert torch.equal(mixed.global_embedding[0], direct.global_embedding[2])
    assert torch.equal(mixed.vv_tokens[1][2], direct.vv_tokens[1][0])


def test_rewritten_image_bytes_miss(tiny_backbone, image_files):
    cache = open_cache(image_files)
    first = cache.features(batch_of(image_files), tiny_backbone)
    stat = image_files[1].stat()
    write_image(image_files[1], seed=1234)  # same name, new picture
    os.utime(image_files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a later edit would
    batch = batch_of(image_files)
    replayed = cache.features(batch, tiny_backbone)
    assert (cache.counts.hits, cache.counts.misses) == (2, 4)
    # the miss is computed alone, so compare it with a batch of one: BLAS may round a batch of three differently
    with torch.no_grad():
        rewritten = tiny_backbone(batch["image"][1:2]).global_embedding[0]
    assert torch.equal(replayed.global_embedding[1], rewritten)
    assert not torch.allclose(replayed.global_embedding[1], first.global_embedding[1])
    assert torch.equal(replayed.global_embedding[0::2], first.global_embedding[0::2])


def test_file_hash_is_computed_once_per_version(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.png", 0)
    hasher = FileHasher()
    first = hasher(path)
    monkeypatch.setattr("zsad.features.keys._sha256_of_file", lambda _: pytest.fail("hashed twice"))
    assert hasher(path) == first


@pytest.mark.parametrize(
    "change",
    ["layers", "vv_start_layer", "global_ln_post", "backbone_size", "transform_size", "interpolation", "fp16"],
)
def test_namespace_changes_with_each_key_ingredient(tiny_backbone, image_files, change):
    reference = open_cache(image_files).namespace(tiny_backbone, torch.device("cpu"))[0]
    backbone, loader, fp16 = tiny_backbone, loader_of(image_files), False
    backbone_changes = {
        "layers": {"layers": (12, 24)},
        "vv_start_layer": {"vv_start_layer": 1},
        "global_ln_post": {"global_ln_post": False},
        "backbone_size": {"image_size": 32},
    }
    if change in backbone_changes:
        backbone = TinyRandomBackbone(**{"vv_start_layer": 6, **backbone_changes[change]})
    elif change == "transform_size":
        loader = loader_of(image_files, image_size=32)
    elif change == "interpolation":
        loader = loader_of(image_files, interpolation="bilinear")
    else:
        fp16 = True
    cache = open_training_cache(FeatureCacheSettings("memory", fp16=fp16), StaticPrompt(), loader)
    assert cache.namespace(backbone, torch.device("cpu"))[0] != reference


def test_namespace_changes_under_autocast(tiny_backbone, image_files):
    cache = open_cache(image_files)
    plain = cache.namespace(tiny_backbone, torch.device("cpu"))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cache.namespace(tiny_backbone, torch.device("cpu"))[0] != plain


def test_layers_change_recomputes_features(tiny_backbone, image_files):
    batch = batch_of(image_files)
    cache = open_cache(image_files)
    cache.features(batch, tiny_backbone)
    fewer = TinyRandomBackbone(vv_start_layer=6, layers=(12, 24))
    replayed = cache.features(batch, fewer)  # the same cache object, asked with another backbone
    assert cache.counts.misses == 6
    assert replayed.layers == (12, 24) and len(replayed.patch_tokens) == 2


def test_fp16_storage_replays_in_the_original_dtype(tiny_backbone, image_files):
    cache = open_cache(image_files, fp16=True)
    batch = batch_of(image_files)
    with torch.no_grad():
        direct = tiny_backbone(batch["image"])
    first = cache.features(batch, tiny_backbone)
    replayed = cache.features(batch, tiny_backbone)
    store = cache.store_for(tiny_backbone, torch.device("cpu"))
    entry = store.get(cache.hasher(image_files[0]))
    assert all(t.dtype == torch.float16 for t in entry.values())
    assert replayed.global_embedding.dtype == torch.float32
    assert_same_features(first, replayed)  # the filling epoch already sees the rounded values
    exact = [direct.global_embedding, *direct.vv_tokens]
    for expected, rounded in zip(exact, [replayed.global_embedding, *replayed.vv_tokens], strict=True):
        torch.testing.assert_close(rounded, expected, rtol=1e-3, atol=1e-3)


def test_disk_cache_is_reused_by_a_new_instance(tiny_backbone, image_files, tmp_path, monkeypatch):
    batch = batch_of(image_files)
    options = {"mode": "disk", "directory": str(tmp_path / "cache")}
    filled = open_cache(image_files, **options).features(batch, tiny_backbone)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    fresh = open_cache(image_files, **options)
    monkeypatch.setattr(tiny_backbone, "forward", lambda *_: pytest.fail("every image is on disk"))
    replayed = fresh.features(batch, tiny_backbone)
    assert (fresh.counts.hits, fresh.counts.misses) == (3, 0)
    assert_same_features(replayed, filled)


REPLAY_SCRIPT = """
import sys
import torch
from torch.utils.data import DataLoader, default_collate
from zsad.backbones import TinyRandomBackbone
from zsad.data.datasets.base import AnomalyDataset, SampleRecord
from zsad.features import FeatureCacheSettings, open_training_cache
from zsad.prompts import StaticPrompt

records = [SampleRecord(path=p, label=0, category="tile", defect_type="good") for p in sys.argv[1:]]
dataset = AnomalyDataset(records, 64)
backbone = TinyRandomBackbone(vv_start_layer=6)
backbone.forward = lambda *_: sys.exit("computed instead of replayed")
settings = FeatureCacheSettings("disk", directory={directory!r})
cache = open_training_cache(settings, StaticPrompt(), DataLoader(dataset))
features = cache.features(default_collate([dataset[i] for i in range(len(dataset))]), backbone)
torch.save(features.vv_tokens[0], {out!r})
print(cache.counts.hits, cache.counts.misses)
"""


@pytest.mark.slow
def test_disk_cache_is_reused_by_a_new_process(tiny_backbone, image_files, tmp_path):
    directory = str(tmp_path / "cache")
    filled = open_cache(image_files, mode="disk", directory=directory).features(batch_of(image_files), tiny_backbone)
    out = tmp_path / "replayed.pt"
    script = REPLAY_SCRIPT.format(directory=directory, out=str(out))
    command = [sys.executable, "-c", script, *map(str, image_files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "0"]
    assert torch.equal(torch.load(out), filled.vv_tokens[0])


def test_leftover_temporary_and_broken_entries_are_not_trusted(tiny_backbone, image_files, tmp_path, caplog):
    batch = batch_of(image_files)
    options = {"mode": "disk", "directory": str(tmp_path / "cache")}
    cache = open_cache(image_files, **options)
    first_pass = cache.features(batch, tiny_backbone)
    store = cache.store_for(tiny_backbone, torch.device("cpu"))
    first, second = (store.path(cache.hasher(p)) for p in image_files[:2])
    # a run killed mid-write leaves only a temporary file beside the entry; a broken entry is recomputed
    first.rename(first.parent / f".{first.name}.abcd.tmp")
    second.write_bytes(second.read_bytes()[:100])
    fresh = open_cache(image_files, **options)
    with caplog.at_level(logging.WARNING, logger="zsad.features.stores"):
        replayed = fresh.features(batch, tiny_backbone)
    assert (fresh.counts.hits, fresh.counts.misses) == (1, 2)
    assert "unreadable" in caplog.text
    with torch.no_grad():  # the two misses are computed together: compare with the same batch of two
        recomputed = tiny_backbone(batch["image"][:2]).global_embedding
    assert torch.equal(replayed.global_embedding[:2], recomputed)
    assert torch.equal(replayed.global_embedding[2], first_pass.global_embedding[2])
    assert (
        first.exists()
        and torch.load(second, weights_only=True).keys() == store.get(cache.hasher(image_files[2])).keys()
    )


def test_interrupted_write_leaves_no_entry(tiny_backbone, image_files, tmp_path, monkeypatch):
    options = {"mode": "disk", "directory": str(tmp_path / "cache")}
    cache = open_cache(image_files, **options)

    def killed(value, handle):
        handle.write(b"half an entry")
        raise KeyboardInterrupt

    monkeypatch.setattr("zsad.features.stores.torch.save", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.features(batch_of(image_files), tiny_backbone)
    monkeypatch.undo()
    assert not list((tmp_path / "cache").rglob("*.pt")) and not list((tmp_path / "cache").rglob("*.tmp"))


class RandomFlip:
    def __call__(self, image):
        return image


def test_random_or_unknown_transforms_refuse_the_cache(tiny_backbone, image_files, caplog):
    loader = loader_of(image_files)
    loader.dataset.image_transform = RandomFlip()
    with caplog.at_level(logging.INFO, logger="zsad.features.policy"):
        assert open_training_cache(FeatureCacheSettings("auto"), StaticPrompt(), loader) is None
    assert "RandomFlip, which is not known to be deterministic" in caplog.text
    with pytest.raises(ConfigError, match=r"feature_cache=disk cannot be used: .*RandomFlip"):
        open_training_cache(FeatureCacheSettings("disk"), StaticPrompt(), loader)
    RandomFlip.cache_key = lambda self: {"flips": False}  # a transform may declare itself deterministic
    try:
        assert open_training_cache(FeatureCacheSettings("auto"), StaticPrompt(), loader) is not None
    finally:
        del RandomFlip.cache_key


def test_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="'ram' is not a cache mode; use one of auto, memory, disk, off"):
        FeatureCacheSettings("ram")


def test_memory_estimate_turns_auto_off(tiny_backbone, image_files, monkeypatch, caplog):
    monkeypatch.setattr("zsad.features.cache.available_memory", lambda: 1000)
    cache = open_cache(image_files, mode="auto")
    with caplog.at_level(logging.WARNING, logger="zsad.features.cache"):
        cache.features(batch_of(image_files), tiny_backbone)
    assert "feature_cache: disk" in caplog.text and not cache.active
    cache.features(batch_of(image_files), tiny_backbone)
    assert cache.counts.hits == 0


def test_any_features_record_round_trips_through_entries_and_json_layouts():
    windows = WindowFeatures(
        global_embedding=torch.randn(2, 4),
        patch_tokens=(torch.randn(2, 9, 4),),
        layers=(12,),
        grid=(3, 3),
        window_embeddings=(torch.randn(2, 4, 4), torch.randn(2, 1, 4)),
        window_sizes=(2, 3),
        class_names=("tile", "tile"),
    )
    layout, entries = split_features(windows, storage_dtype=None)
    layout = FeatureLayout.from_dict(json.loads(json.dumps(layout.to_dict())))  # as a disk store keeps it
    back = stack_entries(layout, entries, torch.device("cpu"))
    assert type(back) is WindowFeatures and back.class_names is None  # names come from each batch, not the cache
    assert (back.layers, back.grid, back.window_sizes, back.vv_tokens) == ((12,), (3, 3), (2, 3), None)
    assert all(torch.equal(a, b) for a, b in zip(back.window_embeddings, windows.window_embeddings, strict=True))
