"""Registries, name resolution and plugin discovery."""

from __future__ import annotations

import sys
import textwrap

import pytest

import zsad  # noqa: F401  (registers the built-ins)
from zsad.config_aliases import translate_argv, translate_tree
from zsad.errors import UnknownComponentError, ZSADError
from zsad.plugins import load_plugins
from zsad.registry import BACKBONES, DATAMODULES, HEADS, LOSSES, PROMPTS, Registry, resolve_alias


def test_builtins_are_registered():
    assert {"clip", "tiny-random"} <= set(BACKBONES.names())
    assert "static" in PROMPTS and "dual_branch" in HEADS
    assert {"focal", "dice", "image_ce"} <= set(LOSSES.names())
    assert {"mvtec", "synthetic"} <= set(DATAMODULES.names())


def test_unknown_name_lists_valid_names_and_close_matches():
    with pytest.raises(UnknownComponentError) as info:
        HEADS.get("dual_brnch")
    message = str(info.value)
    assert "Unknown scoring head 'dual_brnch'" in message
    assert "Did you mean 'dual_branch'?" in message
    assert "Valid scoring heads: dual_branch" in message


def test_reregistering_a_name_warns():
    registry = Registry("thing")

    @registry.register("a")
    class First:
        """First."""

    with pytest.warns(UserWarning, match="'a' was registered by .*First"):

        @registry.register("a")
        class Second:
            """Second."""

    assert registry.get("a") is Second
    assert registry.describe() == [("a", "Second.")]


def test_aliases_translate_in_yaml_trees_and_argv():
    tree = {
        "model": {
            "prompt": {"class_path": "static", "init_args": {"n_ctx": 4}},
            "head": "dual_branch",
            "losses": [{"class_path": "focal"}, "dice"],
        },
        "data": {"class_path": "synthetic"},
    }
    translated = translate_tree(tree)
    assert translated["model"]["prompt"]["class_path"] == "zsad.prompts.static.StaticPrompt"
    assert translated["model"]["prompt"]["init_args"] == {"n_ctx": 4}
    assert translated["model"]["head"] == "zsad.heads.dual_branch.DualBranchHead"
    assert translated["model"]["losses"][1] == "zsad.losses.pixel.DiceLoss"
    assert translated["data"]["class_path"] == "zsad.data.synthetic.datamodule.SyntheticDataModule"
    argv = translate_argv(
        [
            "fit",
            "--model.prompt=static",
            "--model.head",
            "dual_branch",
            "--data=synthetic",
            "--model.prompt.init_args.n_ctx=3",
            "--trainer.max_steps",
            "5",
        ]
    )
    assert argv == [
        "fit",
        "--model.prompt=zsad.prompts.static.StaticPrompt",
        "--model.head",
        "zsad.heads.dual_branch.DualBranchHead",
        "--data=zsad.data.synthetic.datamodule.SyntheticDataModule",
        "--model.prompt.init_args.n_ctx=3",
        "--trainer.max_steps",
        "5",
    ]
    assert resolve_alias("static") == "zsad.prompts.static.StaticPrompt"


def test_unknown_alias_in_a_config_names_the_kind():
    with pytest.raises(UnknownComponentError, match=r"Unknown prompt synthesizer 'statik'.*Did you mean 'static'"):
        translate_tree({"model": {"prompt": {"class_path": "statik"}}})


def _write_plugin(root, module_name, body, entry_name):
    (root / f"{module_name}.py").write_text(textwrap.dedent(body))
    dist = root / f"{module_name}_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[zsad.plugins]\n{entry_name} = {module_name}\n")


def test_plugins_are_discovered_through_entry_points(tmp_path, monkeypatch):
    _write_plugin(
        tmp_path,
        "zsad_test_plugin",
        '''
        from zsad.prompts.static import StaticPrompt
        from zsad.registry import PROMPTS

        @PROMPTS.register("fancy")
        class FancyPrompt(StaticPrompt):
            """A third-party prompt synthesizer."""
        ''',
        "fancy",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "fancy" in load_plugins()
        assert PROMPTS.get("fancy").__name__ == "FancyPrompt"
        assert load_plugins() == []  # loaded once
    finally:
        PROMPTS._entries.pop("fancy", None)
        sys.modules.pop("zsad_test_plugin", None)


def test_a_broken_plugin_names_itself(tmp_path, monkeypatch):
    _write_plugin(tmp_path, "zsad_broken_plugin", "raise ImportError('missing dependency xyz')\n", "broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ZSADError, match=r"plugin 'broken' \(zsad_broken_plugin\) failed to import.*xyz"):
        load_plugins()


def test_the_builtin_table_matches_what_the_modules_register():
    """`zsad list` reads names and descriptions from zsad/_registry_table.py, without importing the components."""
    from pathlib import Path

    import zsad._registry_table as table
    from zsad.registry import builtin_table_source

    assert Path(table.__file__).read_text() == builtin_table_source(), (
        "regenerate src/zsad/_registry_table.py as its docstring says"
    )


def test_a_builtin_name_is_known_before_its_module_is_imported():
    import subprocess

    code = (
        "import sys\nfrom zsad.registry import HEADS, PROMPTS\n"
        "assert 'topk' in HEADS and PROMPTS.class_path('vip') == 'zsad.prompts.vip.ViPPrompt'\n"
        "assert not [m for m in sys.modules if m.startswith(('zsad.heads', 'zsad.prompts', 'torch'))]\n"
        "assert HEADS.get('topk').__module__ == 'zsad.heads.topk'  # imported on first look-up\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_a_builtin_imported_after_a_plugin_keeps_the_plugins_class():
    registry = Registry("thing", builtins={"a": ("somewhere.Builtin", "The built-in.")})
    assert registry.describe() == [("a", "The built-in.")]

    with pytest.warns(UserWarning, match="'a' was registered by somewhere.Builtin and is now replaced by"):

        @registry.register("a")
        class Plugin:
            """A plugin's."""

    class Builtin:
        """The built-in, imported later."""

    Builtin.__module__, Builtin.__qualname__ = "somewhere", "Builtin"
    registry.register("a")(Builtin)
    assert registry.get("a") is Plugin
