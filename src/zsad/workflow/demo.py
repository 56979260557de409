"""``zsad demo``: train prompts on synthetic categories, test zero-shot on held-out ones, write a report.

The default is the real reference setting (OpenAI ViT-L/14@336 at 518 px, downloaded by open_clip).
``--backbone tiny-random`` runs fully offline on a CPU in about a minute, with numbers that mean nothing; its
defects are ``marked`` by default (one colour shared by all categories), the only kind of defect whose cues a
random backbone can carry over to held-out categories.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import open_clip
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from zsad.backbones import Backbone, CLIPBackbone, TinyRandomBackbone
from zsad.backbones.loading import WEIGHTS_REMEDY, check_model_name
from zsad.data.synthetic import DEFECT_LOOKS, SyntheticDataModule
from zsad.errors import ConfigError, WeightsUnavailableError
from zsad.heads import DualBranchHead
from zsad.losses import DiceLoss, FocalLoss, ImageCrossEntropy
from zsad.metrics.results import Results, format_table, percent
from zsad.module import ZSADModule
from zsad.prompts import StaticPrompt
from zsad.viz.pictures import save_pictures
from zsad.workflow.outputs import check_output_folder
from zsad.workflow.results import environment, write_results

TINY = "tiny-random"
RANDOM_WARNING = (
    "RANDOM WEIGHTS: this demo ran on a tiny randomly initialised CLIP. It shows that the pipeline works "
    "end to end; its metrics say nothing about any method."
)


DEMO_REMEDY = (
    "Remedies: (1) where you have internet, download the weights (OpenAI's ViT-L-14-336px.pt is what `clip.load` "
    "caches in ~/.cache/clip) and give that file with `--weights FILE`; or (2) for a smoke run with meaningless "
    f"numbers, use the tiny random backbone: `zsad demo --backbone {TINY}`."
)
"""The remedies of :data:`~zsad.backbones.loading.WEIGHTS_REMEDY` in ``zsad demo``'s own options."""

