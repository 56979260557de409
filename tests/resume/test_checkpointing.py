"""Atomic checkpoint writes, saved random states, and the defaults `zsad fit` adds to every trainer."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO

from zsad.workflow.atomic import temporary_path
from zsad.workflow.checkpointing import (
    AtomicCheckpointIO,
    FreshCheckpointFolder,
    LatestCheckpointLink,
    RNGStateCheckpoint,
    collect_rng_states,
    restore_rng_states,
    resumable_trainer_options,
)


def test_checkpoint_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert io.load_checkpoint(path) == {"step": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def half_written(obj, handle):
        handle.write(b"\x80\x02half")
        raise KeyboardInterrupt  # e.g. the job is cancelled during the write

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path) == {"step": 1}
    assert not temporary_path(path).exists()


def test_a_left_over_temporary_file_is_not_a_last_checkpoint(tmp_path):
    """What a SIGKILL during a write leaves behind is never found by `--ckpt_path last`."""
    callback = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    (tmp_path / "last.ckpt").write_bytes(b"complete")
    leftover = temporary_path(tmp_path / "last.ckpt")
    leftover.write_bytes(b"half")
    os.utime(leftover, (2e9, 2e9))  # newer than last.ckpt
    assert leftover.name.startswith(".last.ckpt.") and leftover.suffix == ".tmp"
    assert callback._find_last_checkpoints(Trainer(logger=False, enable_checkpointing=False)) == {
        os.path.normpath(tmp_path / "last.ckpt")
    }


def test_random_states_round_trip_and_load_without_pickle(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    path = tmp_path / "states.pt"
    torch.save(RNGStateCheckpoint().state_dict(), path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    callback = RNGStateCheckpoint()
    callback.load_state_dict(torch.load(path, weights_only=True))
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    callback.on_train_start(Trainer(logger=False, enable_checkpointing=False), None)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    restore_rng_states(collect_rng_states())  # idempotent


def test_defaults_are_added_once():
    options = resumable_trainer_options({})
    assert [type(p) for p in options["plugins"]] == [AtomicCheckpointIO]
    added = [ModelCheckpoint, FreshCheckpointFolder, LatestCheckpointLink, RNGStateCheckpoint]
    assert [type(c) for c in options["callbacks"]] == added
    assert options["callbacks"][0].save_last  # a default ModelCheckpoint keeps last.ckpt, which the link points at
    mine, checkpoint = TorchCheckpointIO(), ModelCheckpoint()
    options = resumable_trainer_options({"plugins": mine, "callbacks": [checkpoint, RNGStateCheckpoint()]})
    assert options["plugins"] == [mine]  # a configured checkpoint I/O wins
    assert options["callbacks"][0] is checkpoint  # and a configured ModelCheckpoint
    assert [type(c) for c in options["callbacks"]] == [ModelCheckpoint, RNGStateCheckpoint, *added[1:3]]
    assert ModelCheckpoint not in map(type, resumable_trainer_options({"enable_checkpointing": False})["callbacks"])
    assert resumable_trainer_options({"strategy": "fsdp"})["plugins"] is None  # sharded checkpoints: left alone


def test_remote_paths_keep_lightnings_writer():
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 3}, "memory://zsad-test/last.ckpt")  # fsspec's in-memory file system
    assert io.load_checkpoint("memory://zsad-test/last.ckpt") == {"step": 3}
