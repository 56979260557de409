"""Atomic writes: text and binary files go through one implementation that fsyncs before the rename."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch

from zsad.errors import WriteError
from zsad.workflow import atomic, checkpointing
from zsad.workflow.atomic import atomic_save, atomic_write, atomic_write_files, atomic_write_text, temporary_path
from zsad.workflow.checkpointing import AtomicCheckpointIO


def test_text_is_fsynced_then_renamed_into_place(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    path = atomic_write_text(tmp_path / "new" / "results.json", "{}\n")
    assert path == tmp_path / "new" / "results.json" and path.read_text() == "{}\n"
    assert len(synced) == 2  # the file's data, then the folder's entry for the rename
    assert atomic_write_text(str(path), "é\n").read_bytes() == "é\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "scores.csv", "old\n")

    def half_written(handle):
        handle.write(b"ne")
        raise KeyboardInterrupt  # e.g. the job is cancelled during the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_written)
    assert path.read_text() == "old\n" and not temporary_path(path).exists()


FULL_DISK = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "results.json", "old\n")

    def full(descriptor):
        raise FULL_DISK

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(
        WriteError, match=rf"Cannot write '{re.escape(str(path))}': No space left on device; the disk is full"
    ) as error:
        atomic_write_text(path, "new\n")
    assert isinstance(error.value, OSError) and error.value.errno == errno.ENOSPC  # still an OSError for callers
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def full(value, handle):
        handle.write(b"half")
        raise FULL_DISK

    monkeypatch.setattr(checkpointing.torch, "save", full)
    with pytest.raises(WriteError, match=rf"Cannot write '{re.escape(str(path))}': No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_several_files_change_together_or_not_at_all(tmp_path, monkeypatch):
    first, second = tmp_path / "scores.csv", tmp_path / "results.json"
    atomic_write_files([(first, b"scores 1"), (second, b"results 1")])
    real_open, opened = open, []

    def second_fails(path, mode="r", *args, **kwargs):  # the second file's write hits a full disk
        opened.append(path)
        if len(opened) == 2:
            raise FULL_DISK
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", second_fails)
    with pytest.raises(WriteError, match=r"results\.json"):
        atomic_write_files([(first, b"scores 2"), (second, b"results 2")])
    monkeypatch.undo()
    assert (first.read_bytes(), second.read_bytes()) == (b"scores 1", b"results 1")  # the first was not renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "scores.csv"]


def test_atomic_save_renames_companion_files_then_the_main_one(tmp_path):
    def save_with_external_data(destination):
        Path(destination).write_bytes(b"graph")
        Path(f"{destination}.data").write_bytes(b"weights")  # named after the final file, as ONNX does

    path = atomic_save(tmp_path / "model.onnx", save_with_external_data)
    assert path.read_bytes() == b"graph" and (tmp_path / "model.onnx.data").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]  # no staging folder left

    def interrupted(destination):
        Path(destination).write_bytes(b"gra")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(path, interrupted)
    assert path.read_bytes() == b"graph" and sorted(p.name for p in tmp_path.iterdir())[0] == "model.onnx"
