"""The wheel carries what an installed zsad needs: the packaged configs, the tiny model configs, full metadata.

The wheel is built from a copy of the project files a release holds (no network, the environment's setuptools);
.ci/wheel builds the real sdist and wheel, checks them with twine and runs the installed wheel outside the checkout.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASE_FILES = ("pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    project = tmp_path_factory.mktemp("project")
    for name in RELEASE_FILES:
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = project / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out)]
    subprocess.run([*command, str(project)], check=True, timeout=600, capture_output=True)
    return zipfile.ZipFile(next(out.glob("zsad-*.whl")))


@pytest.mark.slow
def test_the_wheel_holds_every_packaged_config(wheel):
    names = set(wheel.namelist())
    configs = ROOT / "src" / "zsad" / "configs"
    shipped = {f"zsad/configs/{path.relative_to(configs).as_posix()}" for path in configs.rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"zsad/_registry_table.py", "zsad/py.typed", "zsad/backbones/model_configs/zsad-tiny.json"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/", "notebooks/"))]


@pytest.mark.slow
def test_the_wheel_metadata_is_complete(wheel):
    metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    import zsad

    assert metadata["Name"] == "zsad" and metadata["Version"] == zsad.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "pip install zsad" in metadata.get_payload()  # the README is the project page
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers and "Typing :: Typed" in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    entry_points = wheel.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
    assert "zsad = zsad.cli:main" in entry_points
