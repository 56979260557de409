"""WinCLIP's compositional prompt ensemble (CPE), training-free (methods.md §8, ecosystem.md §1.2).

Every state word (7 normal, 4 anomalous) is filled with the object name and then put into each of 21 templates:
147 normal and 84 anomalous sentences per object. Each group's text embeddings are averaged and L2-normalised,
giving one "normal" and one "anomalous" embedding per object name. The lists follow anomalib's ``prompting.py``
(the WinCLIP port that methods.md §8 documents); the wording here was typed from those facts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zsad.backbones.text import TextEncoder
from zsad.errors import ConfigError
from zsad.prompts.base import PromptSynthesizer
from zsad.registry import PROMPTS
from zsad.structures import Features, TextFeatures, l2_normalize

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ANOMALOUS_STATES: tuple[str, ...] = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",  # listed twice in anomalib, so it weighs double in the average
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


def compose_prompts(object_name: str, states: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every state filled with ``object_name`` (states outer, templates inner)."""
    return [template.format(state.format(object_name)) for state in states for template in templates]


@PROMPTS.register("winclip")
class WinCLIPPrompt(PromptSynthesizer):
    """WinCLIP's compositional prompt ensemble: state words x templates, averaged per state; no parameters.

    The embeddings depend on the object name (``features.class_names``, ``default_class_name`` when unknown) but
    not on the image, so each distinct name is encoded once and cached.

    Official behaviour (anomalib) and the alternatives:

    - ``normalize_each_prompt=False`` (official): the raw (unnormalised) sentence embeddings are averaged, then
      the mean is normalised. ``True`` normalises each sentence first, as CLIP's ImageNet prompt ensembling does.
    - ``deduplicate_templates=False`` (official): anomalib's template list names "a jpeg corrupted photo of the
      {}." twice, so it counts double. ``True`` drops repeated templates (20 remain).
    - ``underscore_class_names=False``: zsad turns category folders into words ("metal_nut" -> "metal nut"),
      which is what the paper's prompts mean. anomalib puts its datamodule's category verbatim into the prompts;
      ``True`` restores the underscores to match anomalib exactly.

    Args:
        normal_states: State words with ``{}`` for the object name (WinCLIP: 7).
        anomalous_states: Anomalous state words (WinCLIP: 4).
        templates: Sentence templates with ``{}`` for the state (WinCLIP: 21).
        default_class_name: Object name when the batch names none (WinCLIP/anomalib: "object").
        normalize_each_prompt: L2-normalise each sentence embedding before averaging.
        deduplicate_templates: Use each distinct template once.
        underscore_class_names: Replace spaces in object names by underscores (anomalib's category strings).
    """

    image_conditioned = False
    reads_class_names = True

    def __init__(
        self,
        normal_states: Sequence[str] = NORMAL_STATES,
        anomalous_states: Sequence[str] = ANOMALOUS_STATES,
        templates: Sequence[str] = TEMPLATES,
        default_class_name: str = "object",
        normalize_each_prompt: bool = False,
        deduplicate_templates: bool = False,
        underscore_class_names: bool = False,
    ) -> None:
        super().__init__()
        for label, words in (("normal_states", normal_states), ("anomalous_states", anomalous_states)):
            if not words or any("{}" not in word for word in words):
                raise ConfigError(f"{label} must be a non-empty list of strings that each contain '{{}}'.")
        if not templates or any("{}" not in template for template in templates):
            raise ConfigError("templates must be a non-empty list of strings that each contain '{}'.")
        self.states = (tuple(normal_states), tuple(anomalous_states))
        self.templates = tuple(dict.fromkeys(templates)) if deduplicate_templates else tuple(templates)
        self.default_class_name = default_class_name
        self.normalize_each_prompt = normalize_each_prompt
        self.underscore_class_names = underscore_class_names
        self._cache: dict[tuple[str, str], Tensor] = {}

    def setup(self, text: TextEncoder) -> None:
        """Nothing to create; forget embeddings from any previous text encoder."""
        self._cache.clear()

    def prompts(self, object_name: str) -> tuple[list[str], list[str]]:
        """The normal and the anomalous sentences for ``object_name``."""
        return tuple(compose_prompts(object_name, states, self.templates) for states in self.states)  # type: ignore[return-value]

    def object_name(self, class_name: str | None) -> str:
        """The name put into the prompts for one image."""
        name = class_name or self.default_class_name
        return name.replace(" ", "_") if self.underscore_class_names else name

    @torch.no_grad()
    def encode(self, object_name: str, text: TextEncoder) -> Tensor:
        """``[2, D]`` normalised (normal, anomalous) embeddings for one object name, cached per name and device."""
        key = (object_name, str(text.token_embedding.weight.device))
        if key not in self._cache:
            means = []
            # Full precision even under mixed precision: the kept embeddings must not depend on the autocast state
            # of whichever call computed them first (one text pass per name, so fp32 costs nothing noticeable).
            with torch.autocast(device_type=text.token_embedding.weight.device.type, enabled=False):
                for sentences in self.prompts(object_name):
                    embeddings = text.encode_text(sentences, normalize=self.normalize_each_prompt)
                    means.append(embeddings.float().mean(dim=0))
            self._cache[key] = l2_normalize(torch.stack(means))
        return self._cache[key]

    def forward(self, features: Features, text: TextEncoder) -> TextFeatures:
        """``[B, 2, D]`` embeddings: each image gets those of its own object name."""
        names = features.class_names or (None,) * features.batch_size
        embeddings = torch.stack([self.encode(self.object_name(name), text) for name in names])
        return TextFeatures(embeddings=embeddings)
