"""Atomic writes: text and binary files go through one implementation that fsyncs before the rename."""

from __future__ import annotations

import os

import pytest

from zsad.workflow import atomic
from zsad.workflow.atomic import atomic_write, atomic_write_text, temporary_path


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
