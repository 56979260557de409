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

import logging
import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from zsad.backbones.base import Backbone
from zsad.backbones.text import DeepPromptHook, InsertDeepPrompts, TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.registry import PROMPTS
from zsad.structures import BY_DATASET, Features, TextFeatures, l2_normalize

PLACEHOLDER = "X"

logger = logging.getLogger(__name__)

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
    # The official test script's own word list per dataset (methods.md §9), in its order. Its MVTec list is not
    # the training list: it names the MVTec folder words instead of their synonyms.
    "mvtec_test": (
        "bent",
        "broken",
        "color",
        "combined",
        "contamination",
        "crack",
        "cut",
        "fabric",
        "faulty imprint",
        "glue",
        "hole",
        "missing",
        "poke",
        "rough",
        "scratch",
        "squeeze",
        "thread",
        "liquid",
        "misplaced",
        "damaged",
    ),
    "visa": (
        "damage",
        "scratch",
        "breakage",
        "burnt",
        "irregular wick",
        "stuck",
        "crack",
        "wrong place",
        "partical",  # sic: the official spelling, which the official tokenizer sees
        "bubble",
        "melded",
        "hole",
        "melt",
        "bent",
        "spot",
        "extra",
        "chip",
        "missing",
    ),
    "mpdd": ("hole", "scratch", "bent", "rust", "flattening", "mismatch", "defective painting"),
    "mvtec_loco": ("misplaced", "damaged"),
    "mad_real": ("stains", "missing"),
    "mad_sim": ("missing", "stains", "burrs"),
    "realiad": ("hole", "deformed", "scratch", "damage", "missing parts", "contamination"),
    # Not DAPO's: zsad's own lists, the defect folder names of each benchmark written as words.
    "mpdd_folders": ("hole", "scratches", "flattening", "mismatch", "defective painting", "rust"),
    "mvtec3d": ("bent", "color", "combined", "contamination", "crack", "cut", "hole", "open", "thread"),
}
"""Named defect vocabularies; ``DAPOPrompt(vocabulary="mpdd")`` picks one, a list of words gives a custom one.

``mvtec`` is the training list; ``mvtec_test``, ``visa``, ``mpdd``, ``mvtec_loco``, ``mad_real``, ``mad_sim`` and
``realiad`` are the lists the official test script uses for each dataset; ``mpdd_folders`` and ``mvtec3d`` are
zsad's (folder names as words). Datasets without a list (BTAD, KSDD, the medical sets) are best scored with the
training words.
"""

DATASET_TEST_VOCABULARIES: dict[str, str] = {
    "mvtec": "mvtec_test",
    "visa": "visa",
    "mpdd": "mpdd",
    "realiad": "realiad",
    # benchmarks zsad does not ship, under the names a user's own registered dataset would carry
    "mvtec_loco": "mvtec_loco",
    "mad_real": "mad_real",
    "mad_sim": "mad_sim",
}
"""The vocabulary ``test_vocabulary="by_dataset"`` takes for each dataset name (zsad's registered names).

The official test script has a list for these datasets only; for any other it scores the words given on its
command line. ``by_dataset`` scores every other dataset (BTAD, KSDD, DAGM, DTD, the medical sets, folders,
synthetic data) with the training words, and says so once per dataset in the log.
"""

