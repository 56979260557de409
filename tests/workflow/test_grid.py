"""`zsad grid`: expansion, hashing, validation before running, the shipped grids, W&B sweeps, runs and resuming."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zsad.errors import ConfigError
from zsad.workflow.grid import runner
from zsad.workflow.grid.command import grid_main, run_table
from zsad.workflow.grid.expand import expand_grid, select_runs
from zsad.workflow.grid.records import RUNS_FILE, RunRecord, append_record, read_records
from zsad.workflow.grid.run_config import config_hash, strip_output_paths
from zsad.workflow.grid.runner import prepare_runs, run_grid
from zsad.workflow.grid.spec import ChoiceAxis, ValueAxis, load_grid
from zsad.workflow.lock import FolderLock

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SMOKE = CONFIGS / "grids" / "synthetic_smoke.yaml"
SHIPPED = {"cops_ablations": 15, "cops_aux_datasets": 10, "methods_protocols": 36, "synthetic_smoke": 4}
SHIPPED_SEEDS = {
    "cops_ablations": {0, 1, 2},
    "cops_aux_datasets": {0},
    "methods_protocols": {0, 1, 2},
    "synthetic_smoke": {0, 1},
}
CONTRACT_KEYS = {
    "run_id",
    "config_hash",
    "status",
    "overrides",
    "method",
    "seed",
    "protocol",
    "results",
    "error",
    "started",
    "finished",
    "duration_s",
}


def write_grid(folder: Path, grid: dict, base: list | None = None) -> Path:
    """A grid file on the tiny backbone and synthetic data (paths relative to the repository's configs)."""
    base = base if base is not None else ["backbone/tiny.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    document = {"base": [str(CONFIGS / b) if isinstance(b, str) else b for b in base], "grid": grid}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def prepare(path: Path, out: Path) -> list[runner.PreparedRun]:
    """Read, expand and resolve a grid file."""
    spec = load_grid(path)
    return prepare_runs(spec, expand_grid(spec), out)


# ------------------------------------------------------------------ expansion


def test_axes_expand_as_a_cartesian_product_in_the_order_written(tmp_path):
    grid = {
        "method": {
            "static": str(CONFIGS / "method/static.yaml"),
            "topk": [str(CONFIGS / "method/static.yaml"), {"model": {"head": "topk"}}],
        },
        "seed_everything": [0, 1, 2],
        "model.head.init_args.temperature": [0.07],
    }
    spec = load_grid(write_grid(tmp_path, grid))
    assert spec.name == "grid"  # the file's stem
    assert [type(axis) for axis in spec.axes] == [ChoiceAxis, ValueAxis, ValueAxis]
    plans = expand_grid(spec)
    # the first axis varies slowest; single-valued axes stay out of the labels but are in the overrides
    assert [p.label for p in plans] == [f"{m}-seed{s}" for m in ("static", "topk") for s in (0, 1, 2)]
    assert plans[4].overrides == {"method": "topk", "seed_everything": 1, "model.head.init_args.temperature": 0.07}
    assert plans[4].method == "topk"
    argv = plans[4].argv()
    # base configs, then the choice's configs (a file and an inline mapping), then the dotted values
    assert argv[1].endswith("backbone/tiny.yaml") and argv[7].endswith("method/static.yaml")
    assert json.loads(argv[9]) == {"model": {"head": "topk"}}
    assert argv[10:] == ["--seed_everything=1", "--model.head.init_args.temperature=0.07"]


def test_a_grid_without_base_or_axes_is_one_run_named_after_the_grid(tmp_path):
    path = tmp_path / "single.yaml"
    path.write_text("name: just one\nbase: []\n")
    (plan,) = expand_grid(load_grid(path))
    assert (plan.label, plan.configs, plan.overrides, plan.method) == ("just_one", (), {}, None)


def test_registry_names_in_values_become_class_paths(tmp_path):
    spec = load_grid(write_grid(tmp_path, {"model.head": ["topk", {"class_path": "dual_branch"}]}))
    first, second = (plan.argv()[-1] for plan in expand_grid(spec))
    assert first == "--model.head=zsad.heads.topk.TopKHead"
    assert json.loads(second.partition("=")[2]) == {"class_path": "zsad.heads.dual_branch.DualBranchHead"}


def test_only_selects_runs_the_way_a_wandb_agent_names_them():
    spec = load_grid(SMOKE)
    plans = expand_grid(spec)
    assert [p.label for p in select_runs(plans, spec, ["method=winclip", "seed_everything=1"])] == ["winclip-seed1"]
    assert len(select_runs(plans, spec, ["seed_everything=0", "seed_everything=1", "method=static"])) == 2
    with pytest.raises(ConfigError, match=r"'lr=1'.*method, seed_everything"):
        select_runs(plans, spec, ["lr=1"])
    with pytest.raises(ConfigError, match="matches no run"):
        select_runs(plans, spec, ["seed_everything=7"])


# ------------------------------------------------------------------ hashing


def test_config_hash_ignores_output_paths_and_follows_the_config(tmp_path):
    spec = load_grid(SMOKE)
    plans = expand_grid(spec)
    here = prepare_runs(spec, plans, tmp_path / "a")
    there = prepare_runs(spec, plans, tmp_path / "b")
    assert [r.config_hash for r in here] == [r.config_hash for r in there]
    assert len({r.config_hash for r in here}) == 4  # seeds and methods all change the config
    run = here[0]
    assert run.run_id == f"static-seed0-{run.config_hash[:8]}"
    assert run.run_dir == (tmp_path / "a" / run.run_id).resolve()
    # every output goes into the run's folder, and none of it enters the hash
    assert run.config["trainer"]["default_root_dir"] == str(run.run_dir)
    assert run.config["trainer"]["callbacks"][0]["init_args"]["dirpath"] == str(run.run_dir / "checkpoints")
    assert run.config["results"]["filename"] == str(run.run_dir / "results.json")
    canonical = json.dumps(strip_output_paths(run.config), sort_keys=True, separators=(",", ":"))
    assert run.config_hash == hashlib.sha256(canonical.encode()).hexdigest()
    changed = json.loads(json.dumps(run.config))
    changed["model"]["head"]["init_args"]["sigma"] = 8.0
    assert config_hash(changed) != run.config_hash


def test_a_checkpoint_callback_is_added_when_the_config_has_none(tmp_path):
    base = ["backbone/tiny.yaml", "data/synthetic.yaml", {"trainer": {"max_epochs": 1}}]
    spec = load_grid(write_grid(tmp_path, {"method": {"static": str(CONFIGS / "method/static.yaml")}}, base))
    (run,) = prepare_runs(spec, expand_grid(spec), tmp_path / "out")
    (callback,) = run.config["trainer"]["callbacks"]
    assert callback["class_path"].endswith("ModelCheckpoint")
    assert callback["init_args"] == {"dirpath": str(run.run_dir / "checkpoints"), "save_last": True}
    assert run.method == "static" and run.plan.label == "grid"  # nothing varies: the grid's name labels the run


def test_a_configured_logger_writes_into_the_run_folder(tmp_path):
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "elsewhere"}}
    base = ["backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", {"trainer": {"logger": logger}}]
    path = write_grid(tmp_path, {}, base)
    (here,), (there,) = prepare(path, tmp_path / "a"), prepare(path, tmp_path / "b")
    assert here.config["trainer"]["logger"]["init_args"]["save_dir"] == str(here.run_dir / "logs")
    assert here.config_hash == there.config_hash


