"""A hand-written pass over open_clip's vision blocks that returns intermediate and V-V (DPAM) tokens.

None of the reference repositories use open_clip's pooled output: they need tokens from several layers and the
V-V path of AnomalyCLIP and CoPS (methods.md §1). The V-V path, per block ``l`` from the first V-V layer on::

    a      = ln_1(x_ori)
    x_vv  += attn(q=v, k=v, v=v)(a)          # no MLP on this stream; x_vv starts as the first V-V block's input
    x_ori += attn(q, k, v)(a);  x_ori += mlp(ln_2(x_ori))   # exactly frozen CLIP

Both attentions share one qkv projection and run as one batched attention call. Every block's attention, V-V or
not, goes through ``F.scaled_dot_product_attention`` with the frozen ``nn.MultiheadAttention``'s weights instead of
calling that module: the same map up to float rounding, and on a CPU about 15% faster per ViT-L/14 block at 518 px
(1,370 tokens; equal for short sequences such as WinCLIP's windows), see docs/performance.md. Every stored token
tensor is a fresh tensor (no in-place updates), which avoids AnomalyCLIP's pre-2025 bug where all "multi-layer"
outputs were silently the last layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange
from open_clip import model as open_clip_model
from torch import Tensor, nn

from zsad.backbones.text import DeepPromptHook
from zsad.errors import ConfigError


@dataclass
class BlockOutputs:
    """Tokens (CLS first) collected from the block loop, keyed by 1-based layer index."""

    final: Tensor
    qk: dict[int, Tensor]
    vv: dict[int, Tensor]


OPEN_CLIP_RESIZE = "open_clip"
"""The ``mode`` of :func:`interpolate_pos_embed` that defers to open_clip's own ``resize_pos_embed``."""


def interpolate_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], mode: str) -> Tensor:
    """Resize a ``[1 + rows*cols, W]`` position table to a new patch grid; the CLS row is kept as is.

    Same grid returns the input unchanged.

    Args:
        pos_embed: The pretrained table, CLS row first.
        old_grid: ``(rows, cols)`` the table was trained for.
        new_grid: ``(rows, cols)`` of the new input size.
        mode: ``"bilinear"`` or ``"bicubic"``: ``F.interpolate`` with ``align_corners=False`` and no antialias, as
            the AnomalyCLIP-family code resizes. ``"open_clip"``: open_clip's own ``resize_pos_embed`` (bicubic
            with antialias), what open_clip applies when a model is created with ``force_image_size``, as DAPO's
            code does.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    if mode == OPEN_CLIP_RESIZE:
        return open_clip_resize_pos_embed(pos_embed, old_grid, new_grid)
    cls_row, grid_rows = pos_embed[:1], pos_embed[1:]
    table = rearrange(grid_rows, "(h w) c -> 1 c h w", h=old_grid[0], w=old_grid[1])
    table = F.interpolate(table.float(), size=new_grid, mode=mode, align_corners=False).to(pos_embed.dtype)
    return torch.cat([cls_row, rearrange(table, "1 c h w -> (h w) c")], dim=0)


def open_clip_resize_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """The table resized by open_clip's ``resize_pos_embed`` itself, in fp32, returned in the input's dtype.

    That function edits a state dict for a model; it reads nothing from the model but ``visual.grid_size``, so a
    one-entry state dict and a stand-in carrying the new grid are enough. It infers the old grid as a square from
    the table's length, hence the check.

    Raises:
        ConfigError: A non-square pretrained grid, which open_clip's resize cannot handle.
    """
    if old_grid[0] != old_grid[1] or pos_embed.shape[0] != 1 + old_grid[0] * old_grid[1]:
        raise ConfigError(
            f"pos_interpolation='open_clip' needs a square pretrained grid with a CLS row; this table has "
            f"{pos_embed.shape[0]} rows for grid {tuple(old_grid)}. Use 'bicubic' or 'bilinear'."
        )
    state = {"visual.positional_embedding": pos_embed.float()}
    open_clip_model.resize_pos_embed(state, SimpleNamespace(visual=SimpleNamespace(grid_size=tuple(new_grid))))
    return state["visual.positional_embedding"].to(pos_embed.dtype)


def embed_patches(visual: nn.Module, images: Tensor, pos_embed: Tensor) -> Tensor:
    """Patchify, prepend CLS, add position embeddings and apply ``ln_pre``: ``[B, 1 + N, W]``."""
    tokens = rearrange(visual.conv1(images), "b c h w -> b (h w) c")
    cls_token = visual.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
    tokens = torch.cat([cls_token, tokens], dim=1) + pos_embed.to(tokens.dtype)
    return visual.ln_pre(tokens)


def attention_heads(attn: nn.MultiheadAttention, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[B, heads, L, head_dim]`` of a frozen (batch-first) ``nn.MultiheadAttention``."""
    qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
    return rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=attn.num_heads).unbind(0)


