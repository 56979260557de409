"""Discovery of third-party components through the ``zsad.plugins`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."zsad.plugins"]
    my_method = "my_package.prompts"

Importing that module runs its ``@PROMPTS.register(...)`` decorators, after which the new names work in YAML,
on the command line and in ``zsad list``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from zsad.errors import ZSADError

PLUGIN_GROUP = "zsad.plugins"
_loaded: set[str] = set()


def load_plugins(group: str = PLUGIN_GROUP) -> list[str]:
    """Import every entry point of ``group`` once.

    Returns:
        The names of the entry points loaded by this call.

    Raises:
        ZSADError: If a plugin fails to import; the message names the entry point and its target.
    """
    loaded = []
    for entry_point in entry_points(group=group):
        key = f"{entry_point.name}={entry_point.value}"
        if key in _loaded:
            continue
        try:
            entry_point.load()
        except Exception as error:  # a broken plugin must name itself, whatever it raised
            raise ZSADError(
                f"The zsad plugin '{entry_point.name}' ({entry_point.value}) failed to import: {error!r}. "
                f"Fix or uninstall the package that provides it."
            ) from error
        _loaded.add(key)
        loaded.append(entry_point.name)
    return loaded
