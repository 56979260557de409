"""What `zsad test` evaluates is what the user asked for (docs/cli.md, "Checkpoints" and "Test-time settings").

One module-scoped work folder holds two static fits under runs/smoke (so last.ckpt must follow the second) and one
CoPS fit; each test then runs `zsad test` in-process against them.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from zsad.checkpoints.files import file_sha256
from zsad.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def configs(*names: str) -> list[str]:
    return [arg for name in names for arg in ("-c", str(ROOT / "configs" / name))]


STATIC = configs("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
DATA = configs("data/synthetic.yaml", "trainer/smoke.yaml")  # no model config: the checkpoint supplies it
TARGETS = ["--data.init_args.target_categories=[ring, capsule]", "--data.init_args.n_test_good=3"]


@dataclass
class Work:
    """The shared work folder and its fits."""

    folder: Path
    first_fit: Path
    second_fit: Path
    cops_fit: Path

    def zsad(self, verb: str, *args: str) -> tuple[int, str]:
        """Run `zsad <verb> <args>` in the work folder; (exit status, everything printed)."""
        output = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
            patch.chdir(self.folder)
            patch.setenv("ZSAD_CACHE_DIR", str(self.folder / "cache"))
            with contextlib.redirect_stderr(output):
                try:
                    main([verb, *args])
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 0
        return code, output.getvalue()

    def results(self, root: str) -> dict:
        """The newest results.json under ``root``."""
        path = max((self.folder / root).rglob("results.json"), key=lambda p: p.stat().st_mtime_ns)
        return json.loads(path.read_text())


def fitted(work: Work, *args: str) -> Path:
    code, out = work.zsad("fit", *args, *QUIET)
    assert code == 0, out
    written = [line for line in out.splitlines() if line.startswith("fit wrote ")]
    assert len(written) == 1, out  # the fit says which checkpoint it wrote
    return work.folder / written[0].split()[2]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Work:
    folder = tmp_path_factory.mktemp("test_time_rule")
    work = Work(folder, Path(), Path(), Path())
    work.first_fit = fitted(work, *STATIC, "--trainer.max_steps=1")
    work.second_fit = fitted(work, *STATIC, "--trainer.max_steps=2")
    cops = configs("backbone/tiny.yaml", "method/cops.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
    work.cops_fit = fitted(work, *cops, "--trainer.max_steps=1", "--trainer.default_root_dir=runs/cops")
    return work


@pytest.mark.slow
def test_each_fit_has_its_own_folder_and_last_ckpt_follows_the_newest(work):
    assert work.first_fit != work.second_fit and work.first_fit.is_file() and work.second_fit.is_file()
    assert work.first_fit.parent.parent != work.second_fit.parent.parent  # two run folders
    link = work.folder / "runs" / "smoke" / "last.ckpt"
    assert link.resolve() == work.second_fit.resolve()
    assert not list((work.folder / "runs" / "smoke" / "lightning_logs").rglob("last-v*.ckpt"))
    assert (work.folder / "runs" / "cops" / "last.ckpt").resolve() == work.cops_fit.resolve()  # default_root_dir
    code, out = work.zsad("test", *DATA, *TARGETS, *QUIET, "--ckpt_path=runs/smoke/last.ckpt")
    assert code == 0, out
    recorded = work.results("runs/smoke")["checkpoint"]
    assert Path(recorded["path"]) == work.second_fit.resolve()
    assert recorded["sha256"] == file_sha256(work.second_fit)


@pytest.mark.slow
def test_a_fixed_dirpath_with_an_earlier_fits_checkpoints_is_refused(work):
    fixed = work.first_fit.parent
    code, out = work.zsad("fit", *STATIC, *QUIET, f"--trainer.callbacks.init_args.dirpath={fixed}")
    assert code == 2 and "Traceback" not in out
    assert f"The checkpoint folder '{fixed}' already holds checkpoints of an earlier fit" in out


@pytest.mark.slow
def test_settings_given_at_test_time_win_and_are_recorded(work):
    base = [*DATA, *TARGETS, *QUIET, "--ckpt_path=runs/smoke/last.ckpt"]
    assert work.zsad("test", *base)[0] == 0
    plain = work.results("runs/smoke")
    code, out = work.zsad("test", *base, "--model.head.init_args.sigma=16")
    assert code == 0, out
    smoothed = work.results("runs/smoke")
    assert smoothed["model"]["head"]["init_args"]["sigma"] == 16
    assert smoothed["checkpoint"]["changes"] == [{"key": "model.head.init_args.sigma", "trained": 4.0, "requested": 16}]
    assert plain["checkpoint"]["changes"] == []
    assert smoothed["per_category"] != plain["per_category"]  # sigma 16 is what was evaluated
    code, out = work.zsad("test", *base, "--model.backbone.init_args.image_size=56")
    assert code == 0, out  # the checkpoint no longer resets the backbone (and the data follow its image size)
    assert work.results("runs/smoke")["model"]["backbone"]["init_args"]["image_size"] == 56


@pytest.mark.slow
def test_cops_presets_at_test_time_give_different_recorded_results(work):
    base = [*DATA, *TARGETS, *QUIET, "--ckpt_path=runs/cops/last.ckpt", "--trainer.default_root_dir=runs/cops"]
    code, out = work.zsad("test", *base)  # the preset: each dataset's constants (synthetic: the non-VisA ones)
    assert code == 0, out
    by_dataset = work.results("runs/cops")
    pinned = [  # VisA's constants for the whole run, as docs/methods/cops.md shows
        "--model.head.init_args.preset=visa",
        "--model.head.init_args.neighbor_kernel=null",
        "--model.prompt.init_args.test_neighbor_kernel=3",
    ]
    code, out = work.zsad("test", *base, *pinned)
    assert code == 0, out
    visa = work.results("runs/cops")
    assert (
        by_dataset["model"]["head"]["init_args"]["preset"] == "by_dataset"
        and visa["model"]["head"]["init_args"]["preset"] == "visa"
    )
    keys = {change["key"] for change in visa["checkpoint"]["changes"]}
    assert {"model.head.init_args.preset", "model.prompt.init_args.test_neighbor_kernel"} <= keys
    assert visa["per_category"] != by_dataset["per_category"]


@pytest.mark.slow
def test_changes_of_components_or_trained_shapes_are_refused(work):
    base = [*TARGETS, *QUIET, "--ckpt_path=runs/smoke/last.ckpt"]
    vip = configs("backbone/tiny.yaml", "method/vip.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
    code, out = work.zsad("test", *vip, *base)
    assert code == 2 and "Traceback" not in out
    assert "model.prompt.class_path: 'zsad.prompts.static.StaticPrompt' -> 'zsad.prompts.vip.ViPPrompt'" in out
    code, out = work.zsad("test", *DATA, *base, "--model.prompt.init_args.n_ctx=8")
    assert code == 2 and "model.prompt.init_args.n_ctx: 12 -> 8" in out and "cannot be given at test time" in out
    code, out = work.zsad("test", *DATA, *base, "--model.backbone.init_args.model_name=zsad-tiny-gelu")
    assert code == 2 and "model_name: 'zsad-tiny' -> 'zsad-tiny-gelu'" in out


@pytest.mark.slow
def test_targets_the_checkpoint_was_trained_on_are_refused(work):
    provenance = torch.load(work.second_fit, weights_only=True)["zsad"]["provenance"]
    assert provenance["kind"] == "fit" and provenance["seed"] == 0 and len(provenance["config_hash"]) == 64
    assert provenance["aux"][0]["dataset"] == "synthetic"
    assert provenance["aux"][0]["categories"] == ["stripes", "weave", "disc", "tile"]
    leaky = [*DATA, *QUIET, "--ckpt_path=runs/smoke/last.ckpt", "--data.init_args.target_categories=[weave, ring]"]
    code, out = work.zsad("test", *leaky)
    assert code == 2 and "was trained on data that this test evaluates: synthetic categories ['weave']" in out
    code, out = work.zsad("test", *leaky, "--data.init_args.allow_overlap=true")
    assert code == 0, out


@pytest.mark.slow
def test_untrained_evaluation_only_on_request(work):
    code, out = work.zsad("test", *STATIC, *TARGETS, *QUIET)
    assert code == 2 and "without --ckpt_path would evaluate the untrained prompts of StaticPrompt" in out
    code, out = work.zsad("test", *STATIC, *TARGETS, *QUIET, "--untrained=true", "--trainer.default_root_dir=untrained")
    assert code == 0, out
    assert work.results("untrained")["checkpoint"] == "untrained"


def bad_checkpoints(folder: Path) -> dict[str, Path]:
    """Files that are not zsad checkpoints; the pickle would create ``executed`` if it were ever unpickled."""
    folder.mkdir(exist_ok=True)
    files = {"missing": folder / "missing.ckpt", "text": folder / "notes.ckpt", "image": folder / "image.ckpt"}
    files["text"].write_text("not a checkpoint\n")
    files["image"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    files["empty"] = folder / "empty.ckpt"
    files["empty"].write_bytes(b"")
    files["folder"] = folder / "a_folder.ckpt"
    files["folder"].mkdir(exist_ok=True)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (folder / "executed",))

    files["pickle"] = folder / "pickle.ckpt"
    files["pickle"].write_bytes(pickle.dumps(Payload()))
    return files


@pytest.mark.slow
def test_bad_checkpoint_files_give_one_line_in_every_verb(work):
    files = bad_checkpoints(work.folder / "bad")
    truncated = work.folder / "bad" / "truncated.ckpt"
    truncated.write_bytes(work.second_fit.read_bytes()[:1000])
    files["truncated"] = truncated
    for verb in ("test", "validate", "predict", "fit"):
        for kind, path in files.items():
            code, out = work.zsad(verb, *STATIC, *QUIET, f"--ckpt_path={path}")
            errors = [line for line in out.splitlines() if line.startswith("zsad: error:")]
            assert code == 2 and "Traceback" not in out and len(errors) == 1, (verb, kind, out[-2000:])
            assert str(path) in errors[0], (verb, kind, errors[0])
    assert not (work.folder / "bad" / "executed").exists()  # no pickle was ever executed


@pytest.mark.slow
def test_configs_compose_in_any_order(work):
    reordered = configs("method/static.yaml", "backbone/tiny.yaml", "trainer/smoke.yaml", "data/synthetic.yaml")
    code, out = work.zsad("test", *reordered, *TARGETS, *QUIET, "--ckpt_path=runs/smoke/last.ckpt")
    assert code == 0, out
    assert work.results("runs/smoke")["checkpoint"]["changes"] == []  # the same model as the documented order
    broken = work.folder / "broken.yaml"
    broken.write_text("model:\n  head:\n    sigma: [1, 2\n")
    code, out = work.zsad("test", *DATA, "-c", str(broken), "--ckpt_path=runs/smoke/last.ckpt")
    assert code == 2 and f"Config file '{broken}' is not valid YAML at line" in out and "Traceback" not in out
