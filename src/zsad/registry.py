"""One registry per component kind, so that configs and the command line can name parts by short names.

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
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator that registers ``cls`` under ``name``; re-registering warns, as timm does."""

        def decorator(cls: T) -> T:
            previous = self._entries.get(name)
            if previous is not None and previous is not cls:
                warnings.warn(
                    f"{self.kind} '{name}' was registered by {class_path_of(previous)} and is now replaced by "
                    f"{class_path_of(cls)}.",
                    stacklevel=2,
                )
            self._entries[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def get(self, name: str) -> T:
        """Return the class registered as ``name``.

        Raises:
            UnknownComponentError: If ``name`` is not registered; the message lists close matches and all names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """Build the error text for an unknown ``name``."""
        close = difflib.get_close_matches(name, list(self._entries), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        valid = ", ".join(sorted(self._entries)) or "(none registered)"
        return (
            f"Unknown {self.kind} '{name}'.{hint} Valid {self.plural}: {valid}. "
            f"Run `zsad list` to see every registered component, or give a full class path."
        )

    def find_by_class(self, cls: type) -> str | None:
        """Return the registered name of ``cls``, if any."""
        return next((n for n, c in self._entries.items() if c is cls), None)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, one-line description)`` for every entry, sorted by name."""
        return [(name, first_docstring_line(self._entries[name])) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


BACKBONES: Registry = Registry("backbone")
PROMPTS: Registry = Registry("prompt synthesizer")
HEADS: Registry = Registry("scoring head")
LOSSES: Registry = Registry("loss", "losses")
DATASETS: Registry = Registry("dataset")
DATAMODULES: Registry = Registry("datamodule")
METRICS: Registry = Registry("metric")

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
    matches = [class_path_of(reg.get(name)) for reg in REGISTRIES.values() if name in reg]
    return matches[0] if len(matches) == 1 else None
