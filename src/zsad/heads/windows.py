"""WinCLIP's zero-shot scoring from window embeddings (methods.md §8, ecosystem.md §1.2).

Per image, with text embeddings ``t_normal, t_anomalous`` and ``s(x) = softmax(cos(x, t) / T)[anomalous]``:

1. Image score: ``s(global feature)``, the full-image class token (anomalib's zero-shot score; no map term).
2. Per window size ``k``: ``s(window)`` for every ``k x k`` window, then for every patch ``p`` the harmonic mean of
   the windows that contain it: ``|W(p)| / sum_{w in W(p)} 1 / s(w)`` (0 for a patch no window covers).
3. Scales combined per patch by a second harmonic mean over ``[image score broadcast, map_2, map_3]``:
   ``(S + 1) / (1 / s_image + sum_k 1 / map_k)``.
4. Bilinear upsampling (``align_corners=False``) to the image size; no Gaussian smoothing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zsad.backbones.windows import WindowFeatures, window_patch_indices
from zsad.errors import ConfigError
from zsad.heads.base import ScoringHead
from zsad.heads.maps import (
    SmoothingBorder,
    UpsampleMode,
    anomaly_probability,
    check_temperature_and_sigma,
    class_logits,
    gaussian_smooth,
    resize_maps,
)
from zsad.registry import HEADS
from zsad.structures import Features, Scores, TextFeatures

ImageScoreMode = Literal["cls", "cls_and_map_max"]


def harmonic_patch_scores(window_scores: Tensor, grid: tuple[int, int], size: int, stride: int) -> Tensor:
    """Per-patch harmonic mean of the scores of the windows containing the patch: ``[B, n_windows]`` -> ``[B, N]``.

    A zero window score makes its patches 0 (the harmonic mean's limit); uncovered patches are 0, as in anomalib.
    Reciprocals are scattered into patch bins (no matrix product, where ``inf * 0`` would leak NaN to neighbours).
    """
    indices = window_patch_indices(grid, size, stride).to(window_scores.device)  # [n_windows, k*k]
    patches = grid[0] * grid[1]
    reciprocals = window_scores.reciprocal()[:, :, None].expand(-1, -1, indices.shape[1])
    inverse_sum = window_scores.new_zeros(window_scores.shape[0], patches)
    inverse_sum.scatter_add_(1, indices.flatten().expand(window_scores.shape[0], -1), reciprocals.flatten(1))
    counts = torch.bincount(indices.flatten(), minlength=patches).to(window_scores.dtype)
    return (counts / inverse_sum).nan_to_num(nan=0.0, posinf=0.0)


def harmonic_mean(maps: Tensor, dim: int = 0) -> Tensor:
    """Harmonic mean along ``dim``; any zero entry gives 0."""
    return maps.shape[dim] / maps.reciprocal().sum(dim=dim)


@HEADS.register("winclip_windows")
class WindowHead(ScoringHead):
    """WinCLIP zero-shot head: window scores, harmonic aggregation per patch and across scales, CLS image score.

    Needs :class:`~zsad.backbones.windows.WindowFeatures` from the ``winclip_backbone`` backbone.

    Official behaviour (anomalib's ``WinClipModel`` with ``k_shot=0``) and the alternatives:

    - ``temperature=0.07`` (official): ``softmax(cos / 0.07)``; anomalib applies no 100x CLIP logit scale.
      ``temperature=0.01`` gives CLIP's own scale of 100.
    - ``include_image_scale=True`` (official): the full-image score is one term of the harmonic mean across
      scales. ``False`` combines the window scales only.
    - ``image_score="cls"`` (official zero-shot): the image score is the CLS score alone; the map does not enter.
      ``"cls_and_map_max"`` is a zsad option: the mean of the CLS score and the maximum of the zero-shot
      patch-grid map (before upsampling). It mirrors how anomalib's few-shot mode (WinCLIP+, not implemented here)
      folds the maximum of its few-shot map into the image score.

    Args:
        temperature: Softmax temperature over cosine similarities.
        include_image_scale: Whether the broadcast image score joins the harmonic mean across scales.
        image_score: How the image score is formed (see above).
        upsample: Interpolation from the patch grid to image size (WinCLIP: bilinear).
        sigma: Gaussian smoothing of the final map at evaluation; 0 (WinCLIP) disables it.
        smoothing_border: Border of the Gaussian smoothing: ``"symmetric"`` (official: scipy's ``reflect``, the
            edge pixel repeated) or ``"reflect"`` (torch's, edge pixel not repeated; zsad's earlier behaviour).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        include_image_scale: bool = True,
        image_score: ImageScoreMode = "cls",
        upsample: UpsampleMode = "bilinear",
        sigma: float = 0.0,
        smoothing_border: SmoothingBorder = "symmetric",
    ) -> None:
        super().__init__()
        check_temperature_and_sigma(temperature, sigma, smoothing_border)
        if image_score not in ("cls", "cls_and_map_max"):
            raise ConfigError(f"image_score='{image_score}' must be 'cls' or 'cls_and_map_max'.")
        self.temperature = temperature
        self.include_image_scale = include_image_scale
        self.image_score = image_score
        self.upsample = upsample
        self.sigma = sigma
        self.smoothing_border = smoothing_border

    def forward(self, features: Features, text: TextFeatures, image_size: tuple[int, int]) -> Scores:
        """Score a batch of :class:`~zsad.backbones.windows.WindowFeatures`."""
        windows = require_windows(features)
        image_logits = class_logits(windows.global_embedding, text.embeddings, self.temperature)
        image_score = anomaly_probability(image_logits.softmax(dim=-1))
        scale_maps = self.window_maps(windows, text)  # per size: [B, N]
        terms = [image_score[:, None].expand_as(scale_maps[0])] if self.include_image_scale else []
        patch_map = harmonic_mean(torch.stack(terms + scale_maps))
        if self.image_score == "cls_and_map_max":
            image_score = (image_score + patch_map.amax(dim=-1)) / 2
        rows, cols = windows.grid
        anomaly_map = self._resize(patch_map.unflatten(-1, (rows, cols))[:, None], image_size)[:, 0]
        anomaly_map = gaussian_smooth(anomaly_map, self.smoothing_sigma, self.smoothing_border)
        layer_probs = tuple(
            self._resize(torch.stack([1 - m, m], dim=1).unflatten(-1, (rows, cols)), image_size) for m in scale_maps
        )
        return Scores(
            image_logits=image_logits, image_score=image_score, layer_probs=layer_probs, anomaly_map=anomaly_map
        )

    def window_maps(self, features: WindowFeatures, text: TextFeatures) -> list[Tensor]:
        """Per window size, the ``[B, N]`` harmonic mean of window anomaly scores over the windows of each patch."""
        maps = []
        for size, embeddings in zip(features.window_sizes, features.window_embeddings, strict=True):
            probs = class_logits(embeddings, text.embeddings, self.temperature).softmax(dim=-1)
            window_scores = 1.0 - probs[..., 0]  # [B, n_windows]: probability of "not normal"
            maps.append(harmonic_patch_scores(window_scores, features.grid, size, features.window_stride))
        return maps

    def _resize(self, maps: Tensor, image_size: tuple[int, int]) -> Tensor:
        return resize_maps(maps, image_size, self.upsample)


def require_windows(features: Features) -> WindowFeatures:
    """The features as :class:`WindowFeatures`, or a clear error naming the backbone to use."""
    if not isinstance(features, WindowFeatures) or not features.window_embeddings:
        raise ConfigError(
            "The winclip_windows head needs window embeddings, which only the `winclip_backbone` backbone "
            "(zsad.backbones.windows.WinCLIPBackbone) computes. Use configs/method/winclip.yaml, or set "
            "model.backbone.class_path to winclip_backbone."
        )
    return features
