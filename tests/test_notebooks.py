"""The notebooks run from top to bottom on the current interpreter, and are stored without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNEL = "zsad-test-python"
# A whole notebook takes 8 s to 1.5 min on the shared 2-core machine (docs/notebooks.md); a cell gets room to spare.
CELL_TIMEOUT_S = 300


@pytest.fixture
def current_interpreter_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec that starts ipykernel on this interpreter, so the notebooks see the zsad being tested.

    Relying on the "python3" kernel could pick up another Python installed on the machine.
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits the environment
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks write into tempfile.mkdtemp() folders
    return KERNEL


def test_both_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_compose_a_method.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, current_interpreter_kernel):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=current_interpreter_kernel,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any exception
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if path.stem == "01_quickstart":
        assert "image_auroc" in text and "untrained" in text
        pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
        assert len(pictures) == 8  # two kept images for each of the four held-out categories
    else:
        table = text[text.index("trainable  image_auroc") :]
        rows = {tuple(line.split()[:2]) for line in table.splitlines()}
        assert {(p, h) for p in ("static", "mean_patch") for h in ("dual_branch", "topk")} <= rows
