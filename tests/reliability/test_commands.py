"""Bad input and faults on the command line: one `zsad: error:` line that names the file, key or value, exit code 2,
no traceback, and nothing lost (README, "Bad input"; docs/reliability.md).

One table: each row sets up a folder, runs one command in-process and says what the error line must name and
which files must come through unchanged. Every failure happens before any training, so the table stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image

from zsad.workflow import atomic, outputs
from zsad.workflow.lock import FolderLock
from zsad.workflow.predict import save_overlay
from zsad.workflow.results import ResultsWriter

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
STATIC = ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml")
WINCLIP = ("method/winclip.yaml", "backbone/tiny_winclip.yaml")
FULL_DISK = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def configs(*names: str) -> list[str]:
    """``-c`` arguments for shipped configs."""
    return [arg for name in names for arg in ("-c", str(CONFIGS / name))]


def write(path: Path, text: str | bytes) -> Path:
    """Write a file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def image_folder(tmp: Path) -> Path:
    """A folder with one small PNG for `zsad predict --images`."""
    (tmp / "images").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (120, 80, 40)).save(tmp / "images" / "a.png")
    return tmp / "images"


def predict_args(tmp: Path, out: Path | str, *more: str) -> list[str]:
    """`zsad predict` of a training-free config on one image (the model never loads in these rows)."""
    return ["predict", *configs(*WINCLIP), "--images", str(image_folder(tmp)), "--out", str(out), *more]


def grid_file(tmp: Path, base: list[str]) -> Path:
    """A one-run grid file composing ``base``."""
    document = {"base": base, "grid": {"seed_everything": [0]}}
    return write(tmp / "grid.yaml", yaml.safe_dump(document))


def results_document(per_category: dict, scores_sha256: str | None = None) -> dict:
    """A results.json as `zsad test` writes it, for one dataset ``toy``."""
    metrics = {m for values in per_category.values() for m in values}
    mean = {m: 0.5 for m in metrics}
    document = {
        "per_category": {"toy": per_category},
        "per_dataset": {"toy": mean},
        "mean": mean,
        "model": {"prompt": {"class_path": "zsad.prompts.static.StaticPrompt", "init_args": {}}},
        "protocol": {"name": "toy-within", "aux": [], "targets": [{"dataset": "toy", "categories": ["a"]}]},
        "seed": 0,
        "checkpoint": "untrained",
    }
    if scores_sha256 is not None:
        document["scores"] = {"file": "scores.csv", "sha256": scores_sha256, "images": 2}
    return document


# ------------------------------------------------------------------------------------------------ the set-ups
# Each takes (tmp folder, monkeypatch, exit stack) and returns the command line.

Setup = Callable[[Path, pytest.MonkeyPatch, contextlib.ExitStack], list[str]]


def typo_in_config_file(tmp, monkeypatch, stack):
    write(tmp / "typo.yaml", "model:\n  prompt:\n    init_args:\n      n_ctxx: 3\n")
    return ["fit", *configs(*STATIC), "-c", "typo.yaml"]


def missing_data_root(tmp, monkeypatch, stack):
    write(tmp / "noroot.yaml", "data:\n  class_path: mvtec\n  init_args:\n    image_size: 64\n")
    return ["test", *configs("backbone/tiny.yaml", "method/static.yaml"), "-c", "noroot.yaml", "--untrained=true"]


def head_name_in_config_file(tmp, monkeypatch, stack):
    write(tmp / "head.yaml", "model:\n  head: nohead\n")
    return ["fit", *configs(*STATIC), "-c", "head.yaml"]


def broken_yaml(tmp, monkeypatch, stack):
    write(tmp / "broken.yaml", "model:\n  head:\n    sigma: [1, 2\n")
    return ["fit", *configs(*STATIC), "-c", "broken.yaml"]


def text_checkpoint(tmp, monkeypatch, stack):
    write(tmp / "notes.ckpt", "not a checkpoint\n")
    return ["test", *configs(*STATIC), f"--ckpt_path={tmp / 'notes.ckpt'}"]


