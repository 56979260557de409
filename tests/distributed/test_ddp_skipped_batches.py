"""2 processes whose batches may be all unreadable images (``on_bad_image: skip``): the fit neither hangs nor fails,
and the test's metrics and skipped list equal the 1-process test's.

At batch size 1 per process, a training set with damaged images gives one process a batch with nothing to train on
while the other has an image. DDP's gradient all-reduce needs every process to run backward at every step, so the
empty batch still has to give a loss connected to every trainable parameter (with zero gradient).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import config_args, newest_results, run_zsad, trained_state, zsad_environment

from zsad.data import SyntheticDataModule

CHECKPOINT = Path("runs/smoke/last.ckpt")
DAMAGED = {"stripes": ("000.png", "001.png", "002.png", "003.png"), "ring": ("000.png", "004.png")}


def damaged_copy(source: Path, target: Path) -> Path:
    """The synthetic categories with some normal test images truncated: 4 of stripes' (training), 2 of ring's."""
    shutil.copytree(source, target)
    for category, names in DAMAGED.items():
        for name in names:
            image = target / category / "test" / "good" / name
            image.write_bytes(image.read_bytes()[:60])
    return target


@pytest.mark.slow
def test_a_process_with_an_all_unreadable_batch_keeps_step_with_the_other(tmp_path):
    data = SyntheticDataModule(
        str(tmp_path / "synthetic"), aux_categories=["stripes"], target_categories=["ring"], n_test_per_defect=1
    )
    data.prepare_data()
    root = damaged_copy(tmp_path / "synthetic", tmp_path / "damaged")
    args = [
        *config_args("backbone/tiny.yaml", "method/static.yaml", "trainer/smoke.yaml"),
        "--data=mvtec",
        f"--data.init_args.root={root}",
        "--data.init_args.aux_categories=[stripes]",  # 11 images, 4 unreadable: 6 steps of 1 per process
        "--data.init_args.target_categories=[ring]",
        "--data.init_args.image_size=64",
        "--data.init_args.batch_size=1",
        "--data.init_args.on_bad_image=skip",
        # loader workers start from a fork-server under DDP (zsad.data.datamodule.worker_start_method): forked ones
        # hung here once, stuck in Python's after-fork clean-up
        "--data.init_args.num_workers=2",
        "--model.feature_cache=off",
        "--trainer.max_epochs=1",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.enable_progress_bar=false",
    ]
    env = zsad_environment(tmp_path / "cache")
    output = run_zsad("fit", args, tmp_path, env, timeout=240)
    assert output.count("Skipped training image") == len(DAMAGED["stripes"])
    checkpoint = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in trained_state(tmp_path / CHECKPOINT).values())

    test = [*args, f"--ckpt_path={CHECKPOINT}", "--data.init_args.eval_batch_size=1"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_zsad(
        "test",
        [*test, "--trainer.devices=1", "--trainer.strategy=auto", f"--trainer.default_root_dir={single}"],
        tmp_path,
        env,
    )
    run_zsad("test", [*test, f"--trainer.default_root_dir={double}"], tmp_path, env)
    one, two = newest_results(single), newest_results(double)
    assert sorted(Path(s["path"]).name for s in two["skipped"]) == sorted(DAMAGED["ring"])
    assert two["skipped"] == one["skipped"] and two["counts"] == one["counts"]
    assert two["counts"]["mvtec"]["ring"]["normal"] == 6 - len(DAMAGED["ring"])
    assert two["per_category"] == one["per_category"] and two["mean"] == one["mean"]
