"""The frozen CLIP text tower, driven by prompt *embeddings* rather than token ids.

Prompt learners build ``[P, L, W]`` embeddings (learned context vectors spliced into token embeddings) and the
end-of-text (EOT) position of each prompt. :class:`TextEncoder` runs them through the frozen transformer with the
causal mask, optionally modifying tokens before each block through a :class:`DeepPromptHook`, and pools at EOT.

Sequences are cut to the longest real prompt (its EOT + 1) instead of 77 tokens. Under the causal mask a token
never attends to later positions, so everything up to each EOT is unchanged: the cut is exact, and for 20-token
prompts it makes the text pass about 4x cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from zsad.structures import l2_normalize


class DeepPromptHook(Protocol):
    """Changes the token sequence before each text block (deep prompts)."""

    inserted_tokens: int
    """How many tokens the hook inserts in total; EOT positions shift right by this much."""

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        """Return the tokens to feed block ``layer`` (0-based)."""
        ...


def _expand(prompt: Tensor, batch: int) -> Tensor:
    return prompt.expand(batch, -1, -1) if prompt.dim() == 2 else prompt


class OverwriteDeepPrompts:
    """Overwrite token positions with per-layer learned tokens (AnomalyCLIP / CoPS deep text prompts).

    Before block ``first_layer + i`` (0-based), positions ``position .. position + n - 1`` are replaced by
    ``prompts[i]``. AnomalyCLIP's ``depth=9`` is 8 tensors of ``[4, W]`` at 1-based layers 2-9, i.e.
    ``first_layer=1``, ``position=1``.

    Args:
        prompts: One ``[n, W]`` (shared) or ``[P, n, W]`` tensor per layer.
        first_layer: 0-based index of the first block that gets overwritten.
        position: First overwritten token position (1 = right after SOS).
        round_copies_to_fp16: Round each prompt's copy to fp16 after a shared tensor is expanded to the P prompts,
            as AnomalyCLIP and CoPS do. Rounding before the expansion gives the same values, but the gradient
            would then be rounded once after the sum over prompts instead of once per prompt before it.
    """

    inserted_tokens = 0

    def __init__(
        self, prompts: Sequence[Tensor], first_layer: int = 1, position: int = 1, round_copies_to_fp16: bool = False
    ) -> None:
        self.prompts = list(prompts)
        self.first_layer = first_layer
        self.position = position
        self.round_copies_to_fp16 = round_copies_to_fp16

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        """Splice this layer's learned tokens in, if the layer is in range."""
        offset = layer - self.first_layer
        if not 0 <= offset < len(self.prompts):
            return tokens
        learned = _expand(self.prompts[offset], tokens.shape[0])
        if self.round_copies_to_fp16:
            learned = learned.half().to(self.prompts[offset].dtype)
        learned = learned.to(tokens.dtype)
        end = self.position + learned.shape[1]
        return torch.cat([tokens[:, : self.position], learned, tokens[:, end:]], dim=1)


class InsertDeepPrompts:
    """Insert learned tokens after SOS at the first block, then blend them layer by layer (DAPO).

    Before block 0 the ``n`` tokens of ``prompts[0]`` are inserted at ``position``, so the sequence grows by ``n``.
    Before each later block ``i < len(prompts)`` the slot becomes ``blend * previous + (1 - blend) * prompts[i]``
    (DAPO's 0.01 / 0.99 residual blend).

    Args:
        prompts: One ``[n, W]`` or ``[P, n, W]`` tensor per layer.
        position: Insertion position (1 = after SOS).
        blend: Weight of the previous layer's output in the slot.
    """

    def __init__(self, prompts: Sequence[Tensor], position: int = 1, blend: float = 0.01) -> None:
        self.prompts = list(prompts)
        self.position = position
        self.blend = blend
        self.inserted_tokens = self.prompts[0].shape[-2]

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        """Insert at layer 0, blend at later layers that have a prompt."""
        if layer >= len(self.prompts):
            return tokens
        learned = _expand(self.prompts[layer], tokens.shape[0]).to(tokens.dtype)
        start, end = self.position, self.position + self.inserted_tokens
        if layer == 0:
            return torch.cat([tokens[:, :start], learned, tokens[:, start:]], dim=1)
        slot = self.blend * tokens[:, start:end] + (1.0 - self.blend) * learned
        return torch.cat([tokens[:, :start], slot, tokens[:, end:]], dim=1)


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive ``[L, L]`` mask with ``-inf`` above the diagonal."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