# ------------------------------------------------------------------ bad grids fail before anything runs


def test_unknown_top_level_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: []\ngrid: {}\nseeds: [0, 1]\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key.*'seeds'.*name, base, grid"):
        load_grid(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("model.head.init_args.top_k", 10), ("trainer.max_epoch", 3), ("nonsense", True)],
)
def test_a_leaf_key_the_parser_refuses_is_named_and_nothing_runs(key, value, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    grid = {"method": {"static": str(CONFIGS / "method/static.yaml")}, key: [value]}
    code, output = run_cli(["grid", str(write_grid(tmp_path, grid)), "--out", "out"])
    assert code == 2
    assert output.startswith("zsad: error: ") and output.count("\n") == 1
    assert f"grid key '{key}'" in output and "run 'grid'" in output
    assert not (tmp_path / "out").exists()


def test_a_broken_choice_names_the_run_and_its_configs(tmp_path):
    grid = {"method": {"static": str(CONFIGS / "method/static.yaml"), "bad": {"model": {"head": "no_such_head"}}}}
    spec = load_grid(write_grid(tmp_path, grid))
    with pytest.raises(ConfigError, match=r"run 'bad': its configs .*refused.*no_such_head"):
        prepare_runs(spec, expand_grid(spec), tmp_path / "out")


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"seed_everything": []}, "grid key 'seed_everything' has an empty list"),
        ({"seed_everything": 3}, r"grid key 'seed_everything' must be a list.*\[3\]"),
        ({"method": {"x": "configs/method/nope.yaml"}}, "config file 'configs/method/nope.yaml' not found"),
        ({"seed_everything": [0, 0]}, "resolve to the same config"),
    ],
)
def test_malformed_axes_are_refused(grid, message, tmp_path):
    base = ["backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    path = write_grid(tmp_path, grid, base)
    with pytest.raises(ConfigError, match=message):
        prepare(path, tmp_path / "out")


# ------------------------------------------------------------------ shipped grids


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if SHIPPED[n] > 20 else n for n in sorted(SHIPPED)]
)
def test_every_shipped_grid_expands_and_validates(name, tmp_path):
    spec = load_grid(CONFIGS / "grids" / f"{name}.yaml")
    runs = prepare_runs(spec, expand_grid(spec), tmp_path)
    assert len(runs) == SHIPPED[name]
    assert len({r.run_id for r in runs}) == len(runs)
    assert {r.config["seed_everything"] for r in runs} == SHIPPED_SEEDS[name]
    if name == "cops_aux_datasets":  # one run per auxiliary dataset, all scored on the same eight targets
        aux = {r.config["data"]["init_args"]["aux"][0]["dataset"] for r in runs}
        assert len(aux) == len(runs) and {"mvtec", "visa", "synthetic"} <= aux
        assert {len(r.config["data"]["init_args"]["targets"]) for r in runs} == {8}


