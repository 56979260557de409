"""Code in the docs runs: the plugin example of docs/extending.md trains with an existing head."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.heads import DualBranchHead
from zsad.losses import ImageCrossEntropy
from zsad.registry import PROMPTS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.DOTALL)


def test_plugin_example_registers_and_trains(images):
    namespace: dict = {}
    exec(python_blocks(DOCS / "extending.md")[0], namespace)  # runs our own documentation
    try:
        prompt_cls = PROMPTS.get("mean_text")
        module = ZSADModule(TinyRandomBackbone(), prompt_cls(), DualBranchHead(), losses=[ImageCrossEntropy()])
        assert {n for n, p in module.named_parameters() if p.requires_grad} == {"prompt.offset"}
        batch = {"image": images, "mask": torch.zeros(2, 1, 64, 64), "label": torch.tensor([0, 1])}
        loss = module.training_step(batch, 0)
        loss.backward()
        assert module.prompt.offset.grad is not None
    finally:
        PROMPTS._entries.pop("mean_text", None)