DEMO_OUTPUTS = ("checkpoints", "overlays")
"""Folders of ``--out`` that each demo run replaces whole (``metrics.json`` is replaced atomically)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of ``zsad demo``."""
    parser = argparse.ArgumentParser(prog="zsad demo", description=__doc__)
    parser.add_argument(
        "--backbone",
        default="ViT-L-14-336-quickgelu",
        help=f"open_clip model name, or '{TINY}' for the offline smoke backbone",
    )
    parser.add_argument("--pretrained", default="openai", help="pretrained tag for open_clip (default: openai)")
    parser.add_argument("--weights", default=None, help="local checkpoint file; overrides --pretrained")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: 15, tiny: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pictures", type=int, default=4, help="overlay pictures per test category")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument(
        "--defect-look",
        choices=DEFECT_LOOKS,
        default=None,
        help=f"synthetic defects (default: marked with '{TINY}', natural otherwise)",
    )
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad option before anything is removed, downloaded or trained.

    Raises:
        ConfigError: An unknown backbone (with close names, ``tiny-random`` included), ``--epochs`` below 1,
            ``--pictures`` below 0, or an ``--out`` that cannot be written.
    """
    if args.backbone != TINY:
        try:
            check_model_name(args.backbone)
        except ConfigError:
            known = [TINY, *open_clip.list_models()]
            close = difflib.get_close_matches(args.backbone, known, n=4)
            hint = f" Did you mean {', '.join(repr(name) for name in close)}?" if close else ""
            raise ConfigError(
                f"--backbone '{args.backbone}' is neither '{TINY}' (the offline smoke backbone) nor an open_clip "
                f"model.{hint} See `open_clip.list_models()` for the {len(known) - 1} open_clip names."
            ) from None
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs {args.epochs} must be at least 1.")
    if args.pictures < 0:
        raise ConfigError(f"--pictures {args.pictures} must be 0 or more.")
    check_output_folder(args.out)


def build_backbone(args: argparse.Namespace) -> Backbone:
    """The AnomalyCLIP feature setting (layers 6/12/18/24, V-V from 6, no ln_post on the global feature)."""
    common: dict[str, Any] = {"layers": (6, 12, 18, 24), "vv_start_layer": 6, "global_ln_post": False}
    if args.backbone == TINY:
        return TinyRandomBackbone(**common)
    pretrained = args.weights or args.pretrained
    return CLIPBackbone(
        model_name=args.backbone,
        pretrained=pretrained,
        image_size=518,
        force_quick_gelu=args.weights is not None,
        **common,
    )


def build_module(backbone: Backbone, pictures: int) -> ZSADModule:
    """AnomalyCLIP-style static prompts, dual-branch head and its losses."""
    return ZSADModule(
        backbone=backbone,
        prompt=StaticPrompt(),
        head=DualBranchHead(),
        losses=[ImageCrossEntropy(), FocalLoss(weight=4.0), DiceLoss(weight=4.0)],
        max_pictures=pictures,
    )


def comparison_table(before: Results, after: Results) -> str:
    """Mean metrics before and after training, in percent."""
    rows = [[name, percent(before.mean.get(name)), percent(value)] for name, value in after.mean.items()]
    return format_table(["metric", "untrained", "trained"], rows)


def demo_main(argv: list[str]) -> int:
    """Run the demo; returns the exit status.

    Raises:
        ConfigError: A bad option (:func:`check_arguments`), before anything is written.
    """
    args = parse_args(argv)
    check_arguments(args)
    out = Path(args.out)
    tiny = args.backbone == TINY
    epochs = args.epochs if args.epochs is not None else (5 if tiny else 15)
    defect_look = args.defect_look or ("marked" if tiny else "natural")
    L.seed_everything(args.seed, workers=True, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        backbone = build_backbone(args)
    except WeightsUnavailableError as error:  # name the remedies in this command's options
        raise WeightsUnavailableError(str(error).replace(WEIGHTS_REMEDY, DEMO_REMEDY)) from error
    model = build_module(backbone, args.pictures)
    # only now that the model is built (weights found): an earlier demo's checkpoints and pictures would sit beside
    # (and outlive) this one's, but a bad option must not remove them
    for stale in DEMO_OUTPUTS:
        shutil.rmtree(out / stale, ignore_errors=True)
    data = SyntheticDataModule(
        root=str(out / "data"),
        image_size=backbone.image_size[0],
        generated_size=64 if tiny else 256,
        seed=args.seed,
        defect_look=defect_look,
        batch_size=8,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=args.accelerator,
        devices=1,
        default_root_dir=str(out),
        logger=CSVLogger(str(out), name="logs"),
        log_every_n_steps=1,
        callbacks=[ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True)],
    )
    checkpoint = trainer.checkpoint_callback
    trainer.test(model, datamodule=data, verbose=False)
    before = model.test_results
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    after = model.test_results
    document = {
        "warning": RANDOM_WARNING if tiny else None,
        "protocol": data.protocol(),
        "untrained": before.to_dict(),
        "trained": after.to_dict(),
        "model": model.component_specs(),
        "epochs": epochs,
        "seed": args.seed,
        "defect_look": defect_look,
        "environment": environment(),
    }
    write_results(out / "metrics.json", document)
    pictures = save_pictures(after.pictures, out / "overlays")
    banner = f"\n{'!' * 100}\n{RANDOM_WARNING}\n{'!' * 100}\n" if tiny else ""
    print(
        f"{banner}\nHeld-out categories {data.targets()} (trained on {data.aux_categories}; {defect_look} defects):\n"
    )
    print(after.table())
    print(f"\nMean over held-out categories, before and after training:\n{comparison_table(before, after)}")
    print(
        f"\nWrote {out / 'metrics.json'}, {len(pictures)} overlays in {out / 'overlays'}, "
        f"checkpoint {checkpoint.last_model_path}.{banner}"
    )
    return 0