def results_on_a_full_disk(tmp, monkeypatch, stack):
    """`zsad test` whose results.json and scores.csv cannot be written: the table is printed, old files kept."""
    write(tmp / "run" / "results.json", '{"old": true}\n')
    write(tmp / "run" / "scores.csv", "old scores\n")
    real_end = ResultsWriter.on_test_end

    def full_disk_while_writing(self, trainer, pl_module):
        def fsync(descriptor):
            raise FULL_DISK

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(atomic.os, "fsync", fsync)
            real_end(self, trainer, pl_module)

    monkeypatch.setattr(ResultsWriter, "on_test_end", full_disk_while_writing)
    small = ["--data.init_args.target_categories=[ring]", "--data.init_args.n_test_good=2"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    results = f"--results.filename={tmp / 'run' / 'results.json'}"
    return ["test", *configs(*STATIC, "trainer/smoke.yaml"), "--untrained=true", *small, *quiet, results]


def grid_on_a_folder_in_use(tmp, monkeypatch, stack):
    write(tmp / "out" / "static-seed0-12345678" / "checkpoints" / "last.ckpt", b"a live run's checkpoint")
    stack.enter_context(FolderLock(tmp / "out", "zsad grid"))  # another `zsad grid` (here: this process) holds it
    base = [str(CONFIGS / name) for name in (*STATIC, "trainer/smoke.yaml")]
    return ["grid", str(grid_file(tmp, base)), "--out", str(tmp / "out")]


def grid_with_broken_base(tmp, monkeypatch, stack):
    write(tmp / "bad.yaml", "model:\n  prompt: [\n bad\n")
    return ["grid", str(grid_file(tmp, [str(CONFIGS / "backbone/tiny.yaml"), "bad.yaml"])), "--out", "out"]


def export_to_a_folder(tmp, monkeypatch, stack):
    (tmp / "exported").mkdir()
    return ["export", *configs(*WINCLIP), "--out", str(tmp / "exported")]


def export_under_a_file(tmp, monkeypatch, stack):
    write(tmp / "file", "a file\n")
    return ["export", *configs(*WINCLIP), "--out", str(tmp / "file" / "model.onnx")]


def export_on_a_full_disk(tmp, monkeypatch, stack):
    """The ONNX translation is faked (fast); its save writes half a file and hits a full disk."""
    pytest.importorskip("onnxscript")
    write(tmp / "model.onnx", b"a good model from yesterday")

    def half_written(destination):
        Path(destination).write_bytes(b"half a mod")
        raise FULL_DISK

    program = SimpleNamespace(model=SimpleNamespace(metadata_props={}), save=half_written)
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: program)
    return ["export", *configs(*WINCLIP), "--class-name", "bottle", "--out", str(tmp / "model.onnx")]


def predict_into_used_folder(tmp, monkeypatch, stack):
    write(tmp / "out" / "scores.csv", "path,score\nold.png,0.500000\n")
    write(tmp / "out" / "skipped.txt", "")
    save_overlay(Image.new("RGB", (8, 8)), tmp / "out" / "overlays" / "old.png")
    return predict_args(tmp, tmp / "out")


def predict_overwrite_beside_foreign_files(tmp, monkeypatch, stack):
    write(tmp / "out" / "scores.csv", "path,score\nold.png,0.500000\n")
    write(tmp / "out" / "overlays" / "notes.txt", "mine, not zsad's\n")
    return predict_args(tmp, tmp / "out", "--overwrite")


def predict_out_is_a_file(tmp, monkeypatch, stack):
    write(tmp / "out.csv", "a file\n")
    return predict_args(tmp, tmp / "out.csv")