def self_attention(attn: nn.MultiheadAttention, normed: Tensor) -> Tensor:
    """A block's ordinary (q-k) attention, ``[B, L, W]`` after ``out_proj``, as the module itself would give it."""
    q, k, v = attention_heads(attn, normed)
    return attn.out_proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)"))


def dual_path_attention(attn: nn.MultiheadAttention, normed: Tensor) -> tuple[Tensor, Tensor]:
    """Ordinary q-k attention and V-V attention of one block, from one qkv projection.

    Args:
        attn: The block's frozen (batch-first) ``nn.MultiheadAttention``.
        normed: ``ln_1`` of the block input, ``[B, L, W]``.

    Returns:
        ``(qk_out, vv_out)``, each ``[B, L, W]`` after ``out_proj``.
    """
    q, k, v = attention_heads(attn, normed)
    batch = normed.shape[0]
    # One attention call for both paths: stack (q, k, v) and (v, v, v) along the batch axis.
    mixed = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
    mixed = attn.out_proj(rearrange(mixed, "b h l d -> b l (h d)"))
    return mixed[:batch], mixed[batch:]


def run_blocks(
    blocks: nn.ModuleList,
    tokens: Tensor,
    layers: tuple[int, ...],
    vv_start: int | None,
    deep_prompts: DeepPromptHook | None = None,
) -> BlockOutputs:
    """Run the vision blocks, keeping q-k tokens at ``layers`` and V-V tokens from ``vv_start`` on.

    Args:
        blocks: open_clip ``ResidualAttentionBlock``s (batch-first).
        tokens: Output of :func:`embed_patches`.
        layers: 1-based layers whose outputs to keep.
        vv_start: 1-based first V-V block, or ``None`` for no V-V path.
        deep_prompts: Optional hook that edits the q-k stream before each block (0-based index), e.g. DAPO's
            visual tokens inserted after CLS. Inserted tokens stay in the returned tensors, right after CLS.
    """
    qk: dict[int, Tensor] = {}
    vv: dict[int, Tensor] = {}
    vv_stream: Tensor | None = None
    for index, block in enumerate(blocks, start=1):
        if deep_prompts is not None:
            tokens = deep_prompts.before_layer(index - 1, tokens)
        normed = block.ln_1(tokens)
        if vv_start is not None and index >= vv_start:
            if vv_stream is None:
                vv_stream = tokens
            attended, vv_out = dual_path_attention(block.attn, normed)
            vv_stream = vv_stream + block.ls_1(vv_out)
        else:
            attended = self_attention(block.attn, normed)
        tokens = tokens + block.ls_1(attended)
        tokens = tokens + block.ls_2(block.mlp(block.ln_2(tokens)))
        if index in layers:
            qk[index] = tokens
            if vv_stream is not None:
                vv[index] = vv_stream
    return BlockOutputs(final=tokens, qk=qk, vv=vv)