def test_shipped_grids_cover_every_method_and_cops_ablation_config():
    def files(name: str) -> set[str]:
        spec = load_grid(CONFIGS / "grids" / f"{name}.yaml")
        axis = spec.axis("method")
        return {source.path.name for choice in axis.choices for source in choice.configs if source.path}

    assert files("methods_protocols") == {p.name for p in (CONFIGS / "method").glob("*.yaml")}
    assert files("cops_ablations") == {"cops.yaml"} | {p.name for p in (CONFIGS / "ablation").glob("cops_*.yaml")}
    protocol = load_grid(CONFIGS / "grids" / "methods_protocols.yaml").axis("protocol")
    assert protocol.labels() == ["mvtec_to_all", "visa_to_mvtec"]


# ------------------------------------------------------------------ dry run and W&B sweep


def test_dry_run_lists_the_runs(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, output = run_cli(["grid", str(SMOKE), "--dry-run"])
    assert code == 0
    assert "4 runs into runs/synthetic_smoke" in output
    for label in ("static-seed0-", "static-seed1-", "winclip-seed0-", "winclip-seed1-"):
        assert label in output
    assert output.count("pending") == 4 and not (tmp_path / "runs").exists()


def test_wandb_sweep_is_a_grid_sweep_over_the_axes(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, output = run_cli(["grid", str(SMOKE), "--wandb-sweep", "sweep.yaml"])
    assert code == 0 and "wandb sweep sweep.yaml" in output
    sweep = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert sweep["method"] == "grid"
    assert sweep["parameters"] == {"method": {"values": ["static", "winclip"]}, "seed_everything": {"values": [0, 1]}}
    assert sweep["command"] == [
        "${env}",
        "zsad",
        "grid",
        str(SMOKE),
        "--out",
        "runs/synthetic_smoke",
        "--only",
        "${args_no_hyphens}",
    ]
    assert sweep["metric"]["name"] == "test/mean/image_auroc"
    code, output = run_cli(["grid", str(SMOKE), "--wandb-sweep"])  # no FILE: stdout
    assert yaml.safe_load(output)["parameters"] == sweep["parameters"]


# ------------------------------------------------------------------ resuming (runs faked, no subprocess)


def fake_record(run, status: str) -> RunRecord:
    return RunRecord(
        run.run_id, run.config_hash, status, run.plan.overrides, run.method, 0, None, None, None, "t0", "t1", 0.1
    )


def test_failed_runs_are_retried_and_done_runs_skipped(tmp_path, monkeypatch):
    spec = load_grid(SMOKE)
    runs = prepare_runs(spec, expand_grid(spec), tmp_path)
    executed: list[str] = []

    failing = {"winclip-seed0"}  # fails on the first attempt only

    def fake_execute(run, out, resume_from=None, keep_fds=()):
        executed.append(run.plan.label)
        status = "failed" if run.plan.label in failing else "done"
        failing.discard(run.plan.label)
        return fake_record(run, status)

    monkeypatch.setattr(runner, "execute", fake_execute)
    lines: list[str] = []
    run_grid(runs, tmp_path, echo=lambda text, **_: lines.append(text))
    assert executed == ["static-seed0", "static-seed1", "winclip-seed0", "winclip-seed1"]
    executed.clear()
    lines.clear()
    run_grid(runs, tmp_path, echo=lambda text, **_: lines.append(text))
    assert executed == ["winclip-seed0"]  # only the failed one runs again
    assert sum(line.startswith("skipped") for line in lines) == 3
    records = read_records(tmp_path / RUNS_FILE)
    assert [r["status"] for r in records] == ["done", "done", "failed", "done", "done"]
    assert all(set(r) == CONTRACT_KEYS for r in records)


def first_run_with_a_checkpoint(out: Path, attempt: bool = False) -> tuple[runner.PreparedRun, Path]:
    """The smoke grid's first run, with a last.ckpt in its folder (and, with ``attempt``, the attempt file naming its
    config hash), as an interrupted attempt leaves them."""
    spec = load_grid(SMOKE)
    run = prepare_runs(spec, expand_grid(spec), out)[0]
    checkpoint = run.run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"checkpoint")
    if attempt:
        (run.run_dir / runner.ATTEMPT_FILE).write_text(json.dumps({"config_hash": run.config_hash}))
    return run, checkpoint


def test_only_a_checkpoint_of_the_same_config_is_resumed(tmp_path):
    run, checkpoint = first_run_with_a_checkpoint(tmp_path)
    attempt = run.run_dir / runner.ATTEMPT_FILE
    assert runner.resumable_checkpoint(run) is None  # no attempt file: whose checkpoint is it?
    for text in ("{not json", json.dumps(["a list"]), json.dumps({"config_hash": run.config_hash[:8]})):
        attempt.write_text(text)
        assert runner.resumable_checkpoint(run) is None
    attempt.write_text(json.dumps({"config_hash": run.config_hash}))
    assert runner.resumable_checkpoint(run) == checkpoint
    assert f"{run.run_id}  pending, resumes from last.ckpt  method=static" in run_table([run], tmp_path)
    checkpoint.unlink()
    assert runner.resumable_checkpoint(run) is None


def resume_points(monkeypatch) -> list:
    """Replace the run executor with one that records its ``resume_from`` argument and reports the run done."""
    given: list = []

    def fake_execute(run, out, resume_from, keep_fds=()):
        given.append(resume_from)
        return fake_record(run, "done")

    monkeypatch.setattr(runner, "execute", fake_execute)
    return given


@pytest.mark.parametrize("resume", [True, False])
def test_restart_ignores_a_resumable_checkpoint(resume, tmp_path, monkeypatch):
    run, checkpoint = first_run_with_a_checkpoint(tmp_path, attempt=True)
    given = resume_points(monkeypatch)
    lines: list[str] = []
    run_grid([run], tmp_path, echo=lambda text, **_: lines.append(text), resume=resume)
    assert given == [checkpoint if resume else None]
    assert any(line.startswith("resuming from") for line in lines) == resume


def test_a_failed_run_starts_from_scratch_though_it_left_a_checkpoint(tmp_path, monkeypatch):
    run, _ = first_run_with_a_checkpoint(tmp_path, attempt=True)
    append_record(tmp_path / RUNS_FILE, fake_record(run, "failed"))
    assert "failed  method=static" in run_table([run], tmp_path)  # no "resumes from"
    given = resume_points(monkeypatch)
    run_grid([run], tmp_path, echo=lambda text, **_: None)
    assert given == [None]


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_smoke_grid_runs_end_to_end_and_redoes_only_an_unfinished_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))  # the worker processes inherit it
    out = tmp_path / "out"
    assert grid_main([str(SMOKE), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert [line for line in first.splitlines() if line.startswith("[")] == [
        line for line in first.splitlines() if " ... done in " in line
    ]
    records = read_records(out / RUNS_FILE)
    assert len(records) == 4 and all(set(r) == CONTRACT_KEYS for r in records)
    assert {(r["method"], r["seed"], r["status"]) for r in records} == {
        (m, s, "done") for m in ("static", "winclip") for s in (0, 1)
    }
    for record in records:
        folder = out / record["run_id"]
        assert record["results"] == f"{record['run_id']}/results.json"
        results = json.loads((out / record["results"]).read_text())
        assert record["protocol"] == results["protocol"]["name"]
        assert (folder / "scores.csv").is_file()
        assert config_hash(yaml.safe_load((folder / "config.yaml").read_text())) == record["config_hash"]
        trained = (folder / "checkpoints" / "last.ckpt").is_file()
        assert trained == (record["method"] == "static")  # winclip is training-free: its fit is skipped
        assert ("fit skipped" in (folder / "log.txt").read_text()) == (not trained)

    # simulate an interrupted run: its line never got written
    lost = next(r for r in records if r["run_id"].startswith("static-seed1-"))
    kept = [json.dumps(r) + "\n" for r in records if r is not lost]
    (out / RUNS_FILE).write_text("".join(kept))
    assert grid_main([str(SMOKE), "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert second.count("skipped (done in runs.jsonl") == 3
    # its folder holds the finished fit's checkpoint: the test runs again from it, without training further
    assert f"[2/4] static-seed1 ... resuming from {lost['run_id']}/checkpoints/last.ckpt ... done in" in second
    records = read_records(out / RUNS_FILE)
    assert len(records) == 4 and records[-1]["run_id"] == lost["run_id"]
    assert records[-1]["config_hash"] == lost["config_hash"] and records[-1]["started"] > lost["started"]


def test_the_output_folder_lock_names_the_holder_and_dies_with_it(tmp_path):
    holder = (
        "from zsad.workflow.lock import FolderLock; import sys, time; FolderLock(sys.argv[1], 'zsad grid').acquire()"
    )
    holder += "; print('locked', flush=True); time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"'{re.escape(str(tmp_path / 'out'))}' is in use by another zsad grid "
                           rf"\(pid {process.pid}"):  # fmt: skip
            FolderLock(tmp_path / "out", "zsad grid").acquire()
    finally:
        process.kill()
        process.wait()
    with FolderLock(tmp_path / "out", "zsad grid"):  # the kernel released the dead holder's lock
        assert (tmp_path / "out" / ".zsad.lock").read_text().strip() == str(os.getpid())
