"""The three typed records that flow between pipeline stages.

image --backbone--> :class:`Features` --prompt synthesizer--> :class:`TextFeatures`
--scoring head--> :class:`Scores` --> metrics and reports.

``Features`` is plain tensors on purpose: it can be cached on disk and replayed, so methods never need raw
images, and a frozen backbone runs once per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from zsad.errors import ConfigError

BY_DATASET = "by_dataset"
"""The option value of components whose settings follow the dataset of each batch (:attr:`Features.dataset`), as
the official test scripts pick theirs from the tested dataset's name (DAPO's words, CoPS's constants)."""


@dataclass
class Features:
    """What the frozen image tower gives for a batch.

    Attributes:
        global_embedding: ``[B, D]`` image-level embedding (CLS token, projected; ``ln_post`` per backbone flag).
        patch_tokens: One ``[B, N, D]`` tensor per requested layer from the ordinary (q-k) attention path, CLS
            removed; projected to the joint space unless the backbone was built with ``project_patches=False``.
        layers: The 1-based transformer layer index of each entry of ``patch_tokens``.
        grid: Patch grid ``(rows, cols)``, with ``rows * cols == N``.
        vv_tokens: Same layout as ``patch_tokens`` but from the V-V (DPAM) path, or ``None`` when disabled.
        class_names: Object name of each image (e.g. ``"metal nut"``) for methods whose prompts name the object
            (WinCLIP); filled from the batch's categories by the module, ``None`` when unknown.
        datasets: Benchmark name of each image (e.g. ``"visa"``) for methods whose prompts depend on the dataset
            (DAPO's per-dataset test words); filled from the batch by the module, ``None`` when unknown.
    """

    global_embedding: Tensor
    patch_tokens: tuple[Tensor, ...]
    layers: tuple[int, ...]
    grid: tuple[int, int]
    vv_tokens: tuple[Tensor, ...] | None = None
    class_names: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None

    @property
    def dense_tokens(self) -> tuple[Tensor, ...]:
        """Patch tokens that scoring heads compare with text: the V-V path when present, else the q-k path."""
        return self.vv_tokens if self.vv_tokens is not None else self.patch_tokens

    @property
    def batch_size(self) -> int:
        """Number of images."""
        return self.global_embedding.shape[0]

    @property
    def dataset(self) -> str | None:
        """The one dataset of the batch's images (``None`` when unknown).

        Raises:
            ConfigError: The images come from several datasets. Components whose settings follow the dataset
                score one at a time; :class:`~zsad.module.ZSADModule` cuts such batches into runs of one dataset.
        """
        names = sorted(set(self.datasets or ()))
        if len(names) > 1:
            raise ConfigError(
                f"Settings chosen {BY_DATASET} apply to one dataset at a time, but the batch holds {names}; score "
                "each dataset's images separately (ZSADModule does), or fix the setting to one value."
            )
        return names[0] if names else None

    def to(self, *args: object, **kwargs: object) -> Features:
        """Move or cast every tensor, like :meth:`torch.Tensor.to`."""
        return map_tensors(self, lambda t: t.to(*args, **kwargs))


@dataclass
class TextFeatures:
    """What a prompt synthesizer gives: one text embedding per class, shared or per image.

    Attributes:
        embeddings: ``[B or 1, C, D]`` L2-normalised embeddings; class 0 is "normal", classes 1.. are anomalous
            (one for plain methods, one per defect type for DAPO). A leading 1 means shared by the batch.
        per_layer: Optional per-feature-layer embeddings ``[B or 1, C, D]`` (ViP2's FGP); heads use them in
            place of ``embeddings`` for the matching layer.
        class_names: Names of the C classes, e.g. ``("normal", "anomaly")``.
        prototypes: Optional ``[B, K, D]`` visual prototypes (CoPS), for heads that weight by them.
        terms: Unweighted loss terms the synthesizer computes itself during training (CoPS's center losses, KL,
            reconstruction). Registered losses weight them (their ``consumes``); the module refuses a term that no
            configured loss consumes, so nothing is silently dropped.
    """

    embeddings: Tensor
    class_names: tuple[str, ...] = ("normal", "anomaly")
    per_layer: tuple[Tensor, ...] | None = None
    prototypes: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of text classes C."""
        return self.embeddings.shape[-2]

    def for_layer(self, index: int) -> Tensor:
        """Embeddings to compare with the ``index``-th feature layer."""
        return self.per_layer[index] if self.per_layer is not None else self.embeddings


@dataclass
class Scores:
    """What a scoring head gives.

    Attributes:
        image_logits: ``[B, C]`` temperature-scaled class logits for the image-level loss.
        image_score: ``[B]`` anomaly score (probability of "not normal").
        layer_probs: One ``[B, C, H, W]`` class-probability map per feature layer at image resolution,
            for the pixel losses.
        anomaly_map: ``[B, H, W]`` aggregated (and, in eval mode, smoothed) anomaly map.
        class_map: Optional ``[B, H, W]`` index of the most likely anomalous class per pixel (1..C-1; DAPO's
            defect type), for multi-class synthesizers.
    """

    image_logits: Tensor
    image_score: Tensor
    layer_probs: tuple[Tensor, ...]
    anomaly_map: Tensor
    class_map: Tensor | None = None


def map_tensors(record: Features, function: object) -> Features:
    """Apply ``function`` to every tensor in a :class:`Features` record (tuples included)."""
    updates = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, Tensor):
            updates[f.name] = function(value)  # type: ignore[operator]
        elif isinstance(value, tuple) and value and isinstance(value[0], Tensor):
            updates[f.name] = tuple(function(v) for v in value)  # type: ignore[operator]
    return replace(record, **updates)


def l2_normalize(tensor: Tensor) -> Tensor:
    """L2-normalise along the last dimension (in the tensor's dtype)."""
    return torch.nn.functional.normalize(tensor, dim=-1)
