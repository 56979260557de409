"""ESTS (Explicit State Token Synthesis): learnable-query prototypes of the patch features (methods.md §2.2-2.3).

One pre-norm cross-attention block turns 6 learnable normal queries and 6 learnable anomaly queries into
per-image prototypes of the (neighbour-averaged) patch features. The prototypes are pulled towards the patches
of their state by the center losses, and their stop-gradient copies are added to the prompts' state tokens.

The neighbour averaging (``average_neighbor``) lives here because it prepares the patch features for everything
downstream: the prototypes, the center losses, and SAGA's distances and text-patch similarities
(:mod:`zsad.heads.saga` imports it from here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange
from torch import Tensor, nn

from zsad.errors import ConfigError

INIT_STD = 0.02


def check_kernel(kernel: int, name: str = "neighbor_kernel", alternative: str = "") -> int:
    """Validate a neighbour-averaging kernel size (odd and positive, so the grid keeps its size).

    Args:
        kernel: The size.
        name: The option that gave it, for the message.
        alternative: Another accepted value, named in the message (e.g. ``"by_dataset"``).
    """
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        other = f", or {alternative}" if alternative else ""
        raise ConfigError(f"{name}={kernel} must be an odd positive integer (CoPS uses 3 or 5; 1 disables){other}.")
    return kernel


def average_neighbor(tokens: Tensor, grid: tuple[int, int], kernel: int) -> Tensor:
    """CoPS's ``average_neighbor``: K x K mean of every patch token over its grid neighbours.

    ``avg_pool2d`` with stride 1 and zero padding ``K // 2`` that *counts* toward the average (PyTorch's
    default), so border patches shrink towards zero as in the official code.

    Args:
        tokens: ``[B, N, D]`` patch tokens, ``N == grid[0] * grid[1]``.
        grid: Patch grid ``(rows, cols)``.
        kernel: Odd window size K; 1 returns the tokens unchanged.

    Returns:
        ``[B, N, D]`` averaged tokens.
    """
    if kernel == 1:
        return tokens
    maps = rearrange(tokens, "b (h w) d -> b d h w", h=grid[0], w=grid[1])
    maps = F.avg_pool2d(maps, kernel_size=kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    return rearrange(maps, "b d h w -> b (h w) d")


def pool_mask_to_grid(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Max-pool a ``[B, H, W]`` mask to the patch grid: a patch is anomalous if any of its pixels is.

    At 518 px and a 37 x 37 grid this is the official 14 x 14 max-pool with stride 14.
    """
    return F.adaptive_max_pool2d(mask.float().unsqueeze(1), grid).squeeze(1)


def prototype_distances(tokens: Tensor, prototypes: Tensor) -> Tensor:
    """Distance of every patch to its nearest prototype: ``min_j (1 - cos(F_i, P_j))``.

    Args:
        tokens: ``[B, N, D]`` patch features.
        prototypes: ``[B, M, D]`` prototypes of one state.

    Returns:
        ``[B, N]`` distances, in fp32 (autocast off: it would run the einsum in half precision again).
    """
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        tokens, prototypes = F.normalize(tokens.float(), dim=-1), F.normalize(prototypes.float(), dim=-1)
        return (1.0 - torch.einsum("bnd,bmd->bnm", tokens, prototypes)).amin(dim=-1)


def center_losses(normal_distance: Tensor, anomaly_distance: Tensor, patch_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The two center losses L_NC and L_AC (the official "gather" and "scatter").

    L_NC is the mean of the normal distances over every normal patch of the batch (pooled across images); L_AC
    the mean of the anomaly distances over every anomalous patch, 0 when the batch has none. Both only pull.

    Args:
        normal_distance: ``[B, ...]`` distance of each patch to its nearest normal prototype.
        anomaly_distance: ``[B, ...]`` same for the anomaly prototypes.
        patch_mask: ``[B, ...]`` patch-level mask; ``> 0`` is anomalous.

    Returns:
        ``(L_NC, L_AC)`` scalars.
    """
    anomalous = patch_mask > 0
    return masked_mean(normal_distance, ~anomalous), masked_mean(anomaly_distance, anomalous)


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` where ``keep`` is true; 0 (with a graph to ``values``) when nothing is kept."""
    kept = values[keep]
    return kept.mean() if kept.numel() else values.sum() * 0.0


class QuickGELU(nn.Module):
    """CLIP's activation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation."""
        return x * torch.sigmoid(1.702 * x)


class PrototypeExtractor(nn.Module):
    """One pre-norm cross-attention block with learnable queries (the official Prototype Extractor).

    ``X = T + MHA(LN1(T), LN1(F), LN1(F))``; ``P = X + MLP(LN2(X))`` with MLP = Linear(D, D), QuickGELU,
    Linear(D, D) (hidden width D, not 4D). The same ``LN1`` normalises queries and image tokens.

    Args:
        dim: Feature width D (768 for ViT-L/14).
        num_heads: Attention heads (12 in CoPS).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), QuickGELU(), nn.Linear(dim, dim))

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        """Cross-attend ``[B, M, D]`` queries to ``[B, N, D]`` tokens; returns ``[B, M, D]``."""
        normed_queries, normed_tokens = self.ln_1(queries), self.ln_1(tokens)
        attended, _ = self.attn(normed_queries, normed_tokens, normed_tokens, need_weights=False)
        x = queries + attended
        return x + self.mlp(self.ln_2(x))


class StatePrototypes(nn.Module):
    """ESTS: 6 normal and 6 anomaly learnable queries run through one shared :class:`PrototypeExtractor`.

    The official code calls the extractor twice (normal queries, anomaly queries). Queries never attend to each
    other in a cross-attention block and LayerNorm/MLP act per token, so one call on all 12 queries gives the
    same prototypes.

    Args:
        dim: Feature width D.
        num_prototypes: Prototypes per state M (CoPS: 6).
        num_heads: Attention heads of the extractor.
        init_std: Standard deviation of the query initialisation (N(0, 0.02²)).
    """

    def __init__(self, dim: int, num_prototypes: int, num_heads: int, init_std: float = INIT_STD) -> None:
        super().__init__()
        self.num_prototypes = num_prototypes
        self.extractor = PrototypeExtractor(dim, num_heads)
        init_linear_and_norm(self.extractor)
        self.queries = nn.Parameter(torch.randn(2, num_prototypes, dim) * init_std)  # [normal, anomaly]

    def forward(self, tokens: Tensor) -> Tensor:
        """Prototypes ``[B, 2, M, D]`` (index 0 normal, 1 anomaly) of ``[B, N, D]`` patch tokens."""
        tokens = tokens.to(self.queries.dtype)  # fp16 cached features meet fp32 parameters
        queries = self.queries.flatten(0, 1).expand(tokens.shape[0], -1, -1)
        prototypes = self.extractor(queries, tokens)
        return rearrange(prototypes, "b (s m) d -> b s m d", s=2)


def init_linear_and_norm(module: nn.Module, std: float = INIT_STD) -> None:
    """Apply the official initialisation to every Linear and LayerNorm of ``module``.

    Linear layers (MHA's ``out_proj`` included) get N(0, std²) weights and zero bias, LayerNorms weight 1 and
    bias 0; MHA's packed in-projection keeps PyTorch's default.
    """
    for child in module.modules():
        if isinstance(child, nn.Linear):
            nn.init.normal_(child.weight, std=std)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
