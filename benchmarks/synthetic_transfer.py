"""Synthetic transfer benchmark: train each method on some synthetic categories, test on held-out ones.

Every model is built from the shipped YAML configs (the tiny random backbone first, then the method config), the
same way `zsad fit` builds it. For each method and ablation, and each seed, the held-out image and pixel AUROC
are measured before training (the random prompt initialisation) and after; the table shows mean ± std over seeds.

With a random tiny CLIP this measures mechanics (does training transfer to unseen categories?), never the
quality of a method on real data. Defects are ``marked`` by default: every defect is repainted in one colour that
all categories share (``SyntheticDataModule(defect_look="marked")``). Natural defects take their colours from the
product, so what they share across categories is semantic, which a random backbone cannot see: with them, training
fits the auxiliary categories (their pixel AUROC rises to 0.7) but the held-out ones stay at chance, and any
"gain" is a below-chance random start drifting back to 0.5. ``--defect-look natural`` measures that setting.

    python benchmarks/synthetic_transfer.py                      # every method and ablation, 3 seeds
    python benchmarks/synthetic_transfer.py --methods static cops --seeds 0 --epochs 3
    python benchmarks/synthetic_transfer.py --defect-look natural
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L  # noqa: N812

from zsad.data.synthetic import DEFECT_LOOKS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
METHODS = {
    "static": "method/static.yaml",
    "static+topk": "ablation/static_topk.yaml",
    "cops": "method/cops.yaml",
    "cops-no-ests": "ablation/cops_no_ests.yaml",
    "cops-no-icts": "ablation/cops_no_icts.yaml",
    "cops-no-saga": "ablation/cops_no_saga.yaml",
    "vip": "method/vip.yaml",
    "vip-no-ica": "ablation/vip_no_ica.yaml",
    "vip-no-fgp": "ablation/vip_no_fgp.yaml",
    "dapo": "method/dapo.yaml",
}
METRICS = ("image_auroc", "pixel_auroc")


@dataclass
class Run:
    """Held-out metrics of one method and seed, before and after training."""

    method: str
    seed: int
    before: dict[str, float]
    after: dict[str, float]


def build(
    method_config: str, cache: Path, extra: list[str], defect_look: str = "marked"
) -> tuple[L.LightningModule, L.LightningDataModule]:
    """Model and synthetic datamodule from the tiny backbone, the method config and the synthetic data config."""
    from zsad.cli import ZSADCLI
    from zsad.config_aliases import install_loader, translate_argv

    install_loader()
    args = ["--config", str(CONFIGS / "backbone/tiny.yaml"), "--config", str(CONFIGS / method_config),
            "--config", str(CONFIGS / "data/synthetic.yaml"), f"--data.init_args.root={cache}",
            f"--data.init_args.defect_look={defect_look}", *extra]  # fmt: skip
    cli = ZSADCLI(args=translate_argv(args), run=False)
    return cli.model, cli.datamodule


def held_out_metrics(trainer: L.Trainer, model: L.LightningModule, data: L.LightningDataModule) -> dict[str, float]:
    """Mean image and pixel AUROC over the held-out categories."""
    trainer.test(model, datamodule=data, verbose=False)
    return {name: model.test_results.mean[name] for name in METRICS}


def run_method(method: str, seed: int, epochs: int, cache: Path, workdir: Path, defect_look: str = "marked") -> Run:
    """Build with ``seed``, test, train ``epochs`` epochs on the auxiliary categories, test again."""
    # the method configs set seed_everything themselves, so the seed must go through the CLI
    extra = [f"--seed_everything={seed}", "--model.pixel_metrics=[pixel_auroc]"]
    model, data = build(METHODS[method], cache / defect_look, extra, defect_look)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(workdir),
    )  # fmt: skip
    before = held_out_metrics(trainer, model, data)
    trainer.fit(model, datamodule=data)
    after = held_out_metrics(trainer, model, data)
    return Run(method, seed, before, after)


def summarise(values: list[float]) -> str:
    """``mean ± std`` in percent (std over seeds; 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):5.1f} ± {100 * std:4.1f}"


def table(runs: list[Run]) -> str:
    """One row per method: held-out image and pixel AUROC before and after training, and the gain."""
    header = ["method", "seeds", "I-AUROC before", "I-AUROC after", "P-AUROC before", "P-AUROC after"]
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        row = [method, str(len(mine))]
        for name in METRICS:
            row += [summarise([r.before[name] for r in mine]), summarise([r.after[name] for r in mine])]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Run]:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--defect-look", choices=DEFECT_LOOKS, default="marked", help="see the module docstring")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        cache = Path(workdir) / "synthetic"
        for method in args.methods:
            for seed in args.seeds:
                runs.append(run_method(method, seed, args.epochs, cache, Path(workdir), args.defect_look))
                print(f"{method} seed {seed}: before {runs[-1].before} after {runs[-1].after}", file=sys.stderr)
    print(
        f"Synthetic transfer ({args.defect_look} defects), tiny random CLIP, {args.epochs} epochs, held-out "
        "categories (mean ± std over seeds)"
    )
    print(table(runs))
    return runs


if __name__ == "__main__":
    main()
