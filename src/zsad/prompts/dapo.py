"""DAPO: defect-aware hybrid prompts with progressive deep text and visual tokens (methods.md §9).

Prompts are "hybrid": learnable context tokens followed by fixed words. One normal prompt
"[V1..V5] flawless object" and one abnormal prompt "[W1..W5] <defect> anomaly object" per defect word, the
abnormal context shared by every word, so the classes are ``("normal", *words)``. ``prompt_count`` independent
context sets are encoded and their embeddings averaged.

"Progressive" deep tokens: ``deep_length`` tokens are inserted after SOS (text) or CLS (vision) before the first
block; before every later block that has its own learned tokens, the slot becomes
``blend * previous output + (1 - blend) * learned`` (:class:`~zsad.backbones.text.InsertDeepPrompts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zsad.backbones.base import Backbone
from zsad.backbones.text import DeepPromptHook, InsertDeepPrompts, TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.registry import PROMPTS
from zsad.structures import Features, TextFeatures, l2_normalize

PLACEHOLDER = "X"

MVTEC_DEFECT_WORDS: tuple[str, ...] = (
    "bent",
    "broken",
    "discoloration",
    "compound",
    "contamination",
    "crack",
    "cut",
    "fabric",
    "faulty imprint",
    "gluing",
    "hole",
    "missing",
    "puncture",
    "rough",
    "scratch",
    "compressed",
    "threading",
    "liquid",
    "misaligned",
    "wear",
)
"""DAPO's training vocabulary (MVTec AD), in the official order (methods.md §9)."""

DEFECT_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "mvtec": MVTEC_DEFECT_WORDS,
    # The two lists below are NOT DAPO's test lists (methods.md does not give them): they are the defect folder
    # names of each benchmark, written as words. Datasets that name no defect types (VisA's 1cls split, BTAD,
    # the medical sets) are best scored with the "mvtec" words.
    "mpdd": ("hole", "scratches", "flattening", "mismatch", "defective painting", "rust"),
    "mvtec3d": ("bent", "color", "combined", "contamination", "crack", "cut", "hole", "open", "thread"),
}
"""Named defect vocabularies; ``DAPOPrompt(vocabulary="mpdd")`` picks one, a list of words gives a custom one."""


def resolve_vocabulary(vocabulary: str | Sequence[str]) -> tuple[str, ...]:
    """The defect words of a preset name or an explicit list.

    Raises:
        ConfigError: For an unknown preset, an empty list, duplicates or the reserved word ``"normal"``.
    """
    if isinstance(vocabulary, str):
        if vocabulary not in DEFECT_VOCABULARIES:
            raise ConfigError(
                f"Unknown defect vocabulary '{vocabulary}'. Presets: {', '.join(sorted(DEFECT_VOCABULARIES))}; "
                f"or give a list of defect words."
            )
        return DEFECT_VOCABULARIES[vocabulary]
    words = tuple(" ".join(str(w).split()) for w in vocabulary)
    if not words or any(not w for w in words):
        raise ConfigError(f"vocabulary={list(vocabulary)} must be a non-empty list of non-empty defect words.")
    if len(set(words)) != len(words) or "normal" in words:
        raise ConfigError(f"vocabulary={list(words)} must not repeat a word or contain 'normal' (class 0).")
    return words


class WidthCheckedInsertDeepPrompts(InsertDeepPrompts):
    """:class:`InsertDeepPrompts` that refuses, with a clear message, tokens of the wrong width (visual tokens)."""

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        """Check the width at the first block, then insert or blend as usual."""
        learned = self.prompts[0].shape[-1]
        if layer == 0 and tokens.shape[-1] != learned:
            raise ConfigError(
                f"DAPO's visual tokens have width {learned} but the image tower has width {tokens.shape[-1]}. Set "
                f"the prompt's vision_width to {tokens.shape[-1]} (ViT-L/14: 1024; tiny-random: 64, with the "
                f"multiclass head's embed_dim 32)."
            )
        return super().before_layer(layer, tokens)


