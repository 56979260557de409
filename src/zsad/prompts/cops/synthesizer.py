"""CoPS prompt synthesis (methods.md §2.2-2.5).

Learnable prompts whose state tokens get visual prototypes (ESTS) and whose class tokens get VAE samples (ICTS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from zsad.backbones.text import OverwriteDeepPrompts, TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.prompts.cops.ests import INIT_STD, StatePrototypes, average_neighbor, check_kernel, prototype_distances
from zsad.prompts.cops.icts import (
    RECONSTRUCTION_MODES,
    ClassTokenVAE,
    ReconstructionMode,
    kl_divergence,
    prior_latents,
    reconstruction_loss,
)
from zsad.prompts.cops.presets import official_preset
from zsad.registry import PROMPTS
from zsad.structures import BY_DATASET, Features, TextFeatures, l2_normalize

PLACEHOLDER = "X"
HEAD_WIDTH = 64
"""Per-head width used when ``num_heads`` is not given: 768 / 64 = 12 heads, CoPS's setting."""


@PROMPTS.register("cops")
class CoPSPrompt(PromptSynthesizer):
    """CoPS: image-conditioned prompts from visual prototypes (ESTS) and VAE-sampled class tokens (ICTS).

    Each of the two prompts ("normal", "anomaly") is ``[SOS] u1..u6 v1..v6 w1 w2 . [EOT]`` with its own 14 learnable
    tokens (6 context u, 6 state v, 2 class w; N(0, 0.02²)) and no class name. Per image:

    - ESTS extracts 6 normal and 6 anomaly prototypes from the neighbour-averaged patch features (last feature
      layer); their stop-gradient copies are added element-wise to the 6 state slots. The prototypes are trained
      only by the center losses, whose per-patch distance maps are returned as the terms ``center_normal`` and
      ``center_anomaly`` ([B, rows, cols]; the ``center`` loss masks them).
    - ICTS decodes a VAE sample ``s`` that is added to both class slots of both prompts: one posterior sample in
      training (terms ``kl`` and ``reconstruction``), ``r_test`` prior samples at test, whose L2-normalised text
      embeddings are averaged and re-normalised.

    Deep text prompts (``deep_layers`` tensors of ``deep_length`` tokens, shared by both prompts) overwrite positions
    1.. before text layers 2..deep_layers+1 (1-based). Prototypes and class samples live in the joint space
    (width D); when D is smaller than the text width W (only toy backbones; every CLIP in use has D == W) they are
    zero-padded to W.

    Official quirks (default = released code; corrected behaviour one flag away):

    - ``cross_inject=True``: the normal prompt's state slots get the *anomaly* prototypes and vice versa, as in
      the released code and checkpoints; ``False`` is the straight pairing of the paper's schematic.
    - ``rec_mode="cross_batch_mse"``: the released reconstruction loss broadcasts over the batch (every sample
      against every image); ``"per_sample_l2"`` is the per-image squared L2.
    - ``round_deep_to_fp16=True``: each prompt's copy of the deep prompts is rounded to fp16 before use (so
      their gradients are rounded per prompt, as in the official code).

    Args:
        n_context: Context tokens u per prompt (6).
        n_prototypes: Prototypes per state, equal to the number of state tokens v (6).
        n_class_tokens: Class tokens w per prompt (2).
        deep_layers: Number of deep text prompt tensors, used at 1-based text layers 2..deep_layers+1 (CoPS: 8);
            0 disables them.
        deep_length: Tokens per deep prompt (4); at most ``n_context``.
        round_deep_to_fp16: Round deep prompts to fp16 (official; moves maps by ~3e-5); ``False`` keeps fp32.
        use_ests: Prototype extractor, state-token injection and center-loss terms (ablation: ``False``).
        use_icts: VAE class tokens and the ``kl``/``reconstruction`` terms (ablation: ``False``).
        cross_inject: Crossed prototype injection (official ``True``) or straight (``False``).
        neighbor_kernel: K of the neighbour averaging of patch features before prototype extraction (official:
            3 when training on MVTec, 5 on VisA). Keep it equal to the SAGA head's.
        test_neighbor_kernel: K at evaluation: ``None`` (default) keeps ``neighbor_kernel``; ``"by_dataset"`` takes
            the official test K of each batch's dataset (3 for VisA, 5 for any other or an unknown dataset,
            :mod:`zsad.prompts.cops.presets`), as the official test script does; a number fixes it.
        num_heads: Attention heads of the prototype extractor; ``None`` means D // 64 (12 at D = 768), at least 1.
        rec_loss: Compute the ``reconstruction`` term (official: on, except when training on VisA).
        rec_mode: ``"cross_batch_mse"`` (official) or ``"per_sample_l2"`` (corrected).
        r_test: Prior samples R averaged at test (10).
        test_seed: Base seed of the test-time prior samples. Each image draws from a CPU generator seeded with a
            hash of this seed and its fp16-rounded global feature, so results are reproducible and independent of
            batch composition and order. ``None`` uses the global RNG like the official code.
        init_std: Standard deviation of the context, deep-prompt and query initialisation.
    """

    def __init__(
        self,
        n_context: int = 6,
        n_prototypes: int = 6,
        n_class_tokens: int = 2,
        deep_layers: int = 8,
        deep_length: int = 4,
        round_deep_to_fp16: bool = True,
        use_ests: bool = True,
        use_icts: bool = True,
        cross_inject: bool = True,
        neighbor_kernel: int = 3,
        test_neighbor_kernel: int | str | None = None,
        num_heads: int | None = None,
        rec_loss: bool = True,
        rec_mode: ReconstructionMode = "cross_batch_mse",
        r_test: int = 10,
        test_seed: int | None = 0,
        init_std: float = INIT_STD,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_context", n_context),
            ("n_prototypes", n_prototypes),
            ("n_class_tokens", n_class_tokens),
        ):
            if value < 1:
                raise ConfigError(f"{name}={value} must be at least 1.")
        if deep_layers < 0 or (deep_layers and not 1 <= deep_length <= n_context):
            raise ConfigError(
                f"deep_layers={deep_layers} must be >= 0 and deep_length={deep_length} within 1..n_context={n_context} "
                "(deep prompts overwrite context tokens only)."
            )
        if rec_mode not in RECONSTRUCTION_MODES:
            raise ConfigError(f"rec_mode='{rec_mode}' is unknown; use one of {list(RECONSTRUCTION_MODES)}.")
        if r_test < 1:
            raise ConfigError(f"r_test={r_test} must be at least 1.")
        if num_heads is not None and num_heads < 1:
            raise ConfigError(f"num_heads={num_heads} must be at least 1 (or null for D // 64).")
        self.slots = (n_context, n_prototypes, n_class_tokens)
        self.deep_layers, self.deep_length, self.round_deep_to_fp16 = deep_layers, deep_length, round_deep_to_fp16
        self.use_ests, self.use_icts, self.cross_inject = use_ests, use_icts, cross_inject
        self.neighbor_kernel = check_kernel(neighbor_kernel)
        if test_neighbor_kernel not in (None, BY_DATASET):
            check_kernel(test_neighbor_kernel, "test_neighbor_kernel", BY_DATASET)  # type: ignore[arg-type]
        self.test_neighbor_kernel = test_neighbor_kernel
        self.num_heads = num_heads
        self.rec_loss, self.rec_mode = rec_loss, rec_mode
        self.r_test, self.test_seed = r_test, test_seed
        self.init_std = init_std
        self.image_conditioned = use_ests or use_icts

    @property
    def num_tokens(self) -> int:
        """Learnable tokens per prompt (14 = 6 context + 6 state + 2 class)."""
        return sum(self.slots)

    def setup(self, text: TextEncoder) -> None:
        """Tokenise the template and create contexts, deep prompts, the prototype extractor and the VAE."""
        if hasattr(self, "context"):
            return
        dim, width = text.embed_dim, text.width
        if self.deep_layers >= text.depth:
            raise ConfigError(
                f"deep_layers={self.deep_layers} needs text layers 2..{self.deep_layers + 1} but the text tower has "
                f"{text.depth}. Use deep_layers <= {text.depth - 1}."
            )
        if dim > width:
            raise ConfigError(
                f"CoPS adds {dim}-d prototypes and class samples to {width}-wide text tokens; the joint dimension "
                "must not exceed the text width."
            )
        self.pad_width = width - dim
        token_ids = text.tokenize([" ".join([PLACEHOLDER] * self.num_tokens) + "."])
        with torch.no_grad():
            self.register_buffer("template_embeddings", text.embed_tokens(token_ids), persistent=False)
        self.register_buffer("eot", text.eot_positions(token_ids), persistent=False)
        self.context = nn.Parameter(torch.randn(2, self.num_tokens, width) * self.init_std)  # [normal, anomaly]
        deep = torch.randn(self.deep_layers, self.deep_length, width) * self.init_std
        self.deep = nn.Parameter(deep) if self.deep_layers else None
        if self.use_ests:
            self.ests = StatePrototypes(dim, self.slots[1], self.resolve_heads(dim), self.init_std)
        if self.use_icts:
            self.vae = ClassTokenVAE(dim)

    def resolve_heads(self, dim: int) -> int:
        """Attention heads of the extractor for width ``dim``."""
        heads = self.num_heads or max(1, dim // HEAD_WIDTH)
        if dim % heads:
            raise ConfigError(f"num_heads={heads} does not divide the feature width {dim}.")
        return heads

    @property
    def reads_dataset(self) -> bool:
        """Whether K follows the batch's dataset: with ``test_neighbor_kernel: by_dataset``, at evaluation."""
        return self.test_neighbor_kernel == BY_DATASET and not self.training

    def active_kernel(self, dataset: str | None = None) -> int:
        """K of the neighbour averaging in the current mode, for a batch of ``dataset`` (read with ``by_dataset``)."""
        if self.training or self.test_neighbor_kernel is None:
            return self.neighbor_kernel
        if self.test_neighbor_kernel == BY_DATASET:
            return int(official_preset(dataset)["neighbor_kernel"])
        return int(self.test_neighbor_kernel)

    # ---------------------------------------------------------------- forward
    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """Per-image (normal, anomaly) embeddings ``[B, 2, D]`` (``[1, 2, D]`` with both modules ablated)."""
        kernel = self.active_kernel(features.dataset if self.reads_dataset else None)
        tokens = average_neighbor(features.dense_tokens[-1], features.grid, kernel)
        tokens = tokens.to(self.context.dtype)
        terms: dict[str, Tensor] = {}
        prototypes = state_offsets = class_offsets = None
        if self.use_ests:
            prototypes = self.ests(tokens)  # [B, 2, M, D]
            if self.training:
                terms.update(self.center_terms(tokens, prototypes, features.grid))
            injected = prototypes.detach()  # stop-gradient: prototypes learn only from the center losses
            state_offsets = self.to_width(injected.flip(1) if self.cross_inject else injected)
        if self.use_icts:
            samples, vae_terms = self.class_samples(features.global_embedding.to(self.context.dtype))
            class_offsets = self.to_width(samples)
            terms.update(vae_terms)
        embeddings = self.encode(text, state_offsets, class_offsets)
        flat_prototypes = prototypes.detach().flatten(1, 2) if prototypes is not None else None
        return TextFeatures(embeddings=embeddings, prototypes=flat_prototypes, terms=terms)

    def center_terms(self, tokens: Tensor, prototypes: Tensor, grid: tuple[int, int]) -> dict[str, Tensor]:
        """Per-patch distances to the nearest normal / anomaly prototype, ``[B, rows, cols]`` each."""
        return {
            name: prototype_distances(tokens, prototypes[:, state]).unflatten(1, grid)
            for state, name in enumerate(("center_normal", "center_anomaly"))
        }

    def class_samples(self, global_embedding: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Decoded class-token offsets ``[B, R, D]`` (R = 1 in training) and the VAE's loss terms."""
        if self.training:
            decoded, mean, logvar = self.vae.posterior_sample(global_embedding)
            terms = {"kl": kl_divergence(mean, logvar)}
            if self.rec_loss:
                terms["reconstruction"] = reconstruction_loss(decoded, global_embedding, self.rec_mode)
            return decoded[:, None], terms
        latents = prior_latents(global_embedding, self.r_test, self.vae.latent_dim, self.test_seed)
        return self.vae.decode(latents.to(global_embedding.dtype)), {}

    def to_width(self, offsets: Tensor) -> Tensor:
        """Zero-pad joint-space vectors to the text width (a no-op when D == W, as for every real CLIP)."""
        return F.pad(offsets, (0, self.pad_width)) if self.pad_width else offsets

    def contexts(self, state_offsets: Tensor | None = None, class_offsets: Tensor | None = None) -> Tensor:
        """Learnable tokens with the injections: ``[B or 1, R or 1, 2, 14, W]``.

        Args:
            state_offsets: ``[B, 2, M, W]`` added to the state slots (index 0 goes to the normal prompt).
            class_offsets: ``[B, R, W]`` added to both class slots of both prompts.
        """
        context, state, classes = self.context[None, None].split(list(self.slots), dim=-2)
        if state_offsets is not None:
            state = state + state_offsets[:, None].to(state.dtype)
        if class_offsets is not None:
            classes = classes + class_offsets[:, :, None, None, :].to(classes.dtype)
        parts = (context, state, classes)
        lead = torch.broadcast_shapes(*(part.shape[:3] for part in parts))
        return torch.cat([part.expand(*lead, -1, -1) for part in parts], dim=-2)

    def deep_prompt_hook(self) -> OverwriteDeepPrompts | None:
        """Deep prompts at 0-based text layers 1..deep_layers, positions 1..deep_length."""
        if self.deep is None:
            return None
        # each prompt's copy is rounded, not the shared tensor: the same values, and the official gradient
        return OverwriteDeepPrompts(
            list(self.deep), first_layer=1, position=1, round_copies_to_fp16=self.round_deep_to_fp16
        )

    def encode(self, text: TextEncoder, state_offsets: Tensor | None, class_offsets: Tensor | None) -> Tensor:
        """Encode every (image, sample) prompt pair; average the normalised embeddings over samples."""
        contexts = self.contexts(state_offsets, class_offsets)
        batch, samples = contexts.shape[:2]
        flat = contexts.flatten(0, 2)  # [B * R * 2, 14, W]
        template = self.template_embeddings.to(flat.dtype)
        prompts = torch.cat(
            [
                template[:, :1].expand(flat.shape[0], -1, -1),
                flat,
                template[:, 1 + self.num_tokens :].expand(flat.shape[0], -1, -1),
            ],
            dim=1,
        )
        eot = self.eot.expand(flat.shape[0])
        embeddings = text(prompts, eot, deep_prompts=self.deep_prompt_hook()).unflatten(0, (batch, samples, 2))
        return l2_normalize(embeddings.mean(dim=1))
