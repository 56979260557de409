"""The ``zsad`` command: LightningCLI verbs (fit, validate, test, predict) plus list and demo."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

import zsad
from zsad.config_aliases import PARSER_MODE, install_loader, translate_argv
from zsad.data.datamodule import ZSADDataModule
from zsad.errors import ZSADError
from zsad.module import ZSADModule
from zsad.plugins import load_plugins
from zsad.registry import REGISTRIES
from zsad.workflow.checkpointing import resumable_trainer_options
from zsad.workflow.results import ResultsWriter
from zsad.workflow.tracking import TrackingSaveConfig

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
# Non-Lightning commands: name -> "module:function" taking the remaining argv and returning an exit status.
# Imported lazily so that `zsad fit` does not pay for every tool's imports.
TOOLS: dict[str, str] = {
    "demo": "zsad.workflow.demo:demo_main",
    "grid": "zsad.workflow.grid.command:grid_main",
    "report": "zsad.workflow.report.command:report_main",
    "export": "zsad.workflow.export:export_main",
}
HELP = f"""usage: zsad <command> [options]

zsad {zsad.__version__}: CLIP-based zero-shot anomaly detection.

Training and evaluation (LightningCLI; compose configs with several -c files):
  fit        train the prompts on the auxiliary data
  validate   evaluate the target categories
  test       evaluate the target categories, print the table and write results.json
  predict    score the target images; with --images, any folder: predict --ckpt C --images DIR --out O

Tools:
  list       every registered component, with a one-line description
  demo       train on synthetic categories, test on held-out ones, write metrics.json and pictures
  grid       run an ablation grid (configs x seeds x hyper-parameters): fit and test each run, resumable
  report     paper tables (markdown, LaTeX, CSV), significance tests and plots from finished runs
  export     a model with image-independent prompts as one ONNX graph: export --ckpt C --format onnx --out M

Run `zsad <command> --help` for the options of a command, e.g. `zsad fit --help`.
Example:
  zsad fit -c configs/backbone/tiny.yaml -c configs/method/static.yaml -c configs/data/synthetic.yaml \\
           -c configs/trainer/smoke.yaml
"""


class ZSADCLI(LightningCLI):
    """LightningCLI with zsad's component registry, omegaconf interpolation and a results writer.

    ``model:`` holds :class:`~zsad.module.ZSADModule`'s arguments; ``data:`` takes any registered datamodule.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(
            ZSADModule,
            ZSADDataModule,
            subclass_mode_model=False,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": PARSER_MODE},
            save_config_callback=TrackingSaveConfig,  # config.yaml, plus the config and test results to loggers
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Always attach the results writer (configurable as ``--results.filename``)."""
        parser.add_lightning_class_args(ResultsWriter, "results")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer, plus atomic checkpoint writes and saved random states (exact resuming)."""
        kwargs = {**resumable_trainer_options(self._get(self.config_init, "trainer", default={})), **kwargs}
        return super().instantiate_trainer(**kwargs)


def list_components() -> str:
    """Text listing of every registry: name and one-line description."""
    lines = []
    for registry in REGISTRIES.values():
        if not len(registry):
            continue
        lines.append(f"{registry.plural}:")
        width = max(len(n) for n in registry.names())
        lines.extend(f"  {name.ljust(width)}  {description}" for name, description in registry.describe())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def tool(command: str) -> Callable[[list[str]], int]:
    """The entry function of a non-Lightning command."""
    module, function = TOOLS[command].split(":")
    return getattr(importlib.import_module(module), function)


# zsad rewrites argv (registry names) before handing it over, so passing `args` is intended here.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


def run_cli(argv: list[str]) -> int:
    """Dispatch one command line; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"zsad {zsad.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list":
        print(list_components(), end="")
        return 0
    if command in TOOLS:
        return tool(command)(rest)
    if command == "predict" and any(arg.split("=", 1)[0] == "--images" for arg in rest):  # any folder, no datamodule
        return importlib.import_module("zsad.workflow.predict").predict_main(rest)
    if command not in LIGHTNING_VERBS:
        print(f"zsad: error: unknown command '{command}'. Commands: {', '.join([*LIGHTNING_VERBS, 'list', *TOOLS])}.")
        return 2
    install_loader()
    ZSADCLI(args=translate_argv(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: clear one-line errors for bad input instead of tracebacks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins()
        status = run_cli(argv)
    except ZSADError as error:
        print(f"zsad: error: {error}", file=sys.stderr)
        status = 2
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
