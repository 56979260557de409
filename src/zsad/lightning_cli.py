"""zsad's LightningCLI: the parser behind ``zsad fit | validate | test | predict`` and behind reading configs in Python.

Both the command line (:mod:`zsad.cli`) and the inference layer (:mod:`zsad.inference.configs`) build their parser
from :class:`ZSADCLI` here, so that a config means the same to ``zsad test`` and to ``zsad.load``; this module never
imports :mod:`zsad.cli`, and the inference layer never imports it either.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from zsad.checkpoints.argument import CheckpointArgument, find_checkpoint
from zsad.checkpoints.provenance import PROVENANCE_KEY, UNTRAINED, check_no_leakage, checkpoint_record
from zsad.checkpoints.settings import check_test_settings
from zsad.config_aliases import PARSER_MODE
from zsad.config_compose import compose_argv, config_files
from zsad.data.datamodule import ZSADDataModule
from zsad.errors import ConfigError
from zsad.module import ZSADModule, count_trainable, has_trainable_parameters
from zsad.packaged_configs import is_packaged
from zsad.registry import load_builtin_components
from zsad.workflow.checkpointing import resumable_trainer_options
from zsad.workflow.parse_errors import parser_error_line
from zsad.workflow.results import ResultsWriter
from zsad.workflow.tracking import TrackingSaveConfig, anchor_wandb_folders

EVALUATING_VERBS = ("validate", "test", "predict")
QUIET_TABLE_VERBS = ("test",)
"""Verbs whose metric table zsad prints itself (:class:`~zsad.workflow.results.ResultsWriter`): Lightning's own
table is off unless ``--verbose true`` asks for it."""


class ZSADCLI(LightningCLI):
    """LightningCLI with zsad's component registry, omegaconf interpolation, checkpoint rules and a results writer.

    ``model:`` holds :class:`~zsad.module.ZSADModule`'s arguments; ``data:`` takes any registered datamodule.

    With ``--ckpt_path`` the checkpoint's component specs are the base config that the user's configs and options
    override (:mod:`zsad.config_compose`). Once the model is built, changes that do not fit the trained parameters
    are refused (:func:`~zsad.checkpoints.settings.check_test_settings`), so are test targets the checkpoint was
    trained on (:func:`~zsad.checkpoints.provenance.check_no_leakage`), and ``results.json`` records the checkpoint
    and every accepted change. Without a checkpoint, evaluating a trainable model needs ``--untrained true``.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        self.checkpoint: CheckpointArgument | None = None
        load_builtin_components()  # every built-in class imported, so that the parser's help lists them all
        super().__init__(
            ZSADModule,
            ZSADDataModule,
            subclass_mode_model=False,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": PARSER_MODE, "exit_on_error": False},  # errors: parse_arguments
            save_config_callback=TrackingSaveConfig,  # config.yaml, plus the config and test results to loggers
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Always attach the results writer (configurable as ``--results.filename``), and the untrained switch."""
        parser.add_lightning_class_args(ResultsWriter, "results")
        parser.add_argument(
            "--untrained",
            type=bool,
            default=False,
            help="Evaluate a trainable method without a checkpoint, i.e. its untrained prompts (a baseline). Without "
            "this, test/validate/predict of a trainable method need --ckpt_path.",
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        """Lightning's parser of a subcommand; for ``zsad test`` without Lightning's metric table.

        zsad's own table (:class:`~zsad.workflow.results.ResultsWriter`) holds the same means and more; ``--verbose
        true`` brings Lightning's back.
        """
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in QUIET_TABLE_VERBS and "verbose" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(verbose=False)
        return parser

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Compose the ``-c`` files (any order), with the checkpoint's component specs under them when one is given.

        A refused command line is one :class:`ConfigError` line naming the key (and the ``-c`` file that set it),
        not jsonargparse's usage text; ``--help`` still prints the usage.
        """
        argv = list(sys.argv[1:] if args is None else args)
        try:
            self._compose_and_parse(parser, argv)
        except ArgumentError as error:
            subcommand = argv[0] if argv and not argv[0].startswith("-") else "fit"
            raise ConfigError(parser_error_line(str(error), subcommand, argv[1:])) from None

    def _compose_and_parse(self, parser: Any, argv: list[str]) -> None:
        """See :meth:`parse_arguments`."""
        if not argv or argv[0].startswith("-"):  # --help, --version: nothing to compose
            super().parse_arguments(parser, argv)
            return
        subcommand, rest = argv[0], argv[1:]
        if any(arg.startswith("--print_config") for arg in rest):
            print(config_files_comment(rest), flush=True)
        rest, given = compose_argv(rest)
        self.checkpoint = find_checkpoint(rest, given, fresh_start_allowed=subcommand == "fit")
        if self.checkpoint is not None:
            base = {"model": self.checkpoint.content["hyper_parameters"]}
            rest, _ = compose_argv(argv[1:], base=base)
            rest.append(f"--ckpt_path={self.checkpoint.path}")
        super().parse_arguments(parser, [subcommand, *rest])

    def _parse_ckpt_path(self) -> None:
        """Lightning would re-apply the checkpoint's hyper-parameters over the user's; zsad composed them already."""

    def after_instantiate_classes(self) -> None:
        """Apply the checkpoint rules (see the class docstring) before anything runs."""
        subcommand = self.subcommand or self.config.get("subcommand")
        if subcommand is None:
            return
        if self.checkpoint is not None:
            path, content = self.checkpoint.path, self.checkpoint.content
            trained, state = content["hyper_parameters"], content["state_dict"]
            changes = check_test_settings(trained, self.model.component_specs(), self.model.state_dict(), state, path)
            if subcommand in EVALUATING_VERBS and self.datamodule is not None:
                provenance = content["zsad"].get(PROVENANCE_KEY)
                check_no_leakage(provenance, self.datamodule.protocol(), str(path))
            self.model.evaluated_checkpoint = checkpoint_record(path, content, changes)
        elif subcommand in EVALUATING_VERBS and has_trainable_parameters(self.model):
            if not self.config[subcommand].get("untrained"):
                prompt, count = type(self.model.prompt).__name__, count_trainable(self.model)
                raise ConfigError(
                    f"`zsad {subcommand}` without --ckpt_path would evaluate the untrained prompts of {prompt} "
                    f"({count:,} trainable parameters at their initial values). Give --ckpt_path (a checkpoint from "
                    "zsad fit or zsad import), or --untrained true to evaluate the untrained baseline on purpose."
                )
            self.model.evaluated_checkpoint = UNTRAINED

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Checkpoints load without unsafe pickle unless the user asks otherwise (``--weights_only false``)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") is not None and kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True
        return kwargs

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer, plus atomic checkpoint writes, saved random states and per-fit checkpoint folders."""
        kwargs = {**resumable_trainer_options(self._get(self.config_init, "trainer", default={})), **kwargs}
        trainer = super().instantiate_trainer(**kwargs)
        anchor_wandb_folders(trainer.loggers)
        return trainer


def config_files_comment(argv: Sequence[str]) -> str:
    """YAML comment lines naming the file each ``-c`` value was read from (``--print_config`` prints them first)."""
    lines = ["# zsad: config files, in -c order (a local file wins over a packaged config of the same name):"]
    for path in config_files(argv):
        lines.append(f"#   {path.resolve()}{'  (packaged)' if is_packaged(path) else ''}")
    return "\n".join(lines)
