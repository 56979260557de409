"""Serialisable construction specs for components.

Every component (backbone, prompt synthesizer, head, loss) records the arguments it was built with, as
``{"class_path": ..., "init_args": ...}``. Checkpoints store these specs instead of live modules, so a model
built in plain Python reloads exactly like one built by the CLI, and loading never needs unsafe pickle.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsad.errors import ConfigError
from zsad.registry import class_path_of, resolve_alias

_SPEC_ATTR = "_zsad_init_args"


class Component:
    """Mixin that remembers the constructor arguments of the outermost ``__init__`` call.

    Subclasses need no extra code: ``__init_subclass__`` wraps each ``__init__`` they define.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_spec", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Component, *args: Any, **kw: Any) -> None:
            if _SPEC_ATTR not in self.__dict__:  # only the most derived __init__ records
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop(next(iter(signature.parameters)))  # self
                for name, parameter in signature.parameters.items():
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name, {}))
                object.__setattr__(self, _SPEC_ATTR, (type(self), arguments))
            init(self, *args, **kw)

        recording_init._records_spec = True  # type: ignore[attr-defined]
        cls.__init__ = recording_init  # type: ignore[method-assign]

    def spec(self) -> dict[str, Any]:
        """Return ``{"class_path", "init_args"}`` that rebuilds this component.

        Raises:
            ConfigError: If an argument cannot be written as plain data.
        """
        cls, arguments = self.__dict__[_SPEC_ATTR]
        return {
            "class_path": class_path_of(cls),
            "init_args": {k: to_plain(v, f"{cls.__name__}.{k}") for k, v in arguments.items()},
        }


def to_plain(value: Any, where: str = "value") -> Any:
    """Convert a constructor argument to JSON-like plain data (nested components become specs)."""
    if isinstance(value, Component):
        return value.spec()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(
        f"{where} is a {type(value).__name__}, which cannot be stored in a checkpoint. "
        f"Pass plain values (numbers, strings, lists, dicts) or other zsad components instead."
    )


def import_class(class_path: str) -> type:
    """Import ``package.module.Class`` (or resolve a registry alias) and return the class."""
    resolved = class_path if "." in class_path else resolve_alias(class_path)
    if resolved is None:
        raise ConfigError(f"'{class_path}' is neither a registered component name nor a dotted class path.")
    module_name, _, attribute = resolved.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"Cannot import component class '{resolved}': {error}.") from error


def is_spec(value: Any) -> bool:
    """Whether ``value`` looks like a ``{"class_path": ..., "init_args": ...}`` spec."""
    return isinstance(value, Mapping) and "class_path" in value


def build(value: Any) -> Any:
    """Instantiate a spec (recursively); return live objects and plain values unchanged."""
    if is_spec(value):
        cls = import_class(value["class_path"])
        init_args = {k: build(v) for k, v in (value.get("init_args") or {}).items()}
        return cls(**init_args)
    if isinstance(value, list):
        return [build(v) for v in value]
    return value
