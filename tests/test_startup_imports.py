"""Fast start: the quick commands import only what they need, and the inference layer never imports the CLI.

Each check runs in a fresh interpreter (this test process has imported everything already) and looks at
``sys.modules``; no timing is asserted (benchmarks/startup.py measures the times).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zsad"
HEAVY = ("torch", "lightning", "open_clip", "jsonargparse", "numpy", "PIL", "scipy", "matplotlib", "omegaconf", "yaml")
"""Packages the quick commands must not import (torch and Lightning alone take seconds on a loaded 2-core machine)."""


def imported_after(code: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)), file=sys.__stderr__)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["list"], ["configs"]], ids=" ".join)
def test_quick_commands_import_nothing_heavy(argv):
    modules = imported_after(
        f"from zsad.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as exit_:\n    assert not exit_.code"
    )
    assert not top_level(modules) & set(HEAVY), sorted(top_level(modules) & set(HEAVY))
    assert "zsad.lightning_cli" not in modules and "zsad.module" not in modules


def test_import_zsad_is_cheap_and_its_names_still_load():
    modules = imported_after("import zsad")
    assert not top_level(modules) & set(HEAVY)
    modules = imported_after(
        "import zsad\nassert callable(zsad.load) and zsad.ZSADModule and zsad.heads.DualBranchHead"
    )
    assert "torch" in top_level(modules) and "zsad.cli" not in modules


def test_the_inference_layer_never_imports_the_cli():
    modules = imported_after("import zsad.inference\nimport zsad.inference.configs")
    assert "zsad.inference.configs" in modules
    assert "zsad.cli" not in modules, "zsad.inference must build its parser from zsad.lightning_cli, not zsad.cli"


def test_no_inference_module_names_the_cli_module():
    for path in (SRC / "inference").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert "zsad.cli" not in names, f"{path.relative_to(SRC)} imports zsad.cli"


def test_zsad_cli_still_names_the_parser_class():
    from zsad.cli import ZSADCLI
    from zsad.lightning_cli import ZSADCLI as PARSER

    assert ZSADCLI is PARSER
