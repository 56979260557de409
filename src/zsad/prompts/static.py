"""Object-agnostic learnable prompts with deep text prompts (AnomalyCLIP, methods.md §3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zsad.backbones.text import OverwriteDeepPrompts, TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.registry import PROMPTS
from zsad.structures import Features, TextFeatures

PLACEHOLDER = "X"


@PROMPTS.register("static")
class StaticPrompt(PromptSynthesizer):
    """AnomalyCLIP-style static prompts: "[V1..Vn] object." and "[W1..Wn] damaged object.".

    Each state has its own ``n_ctx`` learnable context vectors, N(0, 0.02²). Deep text prompts overwrite
    positions ``1..deep_length`` at text layers ``2..deep_depth`` (1-based), shared by both prompts.

    Args:
        n_ctx: Learnable context tokens per prompt (AnomalyCLIP: 12).
        normal_suffix: Fixed words after the normal context.
        anomaly_suffix: Fixed words after the anomaly context.
        deep_depth: AnomalyCLIP's ``depth``: deep prompts at 1-based text layers 2..depth; 1 or less disables.
        deep_length: Tokens per deep prompt (AnomalyCLIP: 4).
        round_deep_to_fp16: Round each prompt's copy of the deep prompts to fp16 before use, as the official code
            does (moves maps by up to ~3e-5; gradients are rounded per prompt, as there); ``False`` keeps full
            precision.
        init_std: Standard deviation of the normal initialisation.
    """

    image_conditioned = False  # one pair of prompts for every image: encoded once per evaluation

    def __init__(
        self,
        n_ctx: int = 12,
        normal_suffix: str = "object.",
        anomaly_suffix: str = "damaged object.",
        deep_depth: int = 9,
        deep_length: int = 4,
        round_deep_to_fp16: bool = True,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ConfigError(f"n_ctx={n_ctx} must be at least 1.")
        self.n_ctx = n_ctx
        self.suffixes = (normal_suffix, anomaly_suffix)
        self.deep_depth = deep_depth
        self.deep_length = deep_length
        self.round_deep_to_fp16 = round_deep_to_fp16
        self.init_std = init_std

    @property
    def num_deep_layers(self) -> int:
        """Number of text layers that get deep prompts."""
        return max(self.deep_depth - 1, 0)

    def setup(self, text: TextEncoder) -> None:
        """Tokenise the two templates and create the context (and deep) parameters."""
        if hasattr(self, "context"):
            return
        if self.num_deep_layers >= text.depth:
            raise ConfigError(
                f"deep_depth={self.deep_depth} needs {self.deep_depth} text layers but the text tower has "
                f"{text.depth}. Use deep_depth <= {text.depth}."
            )
        if self.num_deep_layers and self.deep_length > self.n_ctx:
            raise ConfigError(f"deep_length={self.deep_length} must not exceed n_ctx={self.n_ctx}.")
        templates = [" ".join([PLACEHOLDER] * self.n_ctx + [suffix]) for suffix in self.suffixes]
        token_ids = text.tokenize(templates)
        with torch.no_grad():
            self.register_buffer("template_embeddings", text.embed_tokens(token_ids), persistent=False)
        self.register_buffer("eot", text.eot_positions(token_ids), persistent=False)
        self.context = nn.Parameter(torch.randn(2, self.n_ctx, text.width) * self.init_std)
        deep = torch.randn(self.num_deep_layers, self.deep_length, text.width) * self.init_std
        self.deep = nn.Parameter(deep) if self.num_deep_layers else None

    def prompt_embeddings(self) -> Tensor:
        """``[2, L, W]`` template embeddings with the learned contexts spliced in after SOS."""
        templates = self.template_embeddings
        context = self.context.to(templates.dtype)
        return torch.cat([templates[:, :1], context, templates[:, 1 + self.n_ctx :]], dim=1)

    def deep_prompt_hook(self) -> OverwriteDeepPrompts | None:
        """Deep prompt hook for the text tower, or ``None`` without deep prompts."""
        if not self.num_deep_layers:
            return None
        # each prompt's copy is rounded, not the shared tensor: the same values, and the official gradient
        return OverwriteDeepPrompts(
            list(self.deep), first_layer=1, position=1, round_copies_to_fp16=self.round_deep_to_fp16
        )

    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """Encode the two prompts; the result is shared by every image in the batch."""
        embeddings = text(self.prompt_embeddings(), self.eot, deep_prompts=self.deep_prompt_hook())
        return TextFeatures(embeddings=embeddings.unsqueeze(0))
