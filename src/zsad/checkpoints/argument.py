"""The checkpoint a command line names: ``--ckpt_path FILE`` (or ``ckpt_path:`` in a config), read and checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsad.checkpoints.files import LATEST_LINK, read_checkpoint
from zsad.errors import ConfigError

LIGHTNING_SHORTCUTS = ("best", "hpc", "registry")
"""``ckpt_path`` values Lightning resolves itself, which name no file zsad could read first."""


@dataclass(frozen=True)
class CheckpointArgument:
    """A checkpoint given on the command line.

    Attributes:
        path: The file (``last`` resolved to the newest fit's ``last.ckpt``).
        content: Its content, read without unsafe pickle.
    """

    path: Path
    content: dict[str, Any]


def argument_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in ``argv``."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def find_checkpoint(
    argv: Sequence[str], config: Mapping[str, Any], fresh_start_allowed: bool = False
) -> CheckpointArgument | None:
    """The checkpoint named by ``--ckpt_path`` (or the configs' ``ckpt_path``), read and checked; ``None`` if none.

    ``last`` means ``<default_root_dir>/last.ckpt``, the link every fit keeps pointing at its own ``last.ckpt``.

    Args:
        argv: The arguments after the subcommand.
        config: The merged ``-c`` configs (:func:`~zsad.config_compose.compose_argv`).
        fresh_start_allowed: ``zsad fit``: ``last`` with no checkpoint saved yet starts from scratch (the first run of
            a job that requeues itself with ``--ckpt_path last``) instead of failing.

    Raises:
        CheckpointError: The file is missing or not a readable zsad checkpoint (one line, never a traceback).
        ConfigError: ``last`` without an earlier fit, or a Lightning shortcut zsad cannot read.
    """
    value = argument_value(argv, "--ckpt_path")
    value = config.get("ckpt_path") if value is None else value
    if value is None or str(value).strip().lower() in ("", "null", "none"):
        return None
    value = str(value)
    if value == "last":
        root = argument_value(argv, "--trainer.default_root_dir")
        root = root or (config.get("trainer") or {}).get("default_root_dir") or "."
        path = Path(root) / LATEST_LINK
        if not path.exists() and fresh_start_allowed:
            print(f"--ckpt_path last: no checkpoint under '{root}' yet ({path}); starting from scratch.", flush=True)
            return None
        if not path.is_symlink() and not path.exists():
            raise ConfigError(
                f"--ckpt_path last: no fit has written under '{root}' yet ({path} does not exist). Give the checkpoint "
                "file, or the default_root_dir of the fit to resume."
            )
    elif value in LIGHTNING_SHORTCUTS or value.startswith("registry:"):
        raise ConfigError(
            f"--ckpt_path {value}: zsad reads the checkpoint before anything runs, so give its file (or 'last', the "
            "newest fit's last.ckpt under default_root_dir)."
        )
    else:
        path = Path(value)
    return CheckpointArgument(path, read_checkpoint(path))
