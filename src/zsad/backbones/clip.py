"""Frozen open_clip backbone with multi-layer, V-V (DPAM) and resized-input features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import open_clip
import torch
from torch import Tensor, nn

from zsad.backbones.base import Backbone
from zsad.backbones.loading import create_clip, create_tokenizer
from zsad.backbones.text import DeepPromptHook, TextEncoder
from zsad.backbones.vision import embed_patches, interpolate_pos_embed, run_blocks
from zsad.errors import ConfigError
from zsad.registry import BACKBONES
from zsad.structures import Features

PosInterpolation = Literal["bilinear", "bicubic", "open_clip"]
"""Position-table resize: ``F.interpolate`` bilinear or bicubic (``align_corners=False``, no antialias), or
``"open_clip"``, open_clip's own ``resize_pos_embed`` (bicubic with antialias), see
:func:`~zsad.backbones.vision.interpolate_pos_embed`."""


@BACKBONES.register("clip")
class CLIPBackbone(Backbone):
    """Any open_clip ViT, frozen, giving patch tokens per layer, V-V tokens and the global feature in one pass.

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-L-14-336-quickgelu"``, or ``"from-weights"`` to build the
            architecture that the ``pretrained`` file describes (any CLIP size, no registered config).
        pretrained: Pretrained tag (``"openai"``), local weight file (OpenAI TorchScript archive such as
            ``ViT-L-14-336px.pt``, OpenAI or open_clip state dict, ``.safetensors``), or ``None`` for explicit
            random weights.
        image_size: Input side in pixels; ``None`` keeps the pretraining size. 518 is the ZSAD standard for
            ViT-L/14@336 (a 37 x 37 grid). Must be divisible by the patch size.
        layers: 1-based transformer layers whose patch tokens to return; ``None`` means the last layer.
        vv_start_layer: First 1-based block of the V-V (DPAM) path, or ``None`` to disable it. AnomalyCLIP uses
            6 (blocks 6-24), CoPS 1 (all blocks).
        global_ln_post: Apply ``ln_post`` to the CLS token before ``proj`` for the global feature. Standard CLIP
            does; AnomalyCLIP, CoPS and ViP2-CLIP do not (their reported numbers need ``False``).
        project_patches: Apply ``ln_post`` and ``proj`` to patch tokens (``False`` returns raw width-W tokens,
            as DAPO's per-layer linear maps expect).
        pos_interpolation: How position embeddings are resized for a new grid. The AnomalyCLIP family uses
            bilinear (``align_corners=False``); DAPO, through open_clip's ``force_image_size``, ``"open_clip"``
            (open_clip's own bicubic resize with antialias).
        force_quick_gelu: Use QuickGELU. OpenAI-format files and the ``openai`` tag get it anyway; set it for
            OpenAI weights converted to open_clip's layout.
        cache_dir: open_clip download cache.
    """

    def __init__(
        self,
        model_name: str = "ViT-L-14-336-quickgelu",
        pretrained: str | None = "openai",
        image_size: int | None = 518,
        layers: Sequence[int] | None = None,
        vv_start_layer: int | None = None,
        global_ln_post: bool = True,
        project_patches: bool = True,
        pos_interpolation: PosInterpolation = "bilinear",
        force_quick_gelu: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        model = create_clip(model_name, pretrained, force_quick_gelu=force_quick_gelu, cache_dir=cache_dir)
        self.model_name = model_name
        self.visual = model.visual
        self.text = TextEncoder(model, create_tokenizer(model_name, model))
        self._check_supported()
        depth = len(self.visual.transformer.resblocks)
        self.layers = tuple(layers) if layers else (depth,)
        self.vv_start_layer = vv_start_layer
        self.global_ln_post = global_ln_post
        self.project_patches = project_patches
        self._validate_layers(depth)
        self.patch_size = tuple(self.visual.patch_size)
        self.image_size = self._validate_image_size(image_size)
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.embed_dim = int(self.visual.output_dim)
        self.vision_width = int(self.visual.transformer.width)
        pos_embed = interpolate_pos_embed(
            self.visual.positional_embedding.detach(), tuple(self.visual.grid_size), self.grid, pos_interpolation
        )
        self.register_buffer("pos_embed", pos_embed, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _check_supported(self) -> None:
        visual = self.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer):
            raise ConfigError(f"'{self.model_name}' has a {type(visual).__name__} image tower; zsad needs a ViT.")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ConfigError(f"'{self.model_name}' pools without the CLS token; zsad needs CLS-token ViTs.")
        if not isinstance(visual.transformer.resblocks[0].attn, nn.MultiheadAttention):
            raise ConfigError(f"'{self.model_name}' uses custom attention blocks, which the V-V path cannot reuse.")

    def _validate_layers(self, depth: int) -> None:
        bad = [layer for layer in self.layers if not 1 <= layer <= depth]
        if bad:
            raise ConfigError(
                f"layers={list(self.layers)}: {bad} outside 1..{depth}, the depth of '{self.model_name}'. "
                f"Use 1-based layer indices up to {depth}."
            )
        start = self.vv_start_layer
        if start is not None:
            if not 1 <= start <= depth:
                raise ConfigError(f"vv_start_layer={start} is outside 1..{depth} for '{self.model_name}'.")
            early = [layer for layer in self.layers if layer < start]
            if early:
                raise ConfigError(
                    f"layers {early} come before vv_start_layer={start}, where the V-V path does not exist yet. "
                    f"Lower vv_start_layer or drop those layers."
                )

    def _validate_image_size(self, image_size: int | None) -> tuple[int, int]:
        pretraining = tuple(self.visual.image_size)
        if image_size is not None and (
            not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < self.patch_size[0]
        ):
            raise ConfigError(
                f"image_size={image_size!r} must be a positive multiple of the patch size {self.patch_size[0]} of "
                f"'{self.model_name}', or null for its pretraining size {pretraining[0]}."
            )
        size = pretraining if image_size is None else (image_size, image_size)
        if size[0] % self.patch_size[0] or size[1] % self.patch_size[1]:
            valid = [
                n * self.patch_size[0]
                for n in range(max(1, size[0] // self.patch_size[0] - 1), size[0] // self.patch_size[0] + 2)
            ]
            raise ConfigError(
                f"image_size={size[0]} is not divisible by the patch size {self.patch_size[0]} of "
                f"'{self.model_name}'. Nearby valid sizes: {valid}."
            )
        return size

    def forward(self, images: Tensor, deep_prompts: DeepPromptHook | None = None) -> Features:
        """Extract :class:`~zsad.structures.Features` from normalised ``[B, 3, H, W]`` images.

        Args:
            images: Normalised images at ``image_size``.
            deep_prompts: Optional learned visual tokens (DAPO); the features then depend on trainable parameters.
        """
        if tuple(images.shape[-2:]) != self.image_size:
            raise ConfigError(
                f"Images are {tuple(images.shape[-2:])} but the backbone expects {self.image_size}. Set the "
                f"datamodule's image_size to the backbone's image_size."
            )
        tokens = embed_patches(self.visual, images.to(self.pos_embed.dtype), self.pos_embed)
        outputs = run_blocks(self.visual.transformer.resblocks, tokens, self.layers, self.vv_start_layer, deep_prompts)
        cls_token = outputs.final[:, 0]
        if self.global_ln_post:
            cls_token = self.visual.ln_post(cls_token)
        vv_tokens = None
        if self.vv_start_layer is not None:
            vv_tokens = tuple(self._patch_output(outputs.vv[layer]) for layer in self.layers)
        return Features(
            global_embedding=cls_token @ self.visual.proj,
            patch_tokens=tuple(self._patch_output(outputs.qk[layer]) for layer in self.layers),
            layers=self.layers,
            grid=self.grid,
            vv_tokens=vv_tokens,
        )

    def _patch_output(self, tokens: Tensor) -> Tensor:
        # the patches are the last rows x cols tokens: CLS and any inserted visual prompt tokens come first
        patches = tokens[:, -self.grid[0] * self.grid[1] :]
        if not self.project_patches:
            return patches
        return self.visual.ln_post(patches) @ self.visual.proj

    @torch.no_grad()
    def reference_global_embedding(self, images: Tensor) -> Tensor:
        """open_clip's own ``encode_image`` output (with ``ln_post``), for checks at the pretraining size."""
        return self.visual(images)


@BACKBONES.register("tiny-random")
class TinyRandomBackbone(CLIPBackbone):
    """Tiny random CLIP (``zsad-tiny``, 64 px) for tests and offline smoke runs; its numbers mean nothing."""

    def __init__(
        self,
        model_name: str = "zsad-tiny",
        pretrained: str | None = None,
        image_size: int | None = 64,
        layers: Sequence[int] | None = (6, 12, 18, 24),
        vv_start_layer: int | None = None,
        global_ln_post: bool = True,
        project_patches: bool = True,
        pos_interpolation: PosInterpolation = "bilinear",
        force_quick_gelu: bool = False,
        cache_dir: str | None = None,
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
