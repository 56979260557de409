"""The W&B sweep equivalent of a grid (``zsad grid --wandb-sweep``).

A plain ``zsad fit`` command cannot take named config-file choices (one ``--config`` parameter per sweep) nor run
the test afterwards, so each sweep run calls ``zsad grid <file> --only <axis>=<value> ...``: the agent's
``${args_no_hyphens}`` selects exactly one run of the grid, which then composes the grid's base configs, fits,
tests the last checkpoint and writes the same output folder as a local grid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from zsad.workflow.grid.spec import GridSpec

SWEEP_METRIC = {"name": "test/mean/image_auroc", "goal": "maximize"}
"""What the sweep ranks runs by (logged by ``zsad test`` when the base configs add a W&B logger)."""


def sweep_document(spec: GridSpec, grid_argument: str, out: Path) -> dict[str, Any]:
    """The sweep config: ``method: grid``, one parameter per axis with its ``values``, and the command.

    Args:
        spec: The grid.
        grid_argument: The grid file as the user named it (the agent runs the command from the same folder).
        out: The grid's output folder.
    """
    runs = math.prod(len(axis.labels()) for axis in spec.axes)
    return {
        "name": spec.name,
        "description": f"zsad grid {grid_argument}: {runs} runs (its base configs and choices are in that file)",
        "method": "grid",
        "metric": dict(SWEEP_METRIC),
        "parameters": {axis.key: {"values": axis.labels()} for axis in spec.axes},
        "command": ["${env}", "zsad", "grid", grid_argument, "--out", str(out), "--only", "${args_no_hyphens}"],
    }


def sweep_yaml(spec: GridSpec, grid_argument: str, out: Path) -> str:
    """:func:`sweep_document` as YAML, for ``wandb sweep <file>``."""
    header = f"# W&B sweep for zsad grid {grid_argument}: wandb sweep <this file>, then wandb agent <sweep id>.\n"
    return header + yaml.safe_dump(sweep_document(spec, grid_argument, out), sort_keys=False)