class PoolAtOriginalEOT:
    """Wraps a deep-prompt hook but reports no inserted tokens: EOT pooling then ignores the insertion.

    This reproduces DAPO's pooling at the un-shifted EOT index, which after inserting ``n`` tokens reads the
    token ``n`` positions before the real EOT.
    """

    inserted_tokens = 0

    def __init__(self, hook: DeepPromptHook) -> None:
        self.hook = hook

    def before_layer(self, layer: int, tokens: Tensor) -> Tensor:
        """Delegate to the wrapped hook."""
        return self.hook.before_layer(layer, tokens)


@PROMPTS.register("dapo")
class DAPOPrompt(PromptSynthesizer):
    """DAPO defect-aware hybrid prompts: normal + one class per defect word, deep text and visual tokens.

    Learned parameters (initialised from N(mean, std²) of the token-embedding table, scalar mean and std):
    ``normal_context`` / ``anomaly_context`` ``[prompt_count, n_ctx, W]``, ``text_deep`` ``[text_deep_layers,
    deep_length, W]`` and ``vision_deep`` ``[vision_deep_layers, deep_length, vision_width]``. None depends on the
    vocabulary, so a trained model can be tested with another dataset's words.

    Official quirks, each a flag (the defaults reproduce the official code):

    - ``text_causal_mask=False``: the learned prompts run through the text transformer without CLIP's causal
      mask, so every token (padding included) attends to every other. ``True`` is stock CLIP.
    - ``pool_at_original_eot=True``: the inserted deep text tokens are never removed, yet pooling uses the EOT
      index of the un-inserted prompt, i.e. the token ``deep_length`` positions before the real EOT. ``False``
      pools at the real (shifted) EOT.

    Args:
        vocabulary: Defect words, or a preset name of :data:`DEFECT_VOCABULARIES` (default ``"mvtec"``: §9's 20).
        prompt_count: Independent learnable context sets whose embeddings are averaged (DAPO: 10).
        n_ctx: Learnable context tokens per prompt (DAPO: 5).
        normal_template: Fixed words after the normal context.
        anomaly_template: Fixed words after the abnormal context; ``{}`` is replaced by the defect word.
        text_deep_layers: Text blocks with their own deep tokens, from the first (DAPO: 12); 0 disables them.
        vision_deep_layers: Vision blocks with their own deep tokens, from the first (DAPO: 24); 0 disables them.
            Keep it at most the image tower's depth: tokens for blocks that do not exist would never train.
        deep_length: Deep tokens per block, text and vision (DAPO: 4).
        blend: Weight of the previous block's output in the deep-token slot (DAPO: 0.01).
        vision_width: Width of the image tower; ``None`` (default) takes it from the backbone. A configured value
            that does not match raises :class:`~zsad.errors.ConfigError` at the first forward.
        text_causal_mask: See the quirks above (official: ``False``).
        pool_at_original_eot: See the quirks above (official: ``True``).
        text_checkpointing: Recompute the text blocks in the backward pass instead of storing their activations.
            The 210 full-length prompts of the preset keep about 10 GB of text activations per step at
            ViT-L/14 size; this trades them for one more text forward. The values and gradients are the same.
    """

    image_conditioned = False  # visual tokens change the image features, not the text: encoded once per evaluation

    def __init__(
        self,
        vocabulary: str | list[str] = "mvtec",
        prompt_count: int = 10,
        n_ctx: int = 5,
        normal_template: str = "flawless object",
        anomaly_template: str = "{} anomaly object",
        text_deep_layers: int = 12,
        vision_deep_layers: int = 24,
        deep_length: int = 4,
        blend: float = 0.01,
        vision_width: int | None = None,
        text_causal_mask: bool = False,
        pool_at_original_eot: bool = True,
        text_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("prompt_count", prompt_count, 1),
            ("n_ctx", n_ctx, 1),
            ("deep_length", deep_length, 1),
            ("vision_width", 1 if vision_width is None else vision_width, 1),
            ("text_deep_layers", text_deep_layers, 0),
            ("vision_deep_layers", vision_deep_layers, 0),
        ):
            if value < low:
                raise ConfigError(f"{name}={value} must be at least {low}.")
        if "{}" not in anomaly_template:
            raise ConfigError(f"anomaly_template='{anomaly_template}' needs a '{{}}' where the defect word goes.")
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"blend={blend} must lie in [0, 1].")
        self.words = resolve_vocabulary(vocabulary)
        self.prompt_count = prompt_count
        self.n_ctx = n_ctx
        self.templates = (normal_template, *(anomaly_template.format(word) for word in self.words))
        self.text_deep_layers = text_deep_layers
        self.vision_deep_layers = vision_deep_layers
        self.deep_length = deep_length
        self.blend = blend
        self.vision_width = vision_width
        self.text_causal_mask = text_causal_mask
        self.pool_at_original_eot = pool_at_original_eot
        self.text_checkpointing = text_checkpointing

    @property
    def class_names(self) -> tuple[str, ...]:
        """``("normal", *defect words)``: class 0 is normal, class ``1 + i`` is the i-th defect word."""
        return ("normal", *self.words)

    def setup_backbone(self, backbone: Backbone) -> None:
        """Take the image tower's width for the visual tokens, unless configured."""
        if self.vision_width is None:
            self.vision_width = backbone.vision_width

    def setup(self, text: TextEncoder) -> None:
        """Tokenise the templates and create the learnable tokens."""
        if hasattr(self, "normal_context"):
            return
        if self.text_deep_layers > text.depth:
            raise ConfigError(
                f"text_deep_layers={self.text_deep_layers} exceeds the {text.depth} blocks of the text tower."
            )
        prefix = " ".join([PLACEHOLDER] * self.n_ctx)
        token_ids = text.tokenize([f"{prefix} {template}" for template in self.templates])
        with torch.no_grad():
            self.register_buffer("template_embeddings", text.embed_tokens(token_ids), persistent=False)
            table = text.token_embedding.weight
            mean, std = float(table.mean()), float(table.std())
        self.register_buffer("eot", text.eot_positions(token_ids), persistent=False)

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) * std + mean)

        self.normal_context = init(self.prompt_count, self.n_ctx, text.width)
        self.anomaly_context = init(self.prompt_count, self.n_ctx, text.width)
        self.text_deep = init(self.text_deep_layers, self.deep_length, text.width) if self.text_deep_layers else None
        has_vision = self.vision_deep_layers > 0
        if has_vision and self.vision_width is None:
            raise ConfigError("vision_width is unknown: set it, or build the prompt inside a ZSADModule.")
        self.vision_deep = init(self.vision_deep_layers, self.deep_length, self.vision_width) if has_vision else None

    def prompt_embeddings(self) -> Tensor:
        """``[prompt_count * C, L, W]`` template embeddings with each set's contexts spliced in after SOS.

        Rows are set-major: row ``s * C + c`` is class ``c`` of context set ``s``.
        """
        templates = self.template_embeddings
        sets, classes = self.prompt_count, templates.shape[0]
        anomaly = self.anomaly_context.unsqueeze(1).expand(-1, classes - 1, -1, -1)
        contexts = torch.cat([self.normal_context.unsqueeze(1), anomaly], dim=1).to(templates.dtype)
        templates = templates.unsqueeze(0).expand(sets, -1, -1, -1)
        spliced = torch.cat([templates[:, :, :1], contexts, templates[:, :, 1 + self.n_ctx :]], dim=2)
        return spliced.flatten(0, 1)

    def text_prompt_hook(self) -> DeepPromptHook | None:
        """The progressive deep text tokens (with the pooling quirk applied), or ``None`` without them."""
        if self.text_deep is None:
            return None
        hook = InsertDeepPrompts(list(self.text_deep), position=1, blend=self.blend)
        return PoolAtOriginalEOT(hook) if self.pool_at_original_eot else hook

    def vision_prompts(self) -> DeepPromptHook | None:
        """The progressive visual tokens, inserted after CLS; the backbone drops them from the patch tokens."""
        if self.vision_deep is None:
            return None
        return WidthCheckedInsertDeepPrompts(list(self.vision_deep), position=1, blend=self.blend)

    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """Encode every (set, class) prompt, average each class over the sets: ``[1, C, D]``, shared by the batch.

        Each prompt embedding is L2-normalised before the average and the average is normalised again.
        """
        encoded = text(
            self.prompt_embeddings(),
            self.eot.repeat(self.prompt_count),
            deep_prompts=self.text_prompt_hook(),
            causal=self.text_causal_mask,
            checkpoint=self.text_checkpointing,
        )
        per_set = encoded.view(self.prompt_count, len(self.templates), -1)
        return TextFeatures(embeddings=l2_normalize(per_set.mean(dim=0)).unsqueeze(0), class_names=self.class_names)
