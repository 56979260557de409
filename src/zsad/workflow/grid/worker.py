"""One grid run in its own process: ``zsad fit`` then ``zsad test`` on the fit's last checkpoint.

``python -m zsad.workflow.grid.worker RUN_DIR/config.yaml --checkpoint RUN_DIR/checkpoints/last.ckpt``.
Both verbs go through :class:`~zsad.lightning_cli.ZSADCLI` in this one process (one import of torch per run, not
two), with the console rules of ``zsad`` itself (:mod:`zsad.console`). A
training-free model (no trainable parameters, e.g. WinCLIP) skips ``fit`` and is tested as built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from zsad.config_aliases import install_loader, translate_argv
from zsad.console import quiet_console
from zsad.errors import ZSADError
from zsad.lightning_cli import ZSADCLI
from zsad.module import ZSADModule, parameter_groups
from zsad.plugins import load_plugins

TRAINING_FREE = "training-free model (no trainable parameters): fit skipped, testing the model as built"


class GridFitCLI(ZSADCLI):
    """``zsad fit`` that skips training when the model has nothing to train (LightningCLI calls ``self.fit``)."""

    trained = False

    def fit(self, model: ZSADModule, **kwargs: Any) -> None:
        """Train unless no component has trainable parameters."""
        if not parameter_groups({"prompt": model.prompt, "head": model.head, "losses": model.losses}):
            print(TRAINING_FREE, flush=True)
            return
        self.trainer.fit(model, **kwargs)
        self.trained = True


def run_fit_and_test(config: Path, checkpoint: Path, resume: bool = False) -> None:
    """Fit (unless training-free), then test from ``checkpoint``, which the fit's ModelCheckpoint wrote last.

    Args:
        config: The run's resolved ``config.yaml``.
        checkpoint: The ``last.ckpt`` the fit writes.
        resume: Continue the fit from ``checkpoint`` (an interrupted attempt's); a fit that had already finished
            trains no further.

    Raises:
        ZSADError: Bad input anywhere in the run.
        FileNotFoundError: The fit ended without writing ``checkpoint``.
    """
    fit_args = ["fit", "-c", str(config)] + ([f"--ckpt_path={checkpoint}"] if resume else [])
    fit = GridFitCLI(args=translate_argv(fit_args))
    test_args = ["test", "-c", str(config)]
    if fit.trained:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"fit wrote no checkpoint at {checkpoint}")
        test_args.append(f"--ckpt_path={checkpoint}")
    ZSADCLI(args=translate_argv(test_args))


def worker_main(argv: list[str]) -> int:
    """Run one grid run; returns the exit status (2 with a one-line message for bad input, as ``zsad``)."""
    parser = argparse.ArgumentParser(prog="python -m zsad.workflow.grid.worker", description=__doc__)
    parser.add_argument("config", type=Path, help="the run's resolved config.yaml")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the last.ckpt the fit writes")
    parser.add_argument("--resume", action="store_true", help="continue the fit from --checkpoint")
    args = parser.parse_args(argv)
    load_plugins()
    install_loader()
    try:
        with quiet_console():
            run_fit_and_test(args.config, args.checkpoint, args.resume)
    except ZSADError as error:
        print(f"zsad: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