ContextAverage = Literal["projected", "normalized"]
"""How the ``prompt_count`` embeddings of a class combine: the mean of the projected embeddings, then normalised
(``"projected"``, the official code), or the mean of the unit embeddings, then normalised (``"normalized"``)."""
CONTEXT_AVERAGES: tuple[str, ...] = get_args(ContextAverage)


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

    Learned parameters: ``normal_context`` / ``anomaly_context`` ``[prompt_count, n_ctx, W]`` and ``text_deep``
    ``[text_deep_layers, deep_length, W]``, drawn as the official code draws them, from N(mean, std²) with the
    per-dimension mean and std of the token-embedding table; ``vision_deep`` ``[vision_deep_layers, deep_length,
    vision_width]``, uniform in ``±sqrt(6 / (3 · patch² + vision_width))``. None depends on the vocabulary, so a
    trained model can be tested with another dataset's words.

    Official behaviour, each a flag (the defaults reproduce the official code):

    - ``text_causal_mask=False``: the learned prompts run through the text transformer without CLIP's causal
      mask, so every token (padding included) attends to every other. ``True`` is stock CLIP.
    - ``pool_at_original_eot=True``: the inserted deep text tokens are never removed, yet pooling uses the EOT
      index of the un-inserted prompt, i.e. the token ``deep_length`` positions before the real EOT. ``False``
      pools at the real (shifted) EOT.
    - ``context_average="projected"``: the ``prompt_count`` projected embeddings of a class are averaged as they
      are, then normalised. ``"normalized"`` normalises each before the average, so that every set weighs the same.
    - ``test_vocabulary="by_dataset"``: the official test script scores each dataset with its own word list
      (:data:`DATASET_TEST_VOCABULARIES`), not the training one; the words switch with the mode (``train()`` /
      ``eval()``) and, in eval mode, with the dataset of the batch (``Features.datasets``).

    Args:
        vocabulary: Defect words while training, or a preset name of :data:`DEFECT_VOCABULARIES` (default
            ``"mvtec"``: §9's 20).
        test_vocabulary: Defect words in eval mode (validation, test, inference): a list, a preset name of
            :data:`DEFECT_VOCABULARIES`, ``"by_dataset"`` (the official test script's list of each batch's dataset,
            as the ``dapo`` preset sets it; the training words for a dataset it has no list for, or when the
            dataset is unknown) or ``None`` (default: ``vocabulary``).
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
        vision_patch_size: Patch side of the image tower, for the visual tokens' initial range; ``None`` (default)
            takes it from the backbone.
        text_causal_mask: See above (official: ``False``).
        pool_at_original_eot: See above (official: ``True``).
        context_average: See above (official: ``"projected"``).
        text_checkpointing: Recompute the text blocks in the backward pass instead of storing their activations.
            The 210 full-length prompts of the preset keep about 10 GB of text activations per step at
            ViT-L/14 size; this trades them for one more text forward. The values and gradients are the same.
    """

    image_conditioned = False  # visual tokens change the image features, not the text: encoded once per evaluation

    def __init__(
        self,
        vocabulary: str | list[str] = "mvtec",
        test_vocabulary: str | list[str] | None = None,
        prompt_count: int = 10,
        n_ctx: int = 5,
        normal_template: str = "flawless object",
        anomaly_template: str = "{} anomaly object",
        text_deep_layers: int = 12,
        vision_deep_layers: int = 24,
        deep_length: int = 4,
        blend: float = 0.01,
        vision_width: int | None = None,
        vision_patch_size: int | None = None,
        text_causal_mask: bool = False,
        pool_at_original_eot: bool = True,
        context_average: ContextAverage = "projected",
        text_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("prompt_count", prompt_count, 1),
            ("n_ctx", n_ctx, 1),
            ("deep_length", deep_length, 1),
            ("vision_width", 1 if vision_width is None else vision_width, 1),
            ("vision_patch_size", 1 if vision_patch_size is None else vision_patch_size, 1),
            ("text_deep_layers", text_deep_layers, 0),
            ("vision_deep_layers", vision_deep_layers, 0),
        ):
            if value < low:
                raise ConfigError(f"{name}={value} must be at least {low}.")
        if "{}" not in anomaly_template:
            raise ConfigError(f"anomaly_template='{anomaly_template}' needs a '{{}}' where the defect word goes.")
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"blend={blend} must lie in [0, 1].")
        if context_average not in CONTEXT_AVERAGES:
            raise ConfigError(f"context_average='{context_average}' is unknown; use one of {list(CONTEXT_AVERAGES)}.")
        self.words = resolve_vocabulary(vocabulary)
        self.words_by_dataset = test_vocabulary == BY_DATASET
        fixed_test_words = test_vocabulary is None or self.words_by_dataset
        # with by_dataset, the test words of a batch whose dataset is unknown (or has no official list)
        self.test_words = self.words if fixed_test_words else resolve_vocabulary(test_vocabulary)
        self.prompt_count = prompt_count
        self.n_ctx = n_ctx
        self.normal_template = normal_template
        self.anomaly_template = anomaly_template
        self.text_deep_layers = text_deep_layers
        self.vision_deep_layers = vision_deep_layers
        self.deep_length = deep_length
        self.blend = blend
        self.vision_width = vision_width
        self.vision_patch_size = vision_patch_size
        self.text_causal_mask = text_causal_mask
        self.pool_at_original_eot = pool_at_original_eot
        self.context_average = context_average
        self.text_checkpointing = text_checkpointing

    @property
    def reads_dataset(self) -> bool:
        """Whether the words depend on the batch's dataset: with ``test_vocabulary="by_dataset"`` in eval mode."""
        return self.words_by_dataset and not self.training

    def active_words(self, dataset: str | None = None) -> tuple[str, ...]:
        """The defect words of the current mode: ``vocabulary`` while training, ``test_vocabulary`` in eval mode.

        Args:
            dataset: The batch's dataset, read with ``test_vocabulary="by_dataset"`` (``None``: unknown).
        """
        if self.training:
            return self.words
        if not self.words_by_dataset or dataset is None:
            return self.test_words
        preset = DATASET_TEST_VOCABULARIES.get(dataset)
        self._log_words_of(dataset, preset)
        return self.words if preset is None else DEFECT_VOCABULARIES[preset]

    def _log_words_of(self, dataset: str, preset: str | None) -> None:
        """Say once per dataset which words score it (a dataset without an official list takes the training ones)."""
        logged = self.__dict__.setdefault("_logged_datasets", set())
        if dataset in logged:
            return
        logged.add(dataset)
        if preset is None:
            logger.warning(
                "DAPO: the official test script has no word list for dataset '%s'; scoring it with the training "
                "words (%d). Set model.prompt.init_args.test_vocabulary to a list to score it with others.",
                dataset,
                len(self.words),
            )
        else:
            logger.info("DAPO: scoring dataset '%s' with the official test words '%s'.", dataset, preset)

    @property
    def class_names(self) -> tuple[str, ...]:
        """``("normal", *active words)``: class 0 is normal, class ``1 + i`` is the i-th defect word.

        With ``test_vocabulary="by_dataset"`` in eval mode these are the words of a batch of unknown dataset;
        the :class:`~zsad.structures.TextFeatures` of each batch name its own classes.
        """
        return ("normal", *self.active_words())

    def templates(self, words: Sequence[str]) -> tuple[str, ...]:
        """The fixed words of each class's prompt: the normal template, then one anomaly template per word."""
        return (self.normal_template, *(self.anomaly_template.format(word) for word in words))

    def setup_backbone(self, backbone: Backbone) -> None:
        """Take the image tower's width and patch size for the visual tokens, unless configured."""
        if self.vision_width is None:
            self.vision_width = backbone.vision_width
        if self.vision_patch_size is None:
            patch = getattr(backbone, "patch_size", None)
            self.vision_patch_size = int(patch[0]) if patch is not None else None

    def setup(self, text: TextEncoder) -> None:
        """Tokenise the templates of both vocabularies and create the learnable tokens."""
        if hasattr(self, "normal_context"):
            return
        if self.text_deep_layers > text.depth:
            raise ConfigError(
                f"text_deep_layers={self.text_deep_layers} exceeds the {text.depth} blocks of the text tower."
            )
        for prefix, words in (("", self.words), ("test_", self.test_words)):
            embeddings, eot = self._tokenize(text, words)
            self.register_buffer(f"{prefix}template_embeddings", embeddings, persistent=False)
            self.register_buffer(f"{prefix}eot", eot, persistent=False)
        with torch.no_grad():
            table = text.token_embedding.weight
            mean, std = table.mean(dim=0), table.std(dim=0)  # per dimension, as the official code draws them

        def from_table(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, device=table.device) * std + mean)

        self.normal_context = from_table(self.prompt_count, self.n_ctx, text.width)
        self.anomaly_context = from_table(self.prompt_count, self.n_ctx, text.width)
        deep = self.text_deep_layers
        self.text_deep = from_table(deep, self.deep_length, text.width) if deep else None
        self.vision_deep = self._visual_tokens(table.device) if self.vision_deep_layers else None

    def _tokenize(self, text: TextEncoder, words: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token embeddings ``[C, L, W]`` and EOT positions ``[C]`` of the templates, ``n_ctx`` placeholders first."""
        prefix = " ".join([PLACEHOLDER] * self.n_ctx)
        token_ids = text.tokenize([f"{prefix} {template}" for template in self.templates(words)])
        with torch.no_grad():
            return text.embed_tokens(token_ids), text.eot_positions(token_ids)

    def _visual_tokens(self, device: torch.device) -> nn.Parameter:
        """``[vision_deep_layers, deep_length, vision_width]`` tokens, uniform as the official code draws them."""
        if self.vision_width is None or self.vision_patch_size is None:
            raise ConfigError(
                "vision_width or vision_patch_size is unknown: set both, or build the prompt inside a ZSADModule."
            )
        bound = math.sqrt(6.0 / (3 * self.vision_patch_size**2 + self.vision_width))
        shape = (self.vision_deep_layers, self.deep_length, self.vision_width)
        return nn.Parameter(torch.empty(shape, device=device).uniform_(-bound, bound))

    def active_templates(
        self, words: Sequence[str] | None = None, text: TextEncoder | None = None
    ) -> tuple[Tensor, Tensor]:
        """Template embeddings ``[C, L, W]`` and EOT positions ``[C]`` of the current mode's vocabulary.

        Args:
            words: The words to embed; ``None`` takes the mode's fixed vocabulary. Words other than the training
                and test vocabularies (a dataset's list, ``by_dataset``) are tokenised now, with ``text``.
            text: The text encoder, needed only for such other words.
        """
        fixed_words = self.words if self.training else self.test_words
        if words is None or tuple(words) == fixed_words:
            if self.training:
                return self.template_embeddings, self.eot
            return self.test_template_embeddings, self.test_eot
        if text is None:
            raise ConfigError("DAPOPrompt.active_templates needs the text encoder to embed other words.")
        return self._tokenize(text, words)

    def prompt_embeddings(self, templates: Tensor | None = None) -> Tensor:
        """``[prompt_count * C, L, W]`` template embeddings with each set's contexts spliced in after SOS.

        Rows are set-major: row ``s * C + c`` is class ``c`` of context set ``s``.

        Args:
            templates: ``[C, L, W]`` template embeddings; ``None`` takes the current mode's.
        """
        templates = self.active_templates()[0] if templates is None else templates
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

        With ``context_average="projected"`` the projected embeddings are averaged, then normalised; with
        ``"normalized"`` each is normalised first.
        """
        words = self.active_words(features.dataset if features is not None else None)
        templates, eot = self.active_templates(words, text)
        encoded = text(
            self.prompt_embeddings(templates),
            eot.repeat(self.prompt_count),
            deep_prompts=self.text_prompt_hook(),
            causal=self.text_causal_mask,
            normalize=self.context_average == "normalized",
            checkpoint=self.text_checkpointing,
        )
        per_set = encoded.view(self.prompt_count, templates.shape[0], -1)
        class_names = ("normal", *words)
        return TextFeatures(embeddings=l2_normalize(per_set.mean(dim=0)).unsqueeze(0), class_names=class_names)
