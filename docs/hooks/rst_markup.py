"""Griffe extension: render the reStructuredText markup of zsad's docstrings as Markdown on the documentation site.

zsad's docstrings are Google style, but cross-reference with Sphinx roles (:class:`~zsad.structures.Features`,
:meth:`setup`) and introduce literal blocks with ``::``, which read well in an editor and in ``help()``. Markdown
has neither, so without this extension the API pages would show the raw markup.

- Each role becomes an *optional* autoref: a link when the target is rendered somewhere on the site, plain code
  otherwise (torch classes, private helpers), so a reference can never break the strict build.
- ``text::`` becomes ``text:`` and a line holding only ``::`` disappears, as in Sphinx; the indented block after
  it is already a Markdown code block.

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``); mkdocs does not publish
this folder (``exclude_docs``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")
LITERAL_MARKER = re.compile(r"(?P<text>\S?)[ \t]*::[ \t]*$", flags=re.MULTILINE)


def resolve_target(obj: griffe.Object, target: str) -> str:
    """Full path of a role's target as seen from the object whose docstring names it.

    Absolute paths (``zsad.x.y``) are kept; ``.name`` and ``name`` are looked up in the object's scope and its
    parents', as Sphinx does; a name that does not resolve is returned as written.
    """
    if target.startswith("zsad."):
        return target
    head, _, rest = target.lstrip(".").partition(".")
    try:
        resolved = obj.resolve(head)
    except (griffe.NameResolutionError, AttributeError):
        return target
    return f"{resolved}.{rest}" if rest else resolved


def role_to_autoref(obj: griffe.Object, match: re.Match[str]) -> str:
    """One role as HTML that mkdocs-autorefs links, or leaves as code when the target is not on the site."""
    target = match["target"]
    title = target.lstrip(".").rsplit(".", 1)[-1] if match["tilde"] else target.lstrip(".")
    return f'<autoref identifier="{resolve_target(obj, target)}" optional><code>{title}</code></autoref>'


def to_markdown(obj: griffe.Object, docstring: str) -> str:
    """A docstring with its roles and literal-block markers rewritten."""
    docstring = ROLE.sub(lambda match: role_to_autoref(obj, match), docstring)
    # "Layout::" keeps one colon; a bare "::" line keeps nothing, so the blank line before the block remains.
    return LITERAL_MARKER.sub(lambda match: f"{match['text']}:" if match["text"] else "", docstring)


class RstMarkup(griffe.Extension):
    """Rewrite reStructuredText markup in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings once the whole package is loaded, so that every name can be resolved."""
        self._rewrite(pkg, seen=set())

    def _rewrite(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:  # an alias's docstring belongs to its target, rewritten where it is defined
                self._rewrite(member, seen)
