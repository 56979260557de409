"""Resolving run configs with the CLI's own parser, so that every run is checked before the first one starts."""

from __future__ import annotations

import functools
import json
import warnings
from argparse import ArgumentError
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from zsad.config_aliases import install_loader, translate_argv
from zsad.errors import ConfigError, ZSADError
from zsad.lightning_cli import ZSADCLI
from zsad.plugins import load_plugins
from zsad.workflow.grid.expand import RunPlan, value_argument
from zsad.workflow.grid.spec import GridSpec
from zsad.workflow.parse_errors import parser_error_line

VERB = "fit"
"""The subcommand whose parser resolves run configs; ``zsad test`` accepts the same keys."""


class _ParsersBuilt(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """Carries a CLI out of ``LightningCLI.__init__`` once its parsers exist, before it parses or builds anything."""

    def __init__(self, cli: ZSADCLI) -> None:
        super().__init__("parsers built")
        self.cli = cli


class _ParserOnlyCLI(ZSADCLI):
    """:class:`~zsad.lightning_cli.ZSADCLI` that stops once its parsers are built; they raise instead of exiting."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The CLI's parser, raising ``ArgumentError`` so that the grid can say which run and key are wrong.

        Abbreviations are off: argparse would otherwise read a misspelt grid key (``trainer.max_epoch``) as the
        option it abbreviates, and the grid would silently set something else than its file says.
        """
        return super().init_parser(**{**kwargs, "exit_on_error": False, "allow_abbrev": False})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI calls this right after building the parsers: stop there (no model is built)."""
        raise _ParsersBuilt(self)


@functools.cache
def cli_parser() -> LightningArgumentParser:
    """The ``zsad`` parser with its subcommands, built exactly as ``zsad fit`` builds it (plugins included)."""
    load_plugins()
    install_loader()
    try:
        _ParserOnlyCLI(args=[])
    except _ParsersBuilt as built:
        return built.cli.parser
    raise RuntimeError("ZSADCLI returned without parsing its arguments")  # LightningCLI always parses


def resolve_config(argv: list[str]) -> dict[str, Any]:
    """The fully resolved config of ``zsad fit <argv>``, as ``--print_config`` shows it, in plain data.

    Raises:
        argparse.ArgumentError: The parser refuses the arguments.
        ZSADError: A registry name is unknown.
    """
    parser = cli_parser()
    config = parser.parse_args(translate_argv([VERB, *argv]))
    with warnings.catch_warnings():
        # LightningCLI dumps with skip_none, which every supported jsonargparse accepts; recent ones warn about it.
        warnings.simplefilter("ignore", DeprecationWarning)
        dumped = parser.dump(config, skip_link_targets=False, skip_none=False)
    return yaml.safe_load(dumped)[VERB]


def resolve_mapping(config: dict[str, Any]) -> dict[str, Any]:
    """Re-resolve an edited config (defaults filled in, checked by the parser again)."""
    return resolve_config(["-c", json.dumps(config)])


def resolve_run(plan: RunPlan, spec: GridSpec) -> dict[str, Any]:
    """The resolved config of one run of a grid.

    Raises:
        ConfigError: The parser refuses the run; the message names the grid key at fault where one is.
    """
    try:
        return resolve_config(plan.argv())
    except (ArgumentError, ZSADError) as error:
        reason = parser_error_line(str(error), VERB, plan.argv()) if isinstance(error, ArgumentError) else str(error)
        raise ConfigError(
            f"Grid file '{spec.path}', run '{plan.label}': {_culprit(plan)}: {one_line(reason)}"
        ) from None


def _culprit(plan: RunPlan) -> str:
    """Which part of a refused run is at fault: its composed configs, or the first grid key that breaks them."""
    configs = [argument for source in plan.configs for argument in source.argv()]
    accepted: list[str] = []
    try:
        resolve_config(configs)
    except (ArgumentError, ZSADError):
        return f"its configs ({', '.join(source.describe() for source in plan.configs)}) are refused"
    for key, value in plan.values.items():
        accepted.append(value_argument(key, value))
        try:
            resolve_config(configs + accepted)
        except (ArgumentError, ZSADError):
            return f"grid key '{key}' (value {value!r}) is refused by the `zsad {VERB}` parser; fix or remove that key"
    return "the parser refuses it"


def one_line(error: BaseException | str) -> str:
    """An error message on one line (jsonargparse's span several)."""
    return " ".join(str(error).split())
