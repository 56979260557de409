"""Test helper shared by the module and prompt tests: a few plain optimisation steps on one batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zsad import ZSADModule


def train_on_batch(
    module: ZSADModule,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, Any],
    steps: int,
    check_gradients: bool = False,
) -> list[float]:
    """Take ``steps`` optimizer steps of ``module.training_step`` on the same batch.

    Args:
        module: The module to train (left in whatever mode it is in).
        optimizer: Its optimizer, usually ``module.configure_optimizers()``.
        batch: The training batch, reused at every step.
        steps: How many steps.
        check_gradients: After the first backward pass, assert that every trainable parameter has a non-zero
            gradient (a parameter the loss does not reach would otherwise train silently to nothing).

    Returns:
        Each step's loss, before that step's update.
    """
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        if check_gradients and step == 0:
            for name, parameter in module.named_parameters():
                if parameter.requires_grad:
                    assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name
        optimizer.step()
        losses.append(float(loss))
    return losses
