"""Reuse of image-independent prompt embeddings across the batches of an evaluation.

Static prompts (AnomalyCLIP), DAPO's hybrid prompts at test time and WinCLIP's ensemble give the same class
embeddings for every image, so one text pass per evaluation replaces one per batch. DAPO's 210 prompts run
unmasked over all 77 tokens, so per batch they would cost more than the image tower itself.

An entry is only reused while nothing it depends on can have changed. :class:`PromptCache` stores an entry with
a fingerprint (:func:`tensor_state`) of every tensor that produced it: each tensor's device, dtype, storage
address and version counter. PyTorch bumps a tensor's version counter on every in-place change (optimizer steps,
``load_state_dict``, ``copy_`` under ``no_grad``), and moving or casting a module replaces its tensors, so any of
these makes the fingerprint differ and the entry is recomputed. Writes through ``tensor.data`` bypass the
counter; :meth:`zsad.prompts.base.PromptSynthesizer.synthesize` therefore also empties the cache whenever the
synthesizer switches between training and evaluation, and the module empties it when an evaluation starts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace

import torch
from torch import Tensor, nn

from zsad.structures import TextFeatures

TensorState = tuple[Hashable, ...]


def tensor_state(tensors: Iterable[Tensor]) -> TensorState:
    """A fingerprint that changes whenever any of ``tensors`` is modified in place, moved, cast or replaced."""
    return tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors)


def module_tensors(*modules: object) -> list[Tensor]:
    """Parameters and buffers of every ``nn.Module`` among ``modules`` (other objects contribute none)."""
    tensors: list[Tensor] = []
    for module in modules:
        if isinstance(module, nn.Module):
            tensors.extend(module.parameters())
            tensors.extend(module.buffers())
    return tensors


def autocast_state(device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether autocast is on for ``device``'s type, and its dtype: cached embeddings are in that precision."""
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


class PromptCache:
    """Text features computed once and returned again while their inputs' fingerprint stays the same.

    Entries are kept per key (e.g. the object names of a batch, for WinCLIP); a new fingerprint drops them all.
    """

    def __init__(self) -> None:
        self.state: TensorState | None = None
        self.entries: dict[Hashable, TextFeatures] = {}

    def clear(self) -> None:
        """Forget every entry."""
        self.state = None
        self.entries.clear()

    def fetch(self, state: TensorState, key: Hashable, compute: Callable[[], TextFeatures]) -> TextFeatures:
        """The entry for ``key`` if it was computed under ``state``, else ``compute()`` (stored for next time).

        Returns a shallow copy, so a caller that edits the record's fields never edits the stored entry.
        """
        if state != self.state:
            self.clear()
            self.state = state
        if key not in self.entries:
            self.entries[key] = compute()
        cached = self.entries[key]
        return replace(cached, terms=dict(cached.terms))
