"""SAGA, CoPS's Spatially-Aware Glocal Alignment head (methods.md §2.6).

At evaluation each patch's (normal, anomaly) probabilities are multiplied by a weight that is high when the
patch is far from every normal prototype and close to an anomaly prototype, and the image score mixes the global
branch with the maximum weighted patch probability. Training uses neither (plain probabilities, global logits).

The official test script picks alpha, beta and the neighbour kernel K from the *test* dataset's name (VisA versus
everything else, :mod:`zsad.prompts.cops.presets`). ``preset: by_dataset`` does the same with the dataset of each
batch; ``preset: <a dataset name>`` fixes one dataset's constants for the whole run, and
:meth:`SAGAHead.active_preset` (and the head's spec in ``results.json``) says which are in force.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zsad.errors import ConfigError
from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    Aggregation,
    SmoothingBorder,
    UpsampleMode,
    check_temperature_and_sigma,
    class_logits,
    gaussian_smooth,
    upsample_patches,
)
from zsad.prompts.cops.ests import average_neighbor, check_kernel, prototype_distances
from zsad.prompts.cops.presets import DEFAULT_CONSTANTS, official_preset, official_preset_name
from zsad.registry import HEADS
from zsad.structures import BY_DATASET, Features, Scores, TextFeatures


def minmax(values: Tensor) -> Tensor:
    """Min-max rescale ``[B, N]`` values to [0, 1] per image (never across batch-mates)."""
    low = values.amin(dim=-1, keepdim=True)
    high = values.amax(dim=-1, keepdim=True)
    return (values - low) / (high - low).clamp_min(torch.finfo(values.dtype).tiny)


def spatial_weights(tokens: Tensor, prototypes: Tensor, alpha: float) -> Tensor:
    """``w = alpha * minmax(dn) + (1 - alpha) * (1 - minmax(da))`` per patch: ``[B, N]``.

    Args:
        tokens: ``[B, N, D]`` neighbour-averaged patch features.
        prototypes: ``[B, 2M, D]``: M normal prototypes, then M anomaly prototypes.
        alpha: Weight of the normal-distance term.
    """
    normal, anomaly = prototypes.chunk(2, dim=1)
    normal_term = minmax(prototype_distances(tokens, normal))
    anomaly_term = 1.0 - minmax(prototype_distances(tokens, anomaly))  # flipped once (the official loop re-flips)
    return alpha * normal_term + (1.0 - alpha) * anomaly_term


@HEADS.register("saga")
class SAGAHead(ScoringHead):
    """CoPS SAGA: prototype-distance-weighted patch probabilities and a beta-fused image score.

    Per feature layer: patch tokens are averaged over K x K neighbours; ``p = softmax(cos(F, e) / T)``. At
    evaluation ``p`` is multiplied by :func:`spatial_weights` (min-max per image); maps are upsampled (nearest, as
    the official test script), averaged over layers and smoothed with a Gaussian (sigma 4). The image score is
    ``beta * p_global[anomaly] + (1 - beta) * max_i p_hat_a,i`` over the layer-mean weighted patch probabilities
    before upsampling. In training: unweighted maps and the global branch only (the image loss uses the global
    logits).

    Constants: give ``preset`` (``"by_dataset"``, or a test dataset name, mapped by the official rule, see
    ``OFFICIAL_TEST_PRESETS``) or explicit ``alpha``/``beta``/``neighbor_kernel``; left out, each takes the official
    non-VisA value (0.26, 0.9, 5).

    Args:
        alpha: Weight of the normal-distance term in the spatial weight.
        beta: Weight of the global score in the image score (1.0: global only).
        neighbor_kernel: K of the neighbour averaging; keep it equal to the synthesizer's ``neighbor_kernel``.
            With ``preset: by_dataset`` it is the training K only (the official code's: 3 training on MVTec, 5 on
            VisA), and the test K follows the dataset.
        preset: ``"by_dataset"`` (the official rule applied to each batch's dataset at evaluation; the non-VisA
            constants when the dataset is unknown), or a test dataset whose official constants apply to the whole
            run (``"visa"`` -> 0.35, 1.0, 3; any other name -> 0.26, 0.9, 5); ``None`` uses the explicit values.
            Conflicting explicit values are refused.
        spatial_weighting: Weight by prototype distances (needs a synthesizer with prototypes, e.g. ``cops`` with
            ``use_ests: true``); ``False`` keeps neighbour averaging and beta fusion with w = 1.
        temperature: Softmax temperature (0.07).
        sigma: Gaussian smoothing at evaluation (4); 0 disables it.
        aggregation: Layer aggregation (official: ``"mean"``; matters because the map max enters the score).
        upsample: Patch grid to image interpolation (official: ``"nearest"``).
        smoothing_border: Border of the Gaussian smoothing: ``"symmetric"`` (official: scipy's ``reflect``, the
            edge pixel repeated) or ``"reflect"`` (torch's, edge pixel not repeated; zsad's earlier behaviour).
    """

    def __init__(
        self,
        alpha: float | None = None,
        beta: float | None = None,
        neighbor_kernel: int | None = None,
        preset: str | None = None,
        spatial_weighting: bool = True,
        temperature: float = 0.07,
        sigma: float = 4.0,
        aggregation: Aggregation = "mean",
        upsample: UpsampleMode = "nearest",
        smoothing_border: SmoothingBorder = "symmetric",
    ) -> None:
        super().__init__()
        check_temperature_and_sigma(temperature, sigma, smoothing_border)
        self.preset = preset
        constants = resolve_constants(preset, {"alpha": alpha, "beta": beta, "neighbor_kernel": neighbor_kernel})
        self.alpha, self.beta = float(constants["alpha"]), float(constants["beta"])
        self.neighbor_kernel = check_kernel(constants["neighbor_kernel"])
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value} must lie in [0, 1].")
        self.spatial_weighting = spatial_weighting
        self.temperature, self.sigma = temperature, sigma
        self.aggregation, self.upsample = aggregation, upsample
        self.smoothing_border = smoothing_border

    @property
    def reads_dataset(self) -> bool:
        """Whether the constants follow the batch's dataset: with ``preset: by_dataset``, at evaluation."""
        return self.preset == BY_DATASET and not self.training

    def active_preset(self, dataset: str | None = None) -> dict[str, Any] | None:
        """The official per-dataset constants in force (with the preset's name and dataset), or ``None``.

        Args:
            dataset: The tested dataset, for ``preset: by_dataset`` (``None`` there: no single preset is in force).
        """
        chosen = dataset if self.preset == BY_DATASET else self.preset
        if chosen is None:
            return None
        return {"name": official_preset_name(chosen), "dataset": chosen, **official_preset(chosen)}

    def constants(self, dataset: str | None) -> tuple[float, float, int]:
        """alpha, beta and K for a batch of ``dataset``.

        With ``preset: by_dataset`` at evaluation, the dataset's official ones (the non-VisA ones when unknown);
        otherwise the head's own.
        """
        if not self.reads_dataset:
            return self.alpha, self.beta, self.neighbor_kernel
        chosen = official_preset(dataset)
        return float(chosen["alpha"]), float(chosen["beta"]), int(chosen["neighbor_kernel"])

    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch."""
        if self.spatial_weighting and text.prototypes is None:
            raise ConfigError(
                "The saga head weights patches by their distance to visual prototypes, but the prompt synthesizer "
                "gives none (e.g. cops with use_ests: false). Enable the prototypes, set the head's "
                "spatial_weighting: false, or use the dual_branch head."
            )
        image_logits = class_logits(features.global_embedding, text.embeddings, self.temperature)
        global_score = 1.0 - image_logits.softmax(dim=-1)[:, 0]
        alpha, beta, kernel = self.constants(features.dataset if self.reads_dataset else None)
        weighted = not self.training and self.spatial_weighting
        layer_probs, patch_anomaly = [], []
        for index, raw_tokens in enumerate(features.dense_tokens):
            tokens = average_neighbor(raw_tokens, features.grid, kernel)
            probs = class_logits(tokens, text.for_layer(index), self.temperature).softmax(dim=-1)  # [B, N, C]
            weights = spatial_weights(tokens, text.prototypes, alpha) if weighted else torch.ones_like(probs[..., 0])
            layer_probs.append(self.to_image(probs * weights[..., None], features.grid, image_size))
            patch_anomaly.append((1.0 - probs[..., 0]) * weights)
        patch_map = torch.stack(patch_anomaly).mean(dim=0) if self.aggregation == "mean" else sum(patch_anomaly)
        anomaly_map = self.to_image(patch_map[..., None], features.grid, image_size)[:, 0]
        anomaly_map = gaussian_smooth(anomaly_map, self.smoothing_sigma, self.smoothing_border)
        image_score = global_score
        if not self.training:  # the image loss reads the global branch alone
            image_score = beta * global_score + (1.0 - beta) * patch_map.amax(dim=-1)
        return Scores(
            image_logits=image_logits,
            image_score=image_score,
            layer_probs=tuple(layer_probs),
            anomaly_map=anomaly_map,
        )

    def to_image(self, patch_values: Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
        """``[B, N, C]`` patch values to ``[B, C, H, W]`` maps at image size."""
        return upsample_patches(patch_values, grid, image_size, self.upsample)


def resolve_constants(preset: str | None, explicit: dict[str, Any]) -> dict[str, Any]:
    """alpha, beta and K from a preset or from explicit values (official non-VisA defaults for those left out).

    With ``preset: by_dataset`` only K may be given (the training K); alpha and beta come from each test dataset.
    """
    if preset == BY_DATASET:
        fixed = {name: value for name, value in explicit.items() if value is not None and name != "neighbor_kernel"}
        if fixed:
            raise ConfigError(
                f"preset='{BY_DATASET}' takes alpha and beta from each test dataset, so {fixed} would be ignored. "
                "Drop them, or set preset: null to use explicit values."
            )
    if preset is None or preset == BY_DATASET:
        return {name: DEFAULT_CONSTANTS[name] if value is None else value for name, value in explicit.items()}
    chosen = official_preset(preset)
    conflicts = {name: value for name, value in explicit.items() if value is not None and value != chosen[name]}
    if conflicts:
        raise ConfigError(
            f"preset='{preset}' fixes {chosen}, which conflicts with {conflicts}. Set preset: null to use explicit "
            "values, or drop them."
        )
    return chosen
