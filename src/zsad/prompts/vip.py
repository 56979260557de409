"""ViP2-CLIP's visual-perception prompts: image-conditioned class tokens (ICA) and per-layer FGP (methods.md §4).

ICA builds "[ctx_1..ctx_n] good [c_1 c_2 c_3]" and "[ctx_1..ctx_n] damaged [c_1 c_2 c_3]" (no period) with separate
learnable contexts per state and three class tokens shared by both prompts, each ``c_k = c_k^learn + MetaNet_k(g)``
for the L2-normalised global image embedding ``g``. FGP refines the two text embeddings once per feature layer by
multi-head cross-attention to that layer's patch tokens, and the refined pair replaces the ICA pair for that layer.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from zsad.backbones.text import TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.registry import PROMPTS
from zsad.structures import Features, TextFeatures, l2_normalize

PLACEHOLDER = "X"


class FineGrainedPerception(nn.Module):
    """FGP: multi-head cross-attention from the class text embeddings (queries) to one layer's patch tokens.

    The official 1x1 ``Conv1d`` projections over ``[B, D, L]`` are the same map as ``nn.Linear`` over ``[B, L, D]``
    (and both use PyTorch's default kaiming-uniform initialisation with fan-in D), so plain linear layers are used.

    Args:
        dim: Width of the text embeddings and patch tokens (the joint space, 768 for ViT-L/14).
        num_heads: Attention heads (official: 8).
        beta: Multiplier of the attention logits (official ``beta_t = 1``).
        scaled: Official: ``False``, the logits are ``beta * q·k`` with no ``1/sqrt(d)``. ``True`` divides by
            ``sqrt(head_dim)`` as in standard attention (the paper's Eq. 6 writes a ``1/sqrt(C)`` scaling).
    """

    def __init__(self, dim: int, num_heads: int = 8, beta: float = 1.0, scaled: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"fgp_heads={num_heads} must divide the embedding width {dim}.")
        self.num_heads = num_heads
        self.logit_scale = beta / math.sqrt(dim // num_heads) if scaled else beta
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, text: Tensor, patches: Tensor) -> Tensor:
        """Refine ``[B, C, D]`` text embeddings with ``[B, N, D]`` patch tokens; returns L2-normalised ``[B, C, D]``."""
        heads = self.num_heads
        queries = rearrange(self.query(text), "b c (h d) -> b h c d", h=heads)
        keys = rearrange(self.key(patches), "b n (h d) -> b h n d", h=heads)
        values = rearrange(self.value(patches), "b n (h d) -> b h n d", h=heads)
        logits = torch.einsum("bhcd,bhnd->bhcn", queries, keys) * self.logit_scale
        weights = logits.float().softmax(dim=-1).to(values.dtype)  # unscaled logits: keep the softmax in fp32
        attended = torch.einsum("bhcn,bhnd->bhcd", weights, values)
        return l2_normalize(self.output(rearrange(attended, "b h c d -> b c (h d)")))


@PROMPTS.register("vip")
class ViPPrompt(PromptSynthesizer):
    """ViP2-CLIP prompts: image-conditioned class tokens (ICA) plus per-layer cross-attention refinement (FGP).

    All ``2B`` prompts of a batch (normal prompts of every image, then anomaly prompts) go through the text encoder
    in one batched pass, cut to the longest prompt. FGP's keys and values are each layer's L2-normalised dense
    tokens (the q-k patch tokens for ViP2, which uses no V-V path). FGP trains at ``fgp_lr_scale`` times the main
    learning rate through :attr:`lr_scales`.

    Args:
        n_ctx: Learnable context tokens per state (default 9 as the official argparse; the official scripts and the
            reproduction config use 7).
        n_class_tokens: Class tokens shared by both prompts (official: 3).
        normal_word: State word of the normal prompt ("good").
        anomaly_word: State word of the anomaly prompt ("damaged").
        anomaly_template_for_both: Official quirk (``True``): the fixed token embeddings of BOTH prompts (SOS, state
            word, EOT and padding) come from the anomaly sentence, so the normal prompt's state word is in effect
            "damaged" and only the learnable contexts tell the two prompts apart. ``False`` gives each prompt its own
            sentence (the paper's description).
        use_ica: Condition the class tokens on the image through the MetaNets; ``False`` keeps them static (ablation).
        use_fgp: Refine the text per layer with FGP; ``False`` compares every layer with the ICA pair (ablation).
        meta_hidden: Hidden width of each MetaNet; ``None`` is half the image embedding width (384 for ViT-L/14).
        meta_input_bias: Add the official learnable bias (one ``[D]`` vector shared by the MetaNets) to ``g``.
        fgp_heads: FGP attention heads.
        fgp_beta: Multiplier of FGP's attention logits (official ``beta_t = 1``).
        fgp_scaled: ``False`` (official) omits the ``1/sqrt(head_dim)`` attention scaling; ``True`` applies it.
        fgp_lr_scale: FGP's learning rate relative to the main one (official: 0.01).
        init_std: Standard deviation of the normal initialisation of contexts, class tokens and the input bias.
    """

    image_conditioned: bool = True
    """ICA and FGP depend on the image; only with both disabled are the prompts shared (set per instance)."""

    def __init__(
        self,
        n_ctx: int = 9,
        n_class_tokens: int = 3,
        normal_word: str = "good",
        anomaly_word: str = "damaged",
        anomaly_template_for_both: bool = True,
        use_ica: bool = True,
        use_fgp: bool = True,
        meta_hidden: int | None = None,
        meta_input_bias: bool = True,
        fgp_heads: int = 8,
        fgp_beta: float = 1.0,
        fgp_scaled: bool = False,
        fgp_lr_scale: float = 0.01,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        for name, value in (("n_ctx", n_ctx), ("n_class_tokens", n_class_tokens), ("fgp_heads", fgp_heads)):
            if value < 1:
                raise ConfigError(f"{name}={value} must be at least 1.")
        if meta_hidden is not None and meta_hidden < 1:
            raise ConfigError(f"meta_hidden={meta_hidden} must be at least 1 (or null for half the width).")
        if not fgp_lr_scale >= 0:
            raise ConfigError(f"fgp_lr_scale={fgp_lr_scale} must be >= 0.")
        self.n_ctx = n_ctx
        self.n_class_tokens = n_class_tokens
        self.state_words = (normal_word, anomaly_word)
        self.anomaly_template_for_both = anomaly_template_for_both
        self.use_ica = use_ica
        self.use_fgp = use_fgp
        self.meta_hidden = meta_hidden
        self.meta_input_bias = meta_input_bias
        self.fgp_options = {"num_heads": fgp_heads, "beta": fgp_beta, "scaled": fgp_scaled}
        self.lr_scales = {"fgp": fgp_lr_scale}
        self.init_std = init_std
        # Without ICA and FGP the two prompts are the same for every image and can be encoded once.
        self.image_conditioned = use_ica or use_fgp

    def setup(self, text: TextEncoder) -> None:
        """Tokenise the two sentences and create the learnable contexts, class tokens, MetaNets and FGP."""
        if hasattr(self, "context"):
            return
        self._register_templates(text)
        width, embed_dim = text.width, text.embed_dim
        self.context = nn.Parameter(torch.randn(2, self.n_ctx, width) * self.init_std)
        self.class_tokens = nn.Parameter(torch.randn(self.n_class_tokens, width) * self.init_std)
        if self.use_ica:
            hidden = self.meta_hidden or embed_dim // 2
            self.meta_nets = nn.ModuleList(
                nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, width))
                for _ in range(self.n_class_tokens)
            )
            bias = torch.randn(embed_dim) * self.init_std
            self.meta_bias = nn.Parameter(bias) if self.meta_input_bias else None
        if self.use_fgp:
            self.fgp = FineGrainedPerception(embed_dim, **self.fgp_options)

    def sentences(self) -> list[str]:
        """The normal and the anomaly sentence, "X..X <word> X..X", whose placeholders take the learned tokens."""
        placeholders = [PLACEHOLDER] * self.n_ctx, [PLACEHOLDER] * self.n_class_tokens
        return [" ".join([*placeholders[0], word, *placeholders[1]]) for word in self.state_words]

    def _register_templates(self, text: TextEncoder) -> None:
        """Token embeddings of "X..X <word> X..X" per state, each state word's token count and EOT position."""
        sentences = self.sentences()
        token_ids = text.tokenize(sentences)
        eot = text.eot_positions(token_ids)
        word_lengths = [int(e) - 1 - self.n_ctx - self.n_class_tokens for e in eot]
        if min(word_lengths) < 1 or int(eot.max()) >= text.context_length - 1:
            raise ConfigError(
                f"The prompts {sentences} do not fit the text encoder's {text.context_length} tokens or a state "
                f"word is empty; use fewer context tokens or shorter state words."
            )
        with torch.no_grad():
            templates = text.embed_tokens(token_ids)
        if self.anomaly_template_for_both:  # the official quirk: the normal prompt reuses the anomaly sentence
            templates, eot, word_lengths = templates[[1, 1]], eot[[1, 1]], [word_lengths[1]] * 2
        self.register_buffer("template_embeddings", templates, persistent=False)
        self.register_buffer("eot", eot, persistent=False)
        self.word_lengths = tuple(word_lengths)

    def class_token_batch(self, features: Features) -> Tensor:
        """``[B, K, W]`` image-conditioned class tokens (ICA), or the static ``[1, K, W]`` ones without ICA."""
        if not self.use_ica:
            return self.class_tokens.unsqueeze(0)
        conditioning = l2_normalize(features.global_embedding.to(self.class_tokens.dtype))
        if self.meta_bias is not None:
            conditioning = conditioning + self.meta_bias
        offsets = torch.stack([meta_net(conditioning) for meta_net in self.meta_nets], dim=1)
        return self.class_tokens.unsqueeze(0) + offsets

    def prompt_embeddings(self, class_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``[2P, L, W]`` prompts (P normal ones, then P anomaly ones) and their ``[2P]`` EOT positions."""
        count = class_tokens.shape[0]
        templates = self.template_embeddings
        class_tokens = class_tokens.to(templates.dtype)
        prompts = []
        for state, word_length in enumerate(self.word_lengths):
            template = templates[state].expand(count, -1, -1)
            class_start = 1 + self.n_ctx + word_length
            context = self.context[state].to(templates.dtype).expand(count, -1, -1)
            pieces = [template[:, :1], context, template[:, 1 + self.n_ctx : class_start], class_tokens]
            prompts.append(torch.cat([*pieces, template[:, class_start + self.n_class_tokens :]], dim=1))
        return torch.cat(prompts, dim=0), self.eot.repeat_interleave(count)

    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """Encode every prompt of the batch in one text pass, then refine per layer with FGP."""
        prompts, eot = self.prompt_embeddings(self.class_token_batch(features))
        encoded = text(prompts, eot)
        embeddings = rearrange(encoded, "(state p) d -> p state d", state=2)
        per_layer = None
        if self.use_fgp:
            queries = embeddings.expand(features.batch_size, -1, -1)
            per_layer = tuple(
                self.fgp(queries, l2_normalize(tokens.to(queries.dtype))) for tokens in features.dense_tokens
            )
        return TextFeatures(embeddings=embeddings, per_layer=per_layer)
