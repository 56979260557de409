"""Test helper: deep prompts spliced in the way the official AnomalyCLIP and CoPS text blocks do it.

Facts (AnomalyCLIP ``AnomalyCLIP_lib/AnomalyCLIP.py`` and CoPS ``lib/clip.py``, read at the commits of methods.md
§0): before text block ``1 + i`` (0-based), a block takes the shared ``[n, W]`` deep prompt ``i``, expands it to all
P prompts of the pass, casts that expanded tensor to fp16 and concatenates it between the fp32 prefix (SOS) and
suffix, which promotes it back to fp32. In the backward pass autograd casts each prompt's slice of the gradient to
fp16 (the dtype of that concatenation input) and back to fp32, and the expansion then sums the P slices in fp32:
each prompt's gradient is rounded on its own. Rounding the shared tensor first and then expanding gives the same
forward values but rounds only the sum, so the gradients differ.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ReferenceDeepPrompts:
    """Deep prompts spliced in as the official blocks do, for one pass of P prompts (see the module docstring).

    Args:
        deep: ``[layers, n, W]`` deep prompts, one ``[n, W]`` tensor per text block from block 1 (0-based).
        order: ``"official"`` expands, then casts each copy to fp16; ``"round_first"`` casts the shared tensor to
            fp16 and back, then expands (zsad's earlier order); ``"none"`` splices without rounding.
    """

    inserted_tokens = 0

    def __init__(self, deep: Tensor, order: str) -> None:
        self.deep, self.order = deep, order

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        index = layer - 1
        if not 0 <= index < self.deep.shape[0]:
            return tokens
        shared = self.deep[index]
        if self.order == "round_first":
            shared = shared.half().float()
        copies = shared.expand(tokens.shape[0], -1, -1)
        if self.order == "official":
            copies = copies.half()  # torch.cat below promotes it to fp32, as in the official blocks
        return torch.cat([tokens[:, :1], copies, tokens[:, 1 + copies.shape[1] :]], dim=1)
