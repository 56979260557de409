"""A :class:`~zsad.module.ZSADModule` built from the same ``-c`` config files that ``zsad fit | test`` take.

The files are parsed by zsad's own LightningCLI (:mod:`zsad.lightning_cli`: registry names, ``${...}``
interpolation, later files overriding earlier ones), so a config means exactly what it means to ``zsad test``; a
packaged config can be given by name (``method/winclip.yaml``, :mod:`zsad.packaged_configs`). Only the model is
built: a ``data:`` or ``trainer:`` section may be present (the same file list as for ``zsad test``) but is neither
required nor instantiated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from zsad.config_aliases import PARSER_MODE, install_loader, translate_argv
from zsad.errors import ConfigError
from zsad.inference.loading import CONFIG_SUFFIXES
from zsad.lightning_cli import ZSADCLI
from zsad.module import ZSADModule
from zsad.packaged_configs import local_config, packaged_config
from zsad.registry import load_builtin_components


class ModelConfigReader(ZSADCLI):
    """zsad's CLI parser with an optional ``data`` section, instantiating nothing but the model.

    Args:
        args: Command-line arguments (``-c file`` pairs and ``--model.*`` overrides), already translated.
        build: Build the model; ``False`` only parses (``model_args`` holds the resolved arguments).
    """

    def __init__(self, args: Sequence[str], build: bool = True) -> None:
        self.build = build
        self.model_args: dict[str, Any] = {}
        load_builtin_components()
        # ZSADCLI's own __init__ requires a datamodule; None here makes `data:` optional (Lightning's rule).
        LightningCLI.__init__(
            self,
            ZSADModule,
            None,
            subclass_mode_model=False,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": PARSER_MODE, "exit_on_error": False},
            save_config_callback=None,
            auto_configure_optimizers=False,
            args=list(args),
            run=False,
        )

    def instantiate_classes(self) -> None:
        """Build the model only; the optimizer is irrelevant for inference."""
        self.model_args = self.config["model"].as_dict()
        self.model_args.pop("optimizer", None)
        self.model = ZSADModule(**self.model_args) if self.build else None


def module_from_configs(configs: Sequence[str | Path], overrides: Sequence[str] = ()) -> ZSADModule:
    """Build the model that ``zsad test -c <configs...>`` would build (without a checkpoint).

    Args:
        configs: Config files, in ``-c`` order.
        overrides: Extra command-line overrides such as ``"--model.prompt.init_args.default_class_name=bottle"``.

    Raises:
        ConfigError: A missing or non-YAML file, or a config the parser refuses (with the parser's reason).
    """
    return read_model_configs(configs, overrides, build=True).model


def model_config_from_configs(configs: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved ``model`` arguments of config files, without building anything (see :func:`module_from_configs`)."""
    return read_model_configs(configs, overrides, build=False).model_args


def read_model_configs(configs: Sequence[str | Path], overrides: Sequence[str], build: bool) -> ModelConfigReader:
    """Parse config files as ``zsad test`` does; build the model if ``build``."""
    if not configs:
        raise ConfigError("No config file given: pass at least one -c file (e.g. configs/method/winclip.yaml).")
    paths = [config_path(config) for config in configs]
    install_loader()
    args = [arg for path in paths for arg in ("-c", str(path))]
    try:
        return ModelConfigReader(translate_argv([*args, *overrides]), build=build)
    except ArgumentError as error:
        reason = " ".join(str(error).split())  # jsonargparse's message spans several indented lines
        raise ConfigError(f"The configs {[str(c) for c in configs]} do not describe a valid model: {reason}") from error


def config_path(config: str | Path) -> Path:
    """A config as ``zsad test -c`` takes it: a local ``.yaml`` file, else a packaged config's name (``method/cops``).

    Raises:
        ConfigError: Neither a local YAML file nor a packaged config.
    """
    path = local_config(config) or packaged_config(config)
    if path is None or path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"Config '{config}' is not an existing .yaml file nor a packaged config (`zsad configs` lists them). "
            "Give the configs as for `zsad test`."
        )
    return path
