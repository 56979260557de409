"""The fit-then-test recipes of README.md and docs/ run as written, twice in a row, and each test evaluates the model
its recipe just trained, with the settings the test command gives.

Every ``zsad fit`` / ``zsad test`` command of a page's ``bash`` blocks runs in page order, in-process, on the tiny
random backbone and synthetic data: the backbone configs become ``configs/backbone/tiny.yaml``, the MVTec -> all and
VisA -> MVTec protocols become two synthetic protocols with swapped auxiliary and target categories (so testing the
wrong checkpoint trips the leakage check, as it would with the real data), target lists given on the command line are
dropped, and the trainer runs one CPU step. Nothing else changes: configs, order, ``--ckpt_path`` and every other
option stay as the page writes them.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from zsad.cli import main
from zsad.packaged_configs import PACKAGED_ROOT, packaged_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "methods").glob("*.md"))]
PROGRAMS = ("zsad", ".venv/bin/zsad")
TINY_CPU = [
    "--trainer.max_steps=1",
    "--trainer.max_epochs=1",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_workers=0",
]
SYNTHETIC = {
    "mvtec_to_all": (["stripes", "weave"], ["ring", "capsule"]),
    "visa_to_mvtec": (["ring", "capsule"], ["stripes", "weave"]),
}


@dataclass(frozen=True)
class Command:
    """One ``zsad fit`` or ``zsad test`` line of a page."""

    page: str
    verb: str
    args: tuple[str, ...]

    def option(self, name: str) -> str | None:
        """The value of ``--name`` (last one given), if any."""
        value = None
        for index, arg in enumerate(self.args):
            if arg == name and index + 1 < len(self.args):
                value = self.args[index + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
        return value

    def model_overrides(self) -> dict[str, str]:
        """``--model.*`` options given on the command line: key -> value as written."""
        overrides = {}
        for index, arg in enumerate(self.args):
            if arg.startswith("--model."):
                key, sep, value = arg[2:].partition("=")
                overrides[key] = value if sep else self.args[index + 1]
        return overrides


def commands(page: Path) -> list[Command]:
    """The page's ``zsad fit``/``zsad test`` commands in order (continuation lines joined, comments dropped)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#") or "..." in line:
                continue
            tokens = shlex.split(line)
            while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # ZSAD_DATA=/data zsad ...
                tokens.pop(0)
            if len(tokens) > 1 and tokens[0] in PROGRAMS and tokens[1] in ("fit", "test"):
                found.append(Command(page.name, tokens[1], tuple(tokens[2:])))
    return found


def recipes() -> list[tuple[str, list[Command]]]:
    """Pages with at least one fit and one test."""
    pages = [(page.relative_to(ROOT).as_posix(), commands(page)) for page in PAGES]
    return [(name, found) for name, found in pages if {c.verb for c in found} == {"fit", "test"}]


def synthetic_protocols(folder: Path) -> dict[str, Path]:
    """The two synthetic stand-ins for the real protocols (same structure, swapped categories)."""
    paths = {}
    for name, (aux, targets) in SYNTHETIC.items():
        root = str(folder / "synthetic")
        config = {
            "data": {
                "class_path": "protocol",
                "init_args": {
                    "name": name,
                    "aux": [{"dataset": "synthetic", "root": root, "categories": aux}],
                    "targets": [{"dataset": "synthetic", "root": root, "categories": targets}],
                    "image_size": "${model.backbone.init_args.image_size}",
                    "batch_size": 8,
                },
            }
        }
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config))
    return paths


def runnable(command: Command, protocols: dict[str, Path]) -> list[str]:
    """The command's arguments with the tiny/synthetic substitutions of the module docstring."""
    args, skip = [], False
    for index, arg in enumerate(command.args):
        if skip:
            skip = False
            continue
        if arg.startswith("--data.init_args.targets"):
            skip = "=" not in arg
            continue
        previous = command.args[index - 1] if index else ""
        if previous in ("-c", "--config"):
            packaged = packaged_config(arg)  # `-c method/cops` names configs/method/cops.yaml
            if packaged is not None and not arg.startswith("configs/"):
                arg = f"configs/{packaged.relative_to(PACKAGED_ROOT).as_posix()}"
            name = Path(arg).stem
            if arg.startswith("configs/backbone/"):
                winclip = "winclip" in " ".join(command.args)
                arg = f"configs/backbone/{'tiny_winclip' if winclip else 'tiny'}.yaml"
            elif arg.startswith("configs/protocol/"):
                arg = str(protocols[name])
            elif arg == "configs/data/mvtec.yaml":
                arg = "configs/data/synthetic.yaml"
            if arg.startswith("configs/"):
                arg = str(ROOT / arg)
        args.append(arg)
    return [*args, *TINY_CPU]


def finish_wandb_run() -> None:
    """Each shell command is a new process and a new W&B run; in-process, wandb would reuse the last one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


class Workspace:
    """A working folder in which commands run in-process, as a user's shell would run them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def run(self, verb: str, args: list[str]) -> str:
        output = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
            stack = contextlib.ExitStack()
            stack.enter_context(contextlib.redirect_stderr(output))
            patch.chdir(self.folder)
            patch.setenv("ZSAD_CACHE_DIR", str(self.folder / "cache"))
            patch.setenv("WANDB_MODE", "offline")
            patch.setenv("WANDB_DIR", str(self.folder))
            with stack:
                try:
                    main([verb, *args])
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code
                finally:
                    finish_wandb_run()
        assert not code, f"zsad {verb} {shlex.join(args)} failed:\n{output.getvalue()[-3000:]}"
        return output.getvalue()

    def newest_results(self) -> dict:
        path = max(self.folder.rglob("results.json"), key=lambda p: p.stat().st_mtime_ns)
        return json.loads(path.read_text())


def test_every_recipe_page_is_found():
    names = [name for name, _ in recipes()]
    assert "README.md" in names and "docs/quickstart.md" in names
    assert {"docs/methods/anomalyclip.md", "docs/methods/cops.md", "docs/methods/vip.md"} <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "steps"), recipes(), ids=[name for name, _ in recipes()])
def test_recipe_runs_twice_and_tests_the_model_it_trained(page, steps, tmp_path):
    work = Workspace(tmp_path)
    protocols = synthetic_protocols(tmp_path)
    for _ in range(2):  # the second pass runs after the first left its checkpoints behind
        trained: Path | None = None
        for command in steps:
            checkpoint = command.option("--ckpt_path") or ""
            if command.verb == "test" and checkpoint and not checkpoint.endswith("/last.ckpt"):
                continue  # a checkpoint from `zsad import` of a released file: tests/importers runs that path
            output = work.run(command.verb, runnable(command, protocols))
            if "--print_config" in command.args:  # prints the config, runs nothing
                assert "model:" in output
                continue
            if command.verb == "fit":
                written = [line.split()[2] for line in output.splitlines() if line.startswith("fit wrote ")]
                assert len(written) == 1, output[-2000:]
                trained = (tmp_path / written[0]).resolve()
                continue
            assert trained is not None, f"{page}: a test before any fit"
            document = work.newest_results()
            recorded = document["checkpoint"]
            assert Path(recorded["path"]) == trained, (
                f"{page}: `zsad test {shlex.join(command.args)}` tested another model"
            )
            for key, value in command.model_overrides().items():  # the settings the test command gives
                assert evaluated(document["model"], key) == yaml.safe_load(value), f"{page}: --model.{key} not applied"


def evaluated(model: dict, key: str) -> object:
    """The value at a dotted ``model.*`` key (without ``model.``) of results.json's evaluated specs."""
    value: object = model
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value
