"""Every trainable parameter of every method config gets a gradient from every training step.

zsad trains with Lightning's plain `ddp` strategy (find_unused_parameters=False): DDP then expects a gradient for
every parameter that requires one, after every backward, and fails at the next step otherwise. Searching for
unused parameters each step (`ddp_find_unused_parameters_true`) costs an extra graph traversal and is only needed
when some parameter sits out a step, so this checks that none does: for each method and ablation config, one step
on a mixed batch and one on a batch without any anomaly (CoPS's anomaly center loss has no patch to pull toward
then, and must still reach its parameters, with a zero gradient). At test time DDP does not wrap the model, so
parameters that only training uses (CoPS's VAE encoder) need nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsad.cli import ZSADCLI
from zsad.config_aliases import install_loader, translate_argv

ROOT = Path(__file__).resolve().parents[2]
TRAINABLE_CONFIGS = [
    p
    for p in sorted((ROOT / "configs").glob("method/*.yaml")) + sorted((ROOT / "configs").glob("ablation/*.yaml"))
    if p.name != "winclip.yaml"  # training-free: nothing to synchronise
]
SMALL = {"dapo.yaml": ["--model.prompt.init_args.prompt_count=2"]}  # same code paths, 5x fewer text prompts


def build(config: Path, tmp_path: Path) -> ZSADCLI:
    install_loader()
    configs = [ROOT / "configs/backbone/tiny.yaml", config, ROOT / "configs/data/synthetic.yaml"]
    args = [a for c in configs for a in ("--config", str(c))]
    args += [f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.batch_size=4", *SMALL.get(config.name, [])]
    return ZSADCLI(args=translate_argv(args), run=False)


pytestmark = pytest.mark.filterwarnings("ignore:You are trying to .self.log:UserWarning")  # no trainer here


def without_anomalies(batch: dict) -> dict:
    return {**batch, "mask": torch.zeros_like(batch["mask"]), "label": torch.zeros_like(batch["label"])}


@pytest.mark.parametrize("config", TRAINABLE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_trainable_parameter_gets_a_gradient(config, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    cli = build(config, tmp_path)
    model = cli.model.train()
    batch = next(iter(cli.datamodule.train_dataloader()))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for step in (batch, without_anomalies(batch)):
        model.zero_grad(set_to_none=True)
        model.training_step(step, 0).backward()
        missing = sorted(name for name, p in trainable.items() if p.grad is None)
        assert not missing, f"{config.name}: no gradient for {missing}"
