"""Window embeddings of a frozen CLIP ViT, WinCLIP's multi-scale features (methods.md §8, ecosystem.md §1.2).

A window of ``k x k`` patches is encoded as its own short sequence: the class token plus the window's patch tokens,
taken after patch embedding, position embedding and ``ln_pre``, run through all transformer blocks with attention
only inside the window, then ``ln_post`` and ``proj`` of the class token. Every window of every image at one scale
has the same length (``1 + k*k``), so all of them go through the blocks as one batch-first pass (or a few chunks
of ``max_windows_per_pass`` sequences).

At 240 px with patch 16 (ViT-B-16-plus-240, a 15 x 15 grid) that is 196 windows of 2 x 2 (5 tokens each) and
169 of 3 x 3 (10 tokens each), about 12 times the token work of one 226-token image pass.

anomalib's own window pass is broken under open_clip 3.x (anomalib#2571): it permutes the window tokens to
sequence-first before a batch-first transformer, so attention runs across windows and every window embedding is
the same vector. This module implements the intended behaviour, attention within each window.

``ln_pre`` is a per-token LayerNorm, so selecting tokens after it equals selecting them before it (anomalib
selects before): the window tokens are sliced from :func:`~zsad.backbones.vision.embed_patches`' output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from zsad.backbones.clip import CLIPBackbone, PosInterpolation
from zsad.backbones.text import DeepPromptHook
from zsad.backbones.vision import embed_patches, run_blocks
from zsad.errors import ConfigError
from zsad.registry import BACKBONES
from zsad.structures import Features


@dataclass
class WindowFeatures(Features):
    """:class:`~zsad.structures.Features` plus WinCLIP's window embeddings.

    Attributes:
        window_embeddings: One ``[B, n_windows, D]`` tensor per window size: the projected class token of every
            window, windows in row-major order of their top-left patch (see :func:`window_patch_indices`).
        window_sizes: Window side in patches for each entry of ``window_embeddings`` (WinCLIP: 2 and 3).
        window_stride: Step between neighbouring windows, in patches (WinCLIP: 1).
    """

    window_embeddings: tuple[Tensor, ...] = ()
    window_sizes: tuple[int, ...] = ()
    window_stride: int = 1


@cache
def window_patch_indices(grid: tuple[int, int], size: int, stride: int = 1) -> Tensor:
    """Patch indices (row-major over the grid, CLS excluded) of every ``size x size`` window: ``[n_windows, size**2]``.

    Windows are ordered row-major by their top-left patch; inside a window, patches are row-major too.
    A ``(rows, cols)`` grid has ``((rows - size) // stride + 1) * ((cols - size) // stride + 1)`` windows.
    """
    rows, cols = grid
    check_window_size(size, stride, grid)
    tops = torch.arange(0, rows - size + 1, stride)
    lefts = torch.arange(0, cols - size + 1, stride)
    offsets = (torch.arange(size)[:, None] * cols + torch.arange(size)[None, :]).flatten()  # [size*size]
    starts = (tops[:, None] * cols + lefts[None, :]).flatten()  # [n_windows]
    return starts[:, None] + offsets[None, :]


def check_window_size(size: int, stride: int, grid: tuple[int, int]) -> None:
    """Raise :class:`~zsad.errors.ConfigError` for a window that does not fit the patch grid."""
    if stride < 1:
        raise ConfigError(f"window_stride={stride} must be at least 1.")
    if not 1 <= size <= min(grid):
        raise ConfigError(
            f"Window size {size} does not fit the {grid[0]} x {grid[1]} patch grid; use sizes from 1 to {min(grid)}."
        )


def window_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """Gather ``[CLS + window patches]`` for every window of every image: ``[B * n_windows, 1 + k*k, W]``.

    Args:
        tokens: ``[B, 1 + N, W]`` embedded tokens (CLS first), e.g. from :func:`embed_patches`.
        indices: ``[n_windows, k*k]`` patch indices from :func:`window_patch_indices`.
    """
    batch, _, width = tokens.shape
    n_windows = indices.shape[0]
    patches = tokens[:, 1 + indices.to(tokens.device)]  # [B, n_windows, k*k, W]
    cls_token = tokens[:, :1, None].expand(batch, n_windows, 1, width)
    return torch.cat([cls_token, patches], dim=2).flatten(0, 1)


def embed_windows(backbone: CLIPBackbone, tokens: Tensor, indices: Tensor, max_windows_per_pass: int | None) -> Tensor:
    """Window embeddings ``[B, n_windows, D]`` from embedded tokens, windows batched as independent sequences.

    Args:
        backbone: The CLIP backbone whose blocks, ``ln_post`` and ``proj`` encode the windows.
        tokens: ``[B, 1 + N, W]`` output of :func:`embed_patches` (after ``ln_pre``).
        indices: ``[n_windows, k*k]`` patch indices of the windows.
        max_windows_per_pass: Most window sequences per pass through the blocks (bounds memory); ``None`` runs all
            windows of all images in one pass.
    """
    visual = backbone.visual
    sequences = window_tokens(tokens, indices)
    step = max_windows_per_pass or sequences.shape[0]
    blocks = visual.transformer.resblocks
    pooled = torch.cat([run_blocks(blocks, chunk, (), None).final[:, 0] for chunk in sequences.split(step)])
    embeddings = visual.ln_post(pooled) @ visual.proj
    return embeddings.unflatten(0, (tokens.shape[0], indices.shape[0]))


def encode_windows(
    backbone: CLIPBackbone,
    images: Tensor,
    sizes: Sequence[int] = (2, 3),
    stride: int = 1,
    max_windows_per_pass: int | None = None,
) -> tuple[Tensor, ...]:
    """WinCLIP window embeddings of normalised images: one ``[B, n_windows, D]`` tensor per window size.

    Args:
        backbone: Any :class:`~zsad.backbones.clip.CLIPBackbone` (uses ``.visual``, ``.pos_embed``, ``.grid``).
        images: Normalised ``[B, 3, H, W]`` images at the backbone's ``image_size``.
        sizes: Window sides in patches.
        stride: Step between windows in patches.
        max_windows_per_pass: See :func:`embed_windows`.
    """
    tokens = embed_patches(backbone.visual, images.to(backbone.pos_embed.dtype), backbone.pos_embed)
    return tuple(
        embed_windows(backbone, tokens, window_patch_indices(backbone.grid, size, stride), max_windows_per_pass)
        for size in sizes
    )


@BACKBONES.register("winclip_backbone")
class WinCLIPBackbone(CLIPBackbone):
    """CLIP backbone that also gives WinCLIP's window embeddings (ViT-B-16-plus-240 at 240 px by default).

    Its :meth:`forward` returns :class:`WindowFeatures`: the ordinary features of
    :class:`~zsad.backbones.clip.CLIPBackbone` (global feature with ``ln_post``, last-layer patch tokens with
    ``ln_post`` and ``proj``) plus one window-embedding tensor per window size. The ``winclip_windows`` head needs
    them. The patch-embedding convolution runs twice (once per path); it is a negligible share of the cost.

    Args:
        model_name: open_clip architecture; WinCLIP uses ``"ViT-B-16-plus-240"``.
        pretrained: Pretrained tag (WinCLIP: ``"laion400m_e31"``), local checkpoint, or ``None`` for random weights.
        image_size: Input side in pixels (WinCLIP: 240, a 15 x 15 grid).
        layers: 1-based layers whose patch tokens to return; ``None`` is the last layer.
        vv_start_layer: V-V path start (WinCLIP: none).
        global_ln_post: ``ln_post`` on the global feature (WinCLIP: yes, standard CLIP).
        project_patches: ``ln_post`` + ``proj`` on patch tokens.
        pos_interpolation: Position-table resize mode when ``image_size`` differs from the pretraining size.
        force_quick_gelu: Force QuickGELU (OpenAI weights only; not WinCLIP's LAION weights).
        cache_dir: open_clip download cache.
        window_sizes: Window sides in patches (WinCLIP: 2 and 3, its "small" and "mid" scales).
        window_stride: Step between windows in patches (WinCLIP: 1).
        max_windows_per_pass: Most window sequences per pass through the blocks; ``None`` runs all windows of a
            batch in one pass per size. Lower it only to bound memory; results do not change.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16-plus-240",
        pretrained: str | None = "laion400m_e31",
        image_size: int | None = 240,
        layers: Sequence[int] | None = None,
        vv_start_layer: int | None = None,
        global_ln_post: bool = True,
        project_patches: bool = True,
        pos_interpolation: PosInterpolation = "bilinear",
        force_quick_gelu: bool = False,
        cache_dir: str | None = None,
        window_sizes: Sequence[int] = (2, 3),
        window_stride: int = 1,
        max_windows_per_pass: int | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            pretrained=pretrained,
            image_size=image_size,
            layers=layers,
            vv_start_layer=vv_start_layer,
            global_ln_post=global_ln_post,
            project_patches=project_patches,
            pos_interpolation=pos_interpolation,
            force_quick_gelu=force_quick_gelu,
            cache_dir=cache_dir,
        )
        self.window_sizes = tuple(window_sizes)
        self.window_stride = window_stride
        if not self.window_sizes:
            raise ConfigError("window_sizes is empty; WinCLIP uses window_sizes: [2, 3].")
        for size in self.window_sizes:
            check_window_size(size, window_stride, self.grid)
        if max_windows_per_pass is not None and max_windows_per_pass < 1:
            raise ConfigError(f"max_windows_per_pass={max_windows_per_pass} must be at least 1 (or null for all).")
        self.max_windows_per_pass = max_windows_per_pass

    def forward(self, images: Tensor, deep_prompts: DeepPromptHook | None = None) -> WindowFeatures:
        """Full-image features plus window embeddings of normalised ``[B, 3, H, W]`` images.

        Raises:
            ConfigError: If ``deep_prompts`` is given: windows are encoded without visual prompt tokens.
        """
        if deep_prompts is not None:
            raise ConfigError(
                "winclip_backbone does not support learned visual tokens (deep prompts): its windows would be "
                "encoded without them. Use the plain `clip` backbone with this prompt synthesizer."
            )
        features = super().forward(images)
        windows = encode_windows(self, images, self.window_sizes, self.window_stride, self.max_windows_per_pass)
        return WindowFeatures(
            **{name: getattr(features, name) for name in Features.__dataclass_fields__},
            window_embeddings=windows,
            window_sizes=self.window_sizes,
            window_stride=self.window_stride,
        )