def predict_out_read_only(tmp, monkeypatch, stack):
    (tmp / "locked").mkdir()
    if os.geteuid() == 0:  # permission bits do not bind root: make the write probe fail as a read-only disk would

        def refused(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(outputs.tempfile, "mkstemp", refused)
    else:
        (tmp / "locked").chmod(0o500)
    return predict_args(tmp, tmp / "locked" / "out")


def predict_on_a_missing_gpu(tmp, monkeypatch, stack):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return predict_args(tmp, tmp / "out", "--device", "cuda")


def report_with_a_wrong_type(tmp, monkeypatch, stack):
    write(tmp / "runs" / "a" / "results.json", json.dumps(results_document({"a": {"image_auroc": "0.9"}})))
    return ["report", str(tmp / "runs"), "--out", str(tmp / "report"), "--no-plots"]


def report_with_another_runs_scores(tmp, monkeypatch, stack):
    write(tmp / "runs" / "a" / "scores.csv", "dataset,category,path,label,score\ntoy,a,x.png,1,0.9\n")
    recorded = "0" * 64  # the SHA-256 of the scores.csv this results.json was written with (since replaced)
    write(tmp / "runs" / "a" / "results.json", json.dumps(results_document({"a": {"image_auroc": 0.9}}, recorded)))
    return ["report", str(tmp / "runs"), "--out", str(tmp / "report"), "--no-plots"]


def demo_with_a_misspelt_backbone(tmp, monkeypatch, stack):
    write(tmp / "demo" / "overlays" / "earlier.png", b"an earlier demo's picture")
    return ["demo", "--backbone", "tiny-randm", "--out", str(tmp / "demo")]


@dataclass(frozen=True)
class Case:
    """One row: how to set up, what the error line names (``{tmp}`` is the row's folder), what must survive.

    Attributes:
        id: The row's name.
        setup: Creates the files and returns the command line.
        names: Fragments of the ``zsad: error:`` line.
        kept: Files (relative to the folder) that exist before the run and must be byte-for-byte unchanged.
        printed: Fragments the output must hold besides the error line (e.g. the results table).
        absent: Glob patterns (relative to the folder) that must match nothing afterwards (half-written files).
    """

    id: str
    setup: Setup
    names: tuple[str, ...]
    kept: tuple[str, ...] = ()
    printed: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()


def argv(*args: str) -> Setup:
    """A set-up that only gives a command line."""
    return lambda tmp, monkeypatch, stack: list(args)


CASES = [
    # ---- cases that already worked
    Case("unknown command", argv("trian"), ("unknown command 'trian'",)),
    Case("unknown option", argv("fit", *configs(*STATIC), "--bogus", "1"), ("Unknown option(s) --bogus 1",)),
    Case(
        "config key typo on the command line",
        argv("fit", *configs(*STATIC), "--model.head.init_args.temprature=1"),
        ("'model.head.init_args.temprature' (on the command line)", "Did you mean 'temperature'?"),
    ),
    Case(
        "config key typo in a file",
        typo_in_config_file,
        ("Unknown key 'model.prompt.init_args.n_ctxx' (in config file 'typo.yaml')", "Did you mean 'n_ctx'?"),
    ),
    Case(
        "value of the wrong type",
        argv("fit", *configs(*STATIC), "--trainer.max_epochs=abc"),
        ("Invalid value for 'trainer.max_epochs'", "expected int or null, got 'abc'"),
    ),
    Case(
        "value not among the choices",
        argv("fit", *configs(*STATIC), "--model.feature_cache=ram"),
        ("'model.feature_cache'", "one of 'auto', 'memory', 'disk', 'off', got 'ram'"),
    ),
    Case(
        "unknown component name",
        argv("fit", *configs(*STATIC), "--model.head=dual_brnch"),
        ("Unknown scoring head 'dual_brnch'. Did you mean 'dual_branch'?",),
    ),
    Case("unknown registry name in a config file", head_name_in_config_file, ("Unknown scoring head 'nohead'",)),
    Case("missing config file", argv("fit", "-c", "missing.yaml"), ("Config file 'missing.yaml' does not exist",)),
    Case("config file that is not YAML", broken_yaml, ("Config file 'broken.yaml' is not valid YAML at line 4",)),
    Case(
        "no data config",
        argv("fit", *configs("backbone/tiny.yaml", "method/static.yaml")),
        ("Missing required value 'data'", "configs/data/"),
    ),
    Case(
        "missing data root",
        missing_data_root,
        ("Missing required value 'data.init_args.root' of MVTecDataModule", "noroot.yaml"),
    ),
    Case(
        "data root that does not exist",
        argv("test", *configs(*STATIC[:2], "data/mvtec.yaml"), "--data.init_args.root=absent", "--untrained=true"),
        ("Dataset root 'absent' does not exist",),
    ),
    Case("checkpoint that is a text file", text_checkpoint, ("{tmp}/notes.ckpt",), kept=("notes.ckpt",)),
    Case(
        "trainable method tested without a checkpoint",
        argv("test", *configs(*STATIC)),
        ("without --ckpt_path would evaluate the untrained prompts of StaticPrompt",),
    ),
    Case("missing grid file", argv("grid", "absent.yaml"), ("Grid file 'absent.yaml' does not exist",)),
    Case("report of a missing folder", argv("report", "absent"), ("absent is not a runs folder",)),
    # ---- cases fixed here
    Case(
        "grid on an output folder in use",
        grid_on_a_folder_in_use,
        ("Output folder '{tmp}/out' is in use by another zsad grid (pid {pid}",),
        kept=("out/static-seed0-12345678/checkpoints/last.ckpt",),
    ),
    Case(
        "grid base config that is not YAML",
        grid_with_broken_base,
        ("Grid file '{tmp}/grid.yaml', `base`: Config file '{tmp}/bad.yaml' is not valid YAML at line 4",),
    ),
    Case("export to a folder", export_to_a_folder, ("--out '{tmp}/exported' is a folder",)),
    Case("export under a file", export_under_a_file, ("'{tmp}/file' is a file, not a folder",)),
    Case(
        "export on a full disk",
        export_on_a_full_disk,
        ("Cannot write '{tmp}/model.onnx': No space left on device", "the disk is full"),
        kept=("model.onnx",),
        absent=(".model.onnx*",),
    ),
    Case(
        "results on a full disk",
        results_on_a_full_disk,
        ("Cannot write '{tmp}/run/scores.csv': No space left on device", "The results are in the table above."),
        kept=("run/results.json", "run/scores.csv"),
        printed=("image_auroc", "ring"),
        absent=("run/.*.tmp",),
    ),
    Case(
        "report of results beside another run's scores",
        report_with_another_runs_scores,
        ("{tmp}/runs/a/scores.csv does not belong to {tmp}/runs/a/results.json",),
        kept=("runs/a/results.json", "runs/a/scores.csv"),
    ),
    Case(
        "report of a results file with a wrong value type",
        report_with_a_wrong_type,
        ("{tmp}/runs/a/results.json: 'per_category.toy.a.image_auroc' is '0.9' (str), expected a number",),
    ),
    Case(
        "predict into a folder used before",
        predict_into_used_folder,
        ("--out '{tmp}/out' holds the outputs of an earlier zsad predict", "--overwrite"),
        kept=("out/scores.csv", "out/skipped.txt", "out/overlays/old.png"),
    ),
    Case(
        "predict --overwrite beside files zsad did not write",
        predict_overwrite_beside_foreign_files,
        ("did not write", "overlays/notes.txt"),
        kept=("out/scores.csv", "out/overlays/notes.txt"),
    ),
    Case("predict --out that is a file", predict_out_is_a_file, ("--out '{tmp}/out.csv' is a file, not a folder",)),
    Case("predict --out in a read-only place", predict_out_read_only, ("cannot write in '{tmp}/locked'",)),
    Case("predict on a missing GPU", predict_on_a_missing_gpu, ("--device cuda: PyTorch sees no CUDA GPU",)),
    Case(
        "demo with a misspelt backbone",
        demo_with_a_misspelt_backbone,
        ("--backbone 'tiny-randm'", "Did you mean 'tiny-random'"),
        kept=("demo/overlays/earlier.png",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_and_loses_nothing(case, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    with contextlib.ExitStack() as stack:
        command = case.setup(tmp_path, monkeypatch, stack)
        before = {name: (tmp_path / name).read_bytes() for name in case.kept}
        code, output = run_cli(command)
    errors = [line for line in output.splitlines() if line.startswith("zsad: error:")]
    assert code == 2, output[-3000:]
    assert len(errors) == 1 and "Traceback" not in output and "usage:" not in output, output[-3000:]
    for fragment in case.names:
        assert fragment.format(tmp=tmp_path, pid=os.getpid()) in errors[0], errors[0]
    for fragment in case.printed:
        assert fragment in output.replace(errors[0], ""), output[-3000:]
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content, f"{name} was changed or lost"
    for pattern in case.absent:
        assert not list(tmp_path.glob(pattern)), f"left behind: {list(tmp_path.glob(pattern))}"
