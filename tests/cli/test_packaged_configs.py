"""Packaged configs resolve by name (a local file of the same name wins), and `zsad configs` lists them."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsad.config_compose import compose_argv
from zsad.errors import ConfigError
from zsad.packaged_configs import (
    PACKAGED_ROOT,
    configs_listing,
    packaged_config,
    packaged_configs,
    resolve_config_file,
)
from zsad.workflow.grid.spec import resolve_config_path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("ablation", "backbone", "data", "grids", "logger", "method", "protocol", "released", "trainer")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder that is not the checkout, as a user of the installed package has."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_the_checkout_configs_folder_is_the_packaged_one():
    # the documented configs/... paths keep working in a checkout: configs/ links to the package's folder
    assert (ROOT / "configs").resolve() == PACKAGED_ROOT == ROOT / "src" / "zsad" / "configs"
    assert {p.name for p in PACKAGED_ROOT.iterdir() if p.is_dir()} == set(FOLDERS)


@pytest.mark.parametrize("name", ["method/cops", "method/cops.yaml", "configs/method/cops.yaml", "./method/cops"])
def test_a_packaged_config_resolves_by_name(name, elsewhere):
    assert resolve_config_file(name) == PACKAGED_ROOT / "method" / "cops.yaml"


@pytest.mark.parametrize("name", ["method/nope", "../method/cops.yaml", "/method/cops.yaml", ""])
def test_names_outside_the_packaged_configs_name_none(name):
    assert packaged_config(name) is None


@pytest.mark.parametrize("name", ["method/cops", "method/cops.yaml"])
def test_a_local_file_wins_over_the_packaged_one(name, elsewhere):
    local = elsewhere / "method" / "cops.yaml"
    local.parent.mkdir()
    local.write_text("# my own CoPS\nmodel: {}\n")
    assert resolve_config_file(name).resolve() == local


def test_a_missing_config_says_where_zsad_looked(elsewhere):
    with pytest.raises(ConfigError, match=r"Config file 'method/copz' does not exist here .*`zsad configs`"):
        resolve_config_file("method/copz")


def test_composition_hands_the_parser_the_resolved_files(elsewhere):
    argv, merged = compose_argv(["-c", "backbone/tiny", "--trainer.max_steps=1"])
    assert argv == ["--config", str(PACKAGED_ROOT / "backbone" / "tiny.yaml"), "--trainer.max_steps=1"]
    assert merged["model"]["backbone"]["class_path"] == "tiny-random"
    argv, merged = compose_argv(["-c", "method/static", "-c", "configs/backbone/tiny.yaml"])
    assert argv[0] == "--config" and len(argv) == 2  # two files merged into one document
    assert merged["model"]["prompt"]["class_path"] == "static"


def test_every_packaged_config_has_a_summary():
    found = packaged_configs()
    assert len(found) == len(list(PACKAGED_ROOT.rglob("*.yaml")))
    assert not [c.name for c in found if not c.summary], "start every config with a comment that says what it is"
    assert all(len(c.summary) <= 96 for c in found)


def test_zsad_configs_lists_them(run_cli, elsewhere):
    code, out = run_cli(["configs"])
    assert code == 0, out
    assert str(PACKAGED_ROOT) in out
    for config in packaged_configs():
        folder, _, leaf = config.name.rpartition("/")
        assert f"{folder}/" in out and f"  {leaf} " in out
    assert "A dataset in the MVTec AD layout." in out  # the first sentence of data/mvtec.yaml's comment
    assert run_cli(["configs", "method"])[1] == configs_listing("method")
    code, out = run_cli(["configs", "--show", "backbone/tiny"])
    assert code == 0 and out == (PACKAGED_ROOT / "backbone" / "tiny.yaml").read_text()
    code, out = run_cli(["configs", "nope"])
    assert code == 2 and "No packaged config folder 'nope'. Folders: ablation, backbone" in out


def test_print_config_names_the_files_it_read(run_cli, elsewhere):
    local = elsewhere / "trainer" / "smoke.yaml"
    local.parent.mkdir()
    local.write_text((PACKAGED_ROOT / "trainer" / "smoke.yaml").read_text().replace("max_epochs: 2", "max_epochs: 7"))
    args = ["fit", "-c", "backbone/tiny", "-c", "method/static", "-c", "data/synthetic", "-c", "trainer/smoke"]
    code, out = run_cli([*args, "--print_config"])
    assert code == 0, out
    assert f"#   {PACKAGED_ROOT / 'backbone' / 'tiny.yaml'}  (packaged)" in out
    assert f"#   {PACKAGED_ROOT / 'method' / 'static.yaml'}  (packaged)" in out
    assert f"#   {local}\n" in out  # the local trainer/smoke.yaml won, and is not called packaged
    assert "max_epochs: 7" in out


def test_grid_files_find_packaged_configs(tmp_path, elsewhere):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\n")
    assert resolve_config_path("configs/method/cops.yaml", grid) == PACKAGED_ROOT / "method" / "cops.yaml"
    assert resolve_config_path("method/vip", grid) == PACKAGED_ROOT / "method" / "vip.yaml"
    # a shipped grid names configs by their checkout path; inside the package they resolve the same way
    shipped = PACKAGED_ROOT / "grids" / "synthetic_smoke.yaml"
    assert resolve_config_path("configs/method/static.yaml", shipped) == PACKAGED_ROOT / "method" / "static.yaml"


def test_a_shipped_grid_loads_by_name(elsewhere):
    from zsad.workflow.grid.spec import load_grid

    spec = load_grid("grids/synthetic_smoke")
    assert spec.name == "synthetic_smoke"
