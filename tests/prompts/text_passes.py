"""Test helpers for the prompt tests: record what goes through the text encoder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class TextPass:
    """One call of the text encoder: how many prompts, and how many tokens reached its first block."""

    prompts: int
    tokens: int | None = None


@contextmanager
def recorded_text_passes(text) -> Iterator[list[TextPass]]:
    """Record every :class:`~zsad.backbones.text.TextEncoder` call made inside the block (hooks, so nothing changes)."""
    passes: list[TextPass] = []

    def on_call(_module, args):
        passes.append(TextPass(prompts=args[0].shape[0]))

    def on_first_block(_module, args):
        passes[-1].tokens = args[0].shape[1]

    handles = [
        text.register_forward_pre_hook(on_call),
        text.transformer.resblocks[0].register_forward_pre_hook(on_first_block),
    ]
    try:
        yield passes
    finally:
        for handle in handles:
            handle.remove()
