"""The documentation site builds in strict mode, documents every module, and its commands are valid command lines."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages whose `zsad fit|test` commands must parse as written (the method pages feed docs/reproducing.md).
COMMAND_PAGES = ["quickstart.md", "cli.md", *(f"methods/{p.name}" for p in sorted((DOCS / "methods").glob("*.md")))]
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def source_modules() -> set[str]:
    """Dotted names of every public module under src/zsad (package ``__init__`` files only re-export)."""
    package = ROOT / "src"
    modules = set()
    for path in (package / "zsad").rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if not any(part.startswith("_") for part in parts):
            modules.add(".".join(parts))
    return modules


def api_modules() -> dict[str, str]:
    """``{module: page}`` for every ``::: module`` line of the API reference."""
    return {
        match: page.name
        for page in sorted((DOCS / "api").glob("*.md"))
        for match in re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.MULTILINE)
    }


def documented_commands(page: Path) -> list[str]:
    """``zsad <lightning verb> ...`` lines of the page's code blocks, with continuation lines joined."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.split(" #")[0].strip()
            if command.startswith(tuple(f"zsad {verb} " for verb in LIGHTNING_VERBS)):
                commands.append(command)
    return commands


@pytest.mark.slow
def test_site_builds_in_strict_mode(tmp_path):
    # Every warning fails a strict build: broken links and anchors, pages missing from the nav, snippet sections
    # that do not exist, and docstrings whose arguments do not match their signatures.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    problems = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0, "\n".join(problems) or result.stderr[-3000:]
    reproducing = (tmp_path / "site" / "reproducing" / "index.html").read_text()
    assert "--8&lt;--" not in reproducing and "configs/method/cops_visa.yaml" in reproducing  # snippets expanded
    assert (tmp_path / "site" / "api" / "module" / "index.html").read_text().count("ZSADModule") > 5


def test_every_module_is_in_the_api_reference():
    documented = api_modules()
    missing = sorted(source_modules() - set(documented))
    assert not missing, f"add a `::: <module>` line to a page of docs/api/ for each of {missing}"
    gone = sorted(set(documented) - source_modules())
    assert not gone, f"docs/api/ documents modules that no longer exist: {gone}"


def test_reproducing_page_includes_every_method_page():
    page = (DOCS / "reproducing.md").read_text()
    for method in sorted((DOCS / "methods").glob("*.md")):
        for section in ("commands", "numbers"):
            assert f'--8<-- "methods/{method.name}:{section}"' in page
            assert f"<!-- --8<-- [start:{section}] -->" in method.read_text(), f"{method.name} lacks {section}"


@pytest.mark.slow
@pytest.mark.parametrize("page", COMMAND_PAGES)
def test_documented_commands_parse(page, monkeypatch, capsys):
    from zsad.cli import main

    monkeypatch.chdir(ROOT)  # the commands name configs relative to the repository root
    commands = documented_commands(DOCS / page)
    assert commands, f"no zsad command found in {page}"
    for command in commands:
        argv = shlex.split(command)[1:]
        if any(arg.split("=", 1)[0] == "--ckpt_path" for arg in argv):
            continue  # zsad reads the checkpoint before parsing; tests/test_docs_recipes.py runs these after their fits
        if "--print_config" not in argv:
            argv.append("--print_config")  # parse and resolve everything, run nothing
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        output = capsys.readouterr()
        assert stopped.value.code in (0, None), f"{page}: `{command}` does not parse:\n{output.err[-2000:]}"
