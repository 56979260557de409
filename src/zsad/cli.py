"""The ``zsad`` command: LightningCLI verbs (fit, validate, test, predict) plus list, configs and the tools.

This module starts fast: ``zsad --help``, ``--version``, ``list`` and ``configs`` import neither torch nor Lightning.
The verbs' parser, :class:`~zsad.lightning_cli.ZSADCLI`, lives in :mod:`zsad.lightning_cli` (``zsad.cli.ZSADCLI``
still names it) and is imported only by the commands that need it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from zsad import __version__
from zsad.console import quiet_console
from zsad.errors import ZSADError
from zsad.registry import REGISTRIES

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
# Non-Lightning commands: name -> "module:function" taking the remaining argv and returning an exit status.
# Imported lazily so that `zsad fit` does not pay for every tool's imports.
TOOLS: dict[str, str] = {
    "configs": "zsad.packaged_configs:configs_main",
    "demo": "zsad.workflow.demo:demo_main",
    "grid": "zsad.workflow.grid.command:grid_main",
    "report": "zsad.workflow.report.command:report_main",
    "export": "zsad.workflow.export:export_main",
    "import": "zsad.importers.command:import_main",
}
HELP = f"""usage: zsad <command> [options]

zsad {__version__}: CLIP-based zero-shot anomaly detection.

Training and evaluation (LightningCLI; compose configs with several -c files):
  fit        train the prompts on the auxiliary data
  validate   evaluate the target categories
  test       evaluate the target categories, print the table and write results.json
  predict    score the target images; with --images, any folder: predict --ckpt C --images DIR --out O

Tools:
  list       every registered component, with a one-line description
  configs    the configs shipped with zsad, which -c takes by name (-c method/cops); --show NAME prints one
  demo       train on synthetic categories, test on held-out ones, write metrics.json and pictures
  grid       run an ablation grid (configs x seeds x hyper-parameters): fit and test each run, resumable
  report     paper tables (markdown, LaTeX, CSV), significance tests and plots from finished runs
  export     a model with image-independent prompts as one ONNX graph: export --ckpt C --format onnx --out M
  import     a released official checkpoint as a zsad checkpoint: import anomalyclip FILE --trained-on mvtec --out C

Run `zsad <command> --help` for the options of a command, e.g. `zsad fit --help`.
Example (packaged configs by name; a local file of the same path wins):
  zsad fit -c backbone/tiny -c method/static -c data/synthetic -c trainer/smoke
"""
WITHOUT_PLUGINS = ("configs",)
"""Commands that never meet a component, so they do not import the plugins (which may import torch)."""


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


def run_cli(argv: list[str]) -> int:
    """Dispatch one command line; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"zsad {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in WITHOUT_PLUGINS:
        from zsad.plugins import load_plugins

        load_plugins()
    if command == "list":
        print(list_components(), end="")
        return 0
    if command in TOOLS:
        return tool(command)(rest)
    if command == "predict":  # with --images (any folder, no datamodule) and for a bare --help: zsad's own predict
        predict = importlib.import_module("zsad.workflow.predict")
        if predict.is_folder_predict(rest):
            return predict.predict_main(rest)
    if command not in LIGHTNING_VERBS:
        print(f"zsad: error: unknown command '{command}'. Commands: {', '.join([*LIGHTNING_VERBS, 'list', *TOOLS])}.")
        return 2
    from zsad.config_aliases import install_loader, translate_argv
    from zsad.lightning_cli import ZSADCLI

    install_loader()
    ZSADCLI(args=translate_argv(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: clear one-line errors for bad input instead of tracebacks, each warning once."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with quiet_console():
            status = run_cli(argv)
    except ZSADError as error:
        print(f"zsad: error: {error}", file=sys.stderr)
        status = 2
    if status:
        sys.exit(status)


def __getattr__(name: str) -> Any:
    """``zsad.cli.ZSADCLI`` (and ``EVALUATING_VERBS``), imported on first access: they need Lightning."""
    if name in ("ZSADCLI", "EVALUATING_VERBS"):
        return getattr(importlib.import_module("zsad.lightning_cli"), name)
    raise AttributeError(f"module 'zsad.cli' has no attribute '{name}'")


if __name__ == "__main__":
    main()
