"""Test helper for the scoring-head tests: random features of a given shape, drawn in a fixed order."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zsad.structures import Features


def random_features(
    generator: torch.Generator,
    batch: int,
    grid: tuple[int, int],
    dim: int,
    layers: Sequence[int],
    width: int | None = None,
) -> Features:
    """Random global and per-layer patch embeddings.

    The global embedding is drawn first, then each layer's tokens: callers that draw text embeddings from the same
    generator afterwards get the same numbers as before this helper existed.

    Args:
        generator: Seeded source of the numbers.
        batch: Images.
        grid: ``(rows, cols)`` of the patch grid.
        dim: Width of the global embedding.
        layers: The 1-based layers the patch tokens stand for (one ``[B, rows * cols, width]`` tensor each).
        width: Width of the patch tokens; ``None`` means ``dim`` (projected tokens).
    """
    global_embedding = torch.randn(batch, dim, generator=generator)
    patches = grid[0] * grid[1]
    tokens = tuple(torch.randn(batch, patches, dim if width is None else width, generator=generator) for _ in layers)
    return Features(global_embedding=global_embedding, patch_tokens=tokens, layers=tuple(layers), grid=grid)
