"""One registry per component kind, so that configs and the command line can name parts by short names.

The built-in components are known by name before their modules are imported: :mod:`zsad._registry_table` lists
each one's class path and one-line description, so ``zsad list`` needs no torch, and a name's module is imported the
first time the name is looked up (:meth:`Registry.get`). ``tests/test_registry.py`` keeps that table equal to what
the modules register; :func:`builtin_table_source` regenerates it.

Example:
    >>> from zsad.registry import HEADS
    >>> "dual_branch" in HEADS  # doctest: +SKIP
    True
    >>> HEADS.get("dual_brnch")  # doctest: +SKIP
    Traceback (most recent call last):
    zsad.errors.UnknownComponentError: Unknown head 'dual_brnch'. Did you mean 'dual_branch'? Valid heads: ...
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from zsad._registry_table import BUILTIN_COMPONENTS
from zsad.errors import UnknownComponentError

T = TypeVar("T", bound=type)


def first_docstring_line(obj: object) -> str:
    """Return the summary line of an object's docstring, or an empty string."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def class_path_of(cls: type) -> str:
    """Return the dotted import path of a class, as jsonargparse and checkpoints expect it."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry(Generic[T]):
    """A name-to-class table for one kind of component (backbone, prompt, head, ...).

    Args:
        kind: Human-readable kind, used in error messages ("prompt synthesizer").
        plural: Plural of ``kind`` for listings.
        builtins: Built-in entries known before their modules are imported: name -> ``(class path, description)``.
            A name's module is imported when the name is first looked up.
    """

    def __init__(
        self, kind: str, plural: str | None = None, builtins: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}
        self._builtins: dict[str, tuple[str, str]] = dict(builtins or {})

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator that registers ``cls`` under ``name``; re-registering warns, as timm does.

        A plugin that takes a built-in name keeps it even when the built-in's module is imported later (built-in
        modules load on first use, and the order in which that happens must not undo a plugin).
        """

        def decorator(cls: T) -> T:
            cls.registry_name = name  # type: ignore[attr-defined]
            previous = self._entries.get(name)
            builtin = self._builtins.get(name, (None, ""))[0]
            if previous is not None and class_path_of(cls) == builtin != class_path_of(previous):
                return cls
            replaced = class_path_of(previous) if previous is not None else builtin
            if replaced is not None and replaced != class_path_of(cls):
                warnings.warn(
                    f"{self.kind} '{name}' was registered by {replaced} and is now replaced by {class_path_of(cls)}.",
                    stacklevel=2,
                )
            self._entries[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> T:
        """Return the class registered as ``name`` (importing a built-in's module the first time).

        Raises:
            UnknownComponentError: If ``name`` is not registered; the message lists close matches and all names.
        """
        if name not in self._entries and name in self._builtins:
            self._import_builtin(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def _import_builtin(self, name: str) -> None:
        """Import the module of a built-in entry, whose decorator registers it."""
        module = self._builtins[name][0].rpartition(".")[0]
        importlib.import_module(module)
        if name not in self._entries:
            raise RuntimeError(
                f"zsad's table of built-in components names {self._builtins[name][0]} as {self.kind} '{name}', but "
                f"importing {module} did not register it; regenerate zsad/_registry_table.py (see zsad.registry)."
            )

    def load_builtins(self) -> None:
        """Import every built-in entry's module (e.g. before a parser lists the known subclasses)."""
        for name in self._builtins:
            if name not in self._entries:
                self._import_builtin(name)

    def class_path(self, name: str) -> str:
        """The class path of ``name`` without importing anything that is not imported yet.

        Raises:
            UnknownComponentError: If ``name`` is not registered.
        """
        if name in self._entries:
            return class_path_of(self._entries[name])
        if name in self._builtins:
            return self._builtins[name][0]
        raise UnknownComponentError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        """Build the error text for an unknown ``name``."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        valid = ", ".join(names) or "(none registered)"
        return (
            f"Unknown {self.kind} '{name}'.{hint} Valid {self.plural}: {valid}. "
            f"Run `zsad list` to see every registered component, or give a full class path."
        )

    def find_by_class(self, cls: type) -> str | None:
        """Return the registered name of ``cls``, if any."""
        return next((n for n, c in self._entries.items() if c is cls), None)

    def names(self) -> list[str]:
        """All registered names (built-in ones included, imported or not), sorted."""
        return sorted({*self._entries, *self._builtins})

    def describe(self) -> list[tuple[str, str]]:
        """``(name, one-line description)`` for every entry, sorted by name; imports nothing."""
        return [
            (name, first_docstring_line(self._entries[name]) if name in self._entries else self._builtins[name][1])
            for name in self.names()
        ]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._builtins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


BACKBONES: Registry = Registry("backbone", builtins=BUILTIN_COMPONENTS.get("backbone"))
PROMPTS: Registry = Registry("prompt synthesizer", builtins=BUILTIN_COMPONENTS.get("prompt"))
HEADS: Registry = Registry("scoring head", builtins=BUILTIN_COMPONENTS.get("head"))
LOSSES: Registry = Registry("loss", "losses", builtins=BUILTIN_COMPONENTS.get("loss"))
DATASETS: Registry = Registry("dataset", builtins=BUILTIN_COMPONENTS.get("dataset"))
DATAMODULES: Registry = Registry("datamodule", builtins=BUILTIN_COMPONENTS.get("datamodule"))
METRICS: Registry = Registry("metric", builtins=BUILTIN_COMPONENTS.get("metric"))

REGISTRIES: dict[str, Registry] = {
    "backbone": BACKBONES,
    "prompt": PROMPTS,
    "head": HEADS,
    "loss": LOSSES,
    "dataset": DATASETS,
    "datamodule": DATAMODULES,
    "metric": METRICS,
}


def resolve_alias(name: str) -> str | None:
    """Translate a short registry name to a class path, if exactly one registry knows it."""
    matches = [reg.class_path(name) for reg in REGISTRIES.values() if name in reg]
    return matches[0] if len(matches) == 1 else None


def load_builtin_components() -> None:
    """Import every built-in component (the command-line parser lists them as the known subclasses)."""
    for registry in REGISTRIES.values():
        registry.load_builtins()


BUILTIN_PACKAGES = ("zsad.backbones", "zsad.prompts", "zsad.heads", "zsad.losses", "zsad.data")
"""The packages whose modules register zsad's built-in components."""


def builtin_table_source() -> str:
    """The text of ``zsad/_registry_table.py`` for the components zsad's own modules register (imports them all)."""
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    load_builtin_components()
    lines = [
        '"""Built-in components by kind: name -> (class path, one-line description). Generated; do not edit.',
        "",
        "Regenerate with ``python -c \"import zsad.registry as r; print(r.builtin_table_source(), end='')\" > "
        "src/zsad/_registry_table.py``",
        '(tests/test_registry.py checks that it matches what the modules register)."""',
        "",
        "BUILTIN_COMPONENTS: dict[str, dict[str, tuple[str, str]]] = {",
    ]
    for kind, registry in REGISTRIES.items():
        entries = [(n, registry.get(n)) for n in registry.names()]
        builtin = [(n, cls) for n, cls in entries if cls.__module__.split(".")[0] == "zsad"]
        lines.append(f"    {kind!r}: {{")
        lines += [f"        {n!r}: ({class_path_of(cls)!r}, {first_docstring_line(cls)!r})," for n, cls in builtin]
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"