class TextEncoder(nn.Module):
    """Frozen CLIP text tower that encodes prompt embeddings.

    It holds references to the modules of an open_clip ``CLIP`` model (they are registered under the backbone).

    Args:
        clip_model: An open_clip ``CLIP`` (text tower on the top-level model).
        tokenizer: The model's tokenizer (``open_clip.get_tokenizer``).
    """

    def __init__(self, clip_model: nn.Module, tokenizer: object) -> None:
        super().__init__()
        if not hasattr(clip_model, "token_embedding"):
            raise TypeError(
                f"{type(clip_model).__name__} keeps its text tower in a separate module (CustomTextCLIP); "
                "zsad supports open_clip models with the standard CLIP text transformer."
            )
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.tokenizer = tokenizer

    @property
    def width(self) -> int:
        """Token width W of the text transformer."""
        return self.token_embedding.weight.shape[1]

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint image-text space (the output of :meth:`forward`)."""
        if self.text_projection is None:
            return self.width
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection.out_features
        return self.text_projection.shape[1]

    @property
    def context_length(self) -> int:
        """Maximum number of tokens (77 for CLIP)."""
        return self.positional_embedding.shape[0]

    @property
    def depth(self) -> int:
        """Number of text transformer blocks."""
        return len(self.transformer.resblocks)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Token ids ``[P, 77]`` on the encoder's device."""
        return self.tokenizer(list(texts)).to(self.token_embedding.weight.device)

    def embed_tokens(self, token_ids: Tensor) -> Tensor:
        """Token embeddings ``[P, L, W]`` (no position embedding)."""
        return self.token_embedding(token_ids)

    @staticmethod
    def eot_positions(token_ids: Tensor) -> Tensor:
        """EOT index of each prompt: the EOT token has the largest id in CLIP's vocabulary."""
        return token_ids.argmax(dim=-1)

    def forward(
        self,
        prompt_embeddings: Tensor,
        eot_positions: Tensor,
        deep_prompts: DeepPromptHook | None = None,
        truncate: bool = True,
        causal: bool = True,
        normalize: bool = True,
        checkpoint: bool = False,
    ) -> Tensor:
        """Encode prompt embeddings to ``[P, D]`` text features.

        Args:
            prompt_embeddings: ``[P, L, W]`` token embeddings (learned vectors already spliced in).
            eot_positions: ``[P]`` EOT index of each prompt, before any deep-prompt insertion.
            deep_prompts: Optional hook that edits tokens before each block.
            truncate: Cut to the longest prompt (exact under the causal mask; ignored when ``causal=False``).
            causal: Apply the causal mask (``False`` reproduces DAPO's learned-prompt path).
            normalize: L2-normalise the output.
            checkpoint: Recompute each block in the backward pass instead of keeping its activations (only while
                autograd records): less memory for many long prompts, the same values, one more text forward.
        """
        length = prompt_embeddings.shape[1]
        if truncate and causal:
            length = int(eot_positions.max()) + 1
        tokens = prompt_embeddings[:, :length] + self.positional_embedding[:length].to(prompt_embeddings.dtype)
        for layer, block in enumerate(self.transformer.resblocks):
            if deep_prompts is not None:
                tokens = deep_prompts.before_layer(layer, tokens)
            mask = causal_mask(tokens.shape[1], tokens.dtype, tokens.device) if causal else None
            if checkpoint and torch.is_grad_enabled():
                tokens = activation_checkpoint(block, tokens, attn_mask=mask, use_reentrant=False)
            else:
                tokens = block(tokens, attn_mask=mask)
        tokens = self.ln_final(tokens)
        shift = deep_prompts.inserted_tokens if deep_prompts is not None else 0
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot_positions + shift]
        pooled = self._project(pooled)
        return l2_normalize(pooled) if normalize else pooled

    def _project(self, pooled: Tensor) -> Tensor:
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> Tensor:
        """Encode plain sentences (no learned tokens), e.g. for WinCLIP's prompt ensemble."""
        token_ids = self.tokenize(texts)
        return self(self.embed_tokens(token_ids), self.eot_positions(token_ids), normalize=normalize)
