"""A :class:`~zsad.module.ZSADModule` built from the same ``-c`` config files that ``zsad fit | test`` take.

The files are parsed by zsad's own LightningCLI (registry names, ``${...}`` interpolation, later files overriding
earlier ones), so a config means exactly what it means to ``zsad test``. Only the model is built: a ``data:`` or
``trainer:`` section may be present (the same file list as for ``zsad test``) but is neither required nor
instantiated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from zsad.cli import ZSADCLI
from zsad.config_aliases import PARSER_MODE, install_loader, translate_argv
from zsad.errors import ConfigError
from zsad.inference.loading import CONFIG_SUFFIXES
from zsad.module import ZSADModule


class ModelConfigReader(ZSADCLI):
    """zsad's CLI parser with an optional ``data`` section, instantiating nothing but the model.

    Args:
        args: Command-line arguments (``-c file`` pairs and ``--model.*`` overrides), already translated.
    """

    def __init__(self, args: Sequence[str]) -> None:
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
        model_args: dict[str, Any] = self.config["model"].as_dict()
        model_args.pop("optimizer", None)
        self.model = ZSADModule(**model_args)


def module_from_configs(configs: Sequence[str | Path], overrides: Sequence[str] = ()) -> ZSADModule:
    """Build the model that ``zsad test -c <configs...>`` would build (without a checkpoint).

    Args:
        configs: Config files, in ``-c`` order.
        overrides: Extra command-line overrides such as ``"--model.prompt.init_args.default_class_name=bottle"``.

    Raises:
        ConfigError: A missing or non-YAML file, or a config the parser refuses (with the parser's reason).
    """
    if not configs:
        raise ConfigError("No config file given: pass at least one -c file (e.g. configs/method/winclip.yaml).")
    for config in configs:
        path = Path(config)
        if not path.is_file() or path.suffix.lower() not in CONFIG_SUFFIXES:
            raise ConfigError(f"Config '{path}' is not an existing .yaml file. Give the configs as for `zsad test`.")
    install_loader()
    args = [arg for config in configs for arg in ("-c", str(config))]
    try:
        return ModelConfigReader(translate_argv([*args, *overrides])).model
    except ArgumentError as error:
        reason = " ".join(str(error).split())  # jsonargparse's message spans several indented lines
        raise ConfigError(f"The configs {[str(c) for c in configs]} do not describe a valid model: {reason}") from error
