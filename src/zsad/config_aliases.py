"""Translate short registry names in YAML and on the command line to the class paths jsonargparse needs.

jsonargparse resolves ``class_path`` only from dotted paths or imported class names, so ``prompt: static`` or
``--model.head=dual_branch`` would fail with "Expected a dot import path". zsad installs a YAML loader (for the
``omegaconf+`` parser mode, which also resolves ``${...}`` interpolation across all ``-c`` files) that rewrites
those names, and rewrites command-line values the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsonargparse
from jsonargparse import set_loader

from zsad.registry import BACKBONES, DATAMODULES, HEADS, LOSSES, PROMPTS, Registry, class_path_of

PARSER_MODE = "omegaconf+"
COMPONENT_KEYS: dict[str, Registry] = {
    "backbone": BACKBONES,
    "prompt": PROMPTS,
    "head": HEADS,
    "losses": LOSSES,
    "data": DATAMODULES,
}


def translate_name(name: str, registry: Registry) -> str:
    """Class path for a registry name; dotted paths and imported class names pass through."""
    if "." in name or name in registry:
        return class_path_of(registry.get(name)) if name in registry else name
    if name[:1].isupper():  # an imported class name, which jsonargparse resolves itself
        return name
    return class_path_of(registry.get(name))  # raises UnknownComponentError with the valid names


def translate_value(value: Any, registry: Registry) -> Any:
    """Translate a component value: a name, a ``{class_path, init_args}`` dict, or a list of them."""
    if isinstance(value, str):
        return translate_name(value, registry)
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return {**translate_tree(value), "class_path": translate_name(value["class_path"], registry)}
    if isinstance(value, list):
        return [translate_value(v, registry) for v in value]
    return translate_tree(value)


def translate_tree(tree: Any) -> Any:
    """Walk a parsed YAML document and translate every component value found under a component key."""
    if isinstance(tree, dict):
        return {
            key: translate_value(value, COMPONENT_KEYS[key]) if key in COMPONENT_KEYS else translate_tree(value)
            for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [translate_tree(v) for v in tree]
    return tree


def translate_argv(argv: Sequence[str]) -> list[str]:
    """Rewrite ``--a.b.prompt=static`` and ``--a.b.prompt static`` style arguments."""
    result: list[str] = []
    pending: Registry | None = None
    for arg in argv:
        if pending is not None and not arg.startswith("-"):
            result.append(translate_value(arg, pending))
            pending = None
            continue
        pending = None
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            registry = COMPONENT_KEYS.get(key.rstrip("+").rsplit(".", 1)[-1])
            if registry is not None and sep and not value.lstrip().startswith(("{", "[")):
                arg = f"--{key}={translate_value(value, registry)}"
            elif registry is not None and not sep:
                pending = registry
        result.append(arg)
    return result


_installed = False


def install_loader() -> None:
    """Register the translating loader for :data:`PARSER_MODE` (idempotent)."""
    global _installed
    if _installed:
        return
    # jsonargparse creates its omegaconf loaders lazily; create it now so that ours can wrap it.
    from jsonargparse._loaders_dumpers import get_loader_exceptions, set_omegaconf_loader

    # `${model.backbone...}` in a -c file is absolute from the file's root, which sits under the subcommand key.
    jsonargparse.set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    set_omegaconf_loader(PARSER_MODE)
    base_loader = jsonargparse.get_loader(PARSER_MODE)

    def zsad_loader(text: str) -> Any:
        return translate_tree(base_loader(text))

    set_loader(PARSER_MODE, zsad_loader, get_loader_exceptions("yaml"))
    _installed = True
