"""AnomalyCLIP: the official code (zqhang/AnomalyCLIP) against zsad's import of its released-checkpoint format.

Both sides get the same seeded random ``ViT-L-14-336-quickgelu`` weights, one TorchScript archive in OpenAI's
layout (what OpenAI ships) that the official ``AnomalyCLIP_lib.load`` reads and zsad takes as ``pretrained``. The
official prompt learner is built at the released sizes (``--depth 9 --n_ctx 12 --t_n_ctx 4``), every parameter is
moved off its initial value by seeded noise, and it is saved as ``train.py`` saves it
(``{"prompt_learner": state_dict}``). zsad then goes through its documented path only: ``zsad.importers.
import_checkpoint(file, "anomalyclip", "mvtec", out, weights=<CLIP file>)`` and ``zsad.load(out, weights=...)``.

Compared at batch 1 on the same images, each side preprocessing them itself (the official ``Dataset`` and
``get_transform``; zsad's ``Detector`` transform): the input, the global feature, the V-V patch tokens, the text
features, the image score, the patch probabilities before and after upsampling, the map before smoothing and the
final map (scipy's Gaussian, border included). Two settings of the official test script:

- ``released``: ``test.sh`` as it scores the released files (``--features_list 24``), against the imported
  checkpoint with its own preset (``configs/released/anomalyclip.yaml``);
- ``paper layers``: ``test.py``'s default ``--features_list 6 12 18 24`` (the fixed multi-layer code), against the
  same checkpoint loaded with ``configs/method/static.yaml`` (``zsad.load(out, configs=...)``, as
  ``zsad test -c ... --ckpt_path``).

Then one training batch (one anomalous and one normal image): ``train.py``'s loop body as of the current code
(``--features_list 24``, local losses x 4), composed from the official functions (``encode_image``, the prompt
learner, ``encode_text_learn``, ``compute_similarity``, ``get_similarity_map``, ``FocalLoss``, ``BinaryDiceLoss``)
because ``train()`` itself moves the labels to CUDA; against ``ZSADModule.training_step`` of the imported model:
the loss and every prompt gradient.

The official modules import ``thop`` (never called) and ``pkg_resources`` (only for ``packaging``); where those are
missing, a raising stand-in and a shim that hands out the installed ``packaging`` are installed for the import. The
official ``Dataset`` builds a normal image's zero mask in a way current Pillow refuses; that one call is bridged
(:func:`~benchmarks.parity.common.zero_masks_as_uint8`).

Usage::

    python -m benchmarks.parity.anomalyclip --src /path/to/AnomalyCLIP [--images 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from scipy.ndimage import gaussian_filter
from torch import Tensor
from torch.utils.data import default_collate

import zsad
from zsad.heads.maps import aggregate_layers, anomaly_probability, class_logits
from zsad.importers import import_checkpoint
from zsad.importers.anomalyclip import trained_state
from zsad.inference.detector import Detector, as_pil

from . import common
from .common import (
    IMAGE_SIZE,
    Comparison,
    Record,
    checked_inputs,
    default_images,
    mask_for,
    matched_gradients,
    packaging_only_pkg_resources,
    parity_parser,
    report,
    setup_note,
    stand_in,
    timed,
    training_batch_images,
    update_scaled,
    write_clip_archive,
    write_official_meta,
    zsad_items,
)

RELEASED_LAYERS = (24,)
"""``test.sh`` / ``train.sh``: ``--features_list 24``."""
PAPER_LAYERS = (6, 12, 18, 24)
"""``test.py``'s default ``--features_list``, and zsad's ``configs/method/static.yaml``."""
DPAM_LAYER = 20
"""``DPAM_replace(DPAM_layer=20)`` and ``encode_image(..., DPAM_layer=20)`` in test.py and train.py."""
DESIGN = {"Prompt_length": 12, "learnabel_text_embedding_depth": 9, "learnabel_text_embedding_length": 4}
"""The official ``AnomalyCLIP_parameters`` of the released files (``--n_ctx 12 --depth 9 --t_n_ctx 4``)."""
SIGMA = 4
TEMPERATURE = 0.07
LOCAL_LOSS_WEIGHT = 4
"""``lam`` of the current train.py."""
ROOT = Path(__file__).resolve().parents[2]
BACKBONE_CONFIG = ROOT / "configs" / "backbone" / "vit_l_14_336_openai.yaml"
PAPER_CONFIG = ROOT / "configs" / "method" / "static.yaml"
OFFICIAL_MODULES = ("AnomalyCLIP_lib", "prompt_ensemble", "loss", "utils", "dataset", "logger", "metrics", "test")
TRAINABLE = ("ctx_pos", "ctx_neg", "compound_prompts_text", "compound_prompt_projections")
"""The official prompt learner's parameters (the rest of its state is buffers)."""


# ---------------------------------------------------------------- shared inputs
def parity_images(count: int) -> list[Path]:
    """``count`` ../shared/data MVTec images, anomalous and normal in turn, so that the training batch has both."""
    every = default_images(10_000)
    anomalous = [p for p in every if mask_for(p) is not None]
    normal = [p for p in every if mask_for(p) is None]
    paired = [p for pair in zip(anomalous, normal, strict=False) for p in pair]
    mixed = paired + anomalous[len(normal) :] + normal[len(anomalous) :]
    return mixed[:count]


# ---------------------------------------------------------------- the official code, importable
@contextlib.contextmanager
def official_code(src: Path) -> Iterator[list[str]]:
    """The official checkout importable (``thop`` and ``pkg_resources`` bridged), its prints silenced; yields notes."""
    missing = [stand_in("thop"), packaging_only_pkg_resources()]
    with common.official_code(src, OFFICIAL_MODULES, missing) as notes, contextlib.redirect_stdout(io.StringIO()):
        yield notes


# ---------------------------------------------------------------- the official side
def official_arguments(folder: Path) -> argparse.Namespace:
    """What test.py's transforms and dataset read from its arguments (test.sh's values)."""
    return argparse.Namespace(image_size=IMAGE_SIZE, data_path=str(folder), dataset="mvtec", sigma=SIGMA)


def official_model(weights: Path) -> Any:
    """``AnomalyCLIP_lib.load`` of the seeded file, in eval mode, as test.py and train.py load it (on the CPU)."""
    import AnomalyCLIP_lib

    model, _ = AnomalyCLIP_lib.load(str(weights), device="cpu", design_details=DESIGN)
    return model.eval()


def seeded_prompt_learner(model: Any, seed: int) -> Any:
    """The official prompt learner at the released sizes, every parameter moved off its initial value."""
    from prompt_ensemble import AnomalyCLIP_PromptLearner

    torch.manual_seed(seed)
    learner = AnomalyCLIP_PromptLearner(model.to("cpu"), DESIGN)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in learner.parameters():
            scale = 0.02 if parameter.dim() > 1 else 0.1
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return learner


def released_file(model: Any, folder: Path, seed: int) -> Path:
    """The seeded prompt learner saved as train.py saves each epoch."""
    path = folder / "epoch_15.pth"
    torch.save({"prompt_learner": seeded_prompt_learner(model, seed).state_dict()}, path)
    return path


def official_test_model(weights: Path, checkpoint: Path) -> tuple[Any, Any]:
    """Model and prompt learner as test.py sets them up: load, prompt learner from the file, then DPAM."""
    from prompt_ensemble import AnomalyCLIP_PromptLearner

    model = official_model(weights)
    learner = AnomalyCLIP_PromptLearner(model.to("cpu"), DESIGN)
    learner.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["prompt_learner"])
    model.visual.DAPM_replace(DPAM_layer=DPAM_LAYER)
    return model, learner


def official_text_features(model: Any, learner: Any) -> Tensor:
    """test.py's text features ``[1, 2, D]`` (normalised), computed once before its loop."""
    prompts, tokenized, deep = learner(cls_id=None)
    text = model.encode_text_learn(prompts, tokenized, deep).float()
    text = torch.stack(torch.chunk(text, dim=0, chunks=2), dim=1)
    return text / text.norm(dim=-1, keepdim=True)


@torch.no_grad()
def official_image(model: Any, text: Tensor, image: Tensor, layers: Sequence[int]) -> Record:
    """test.py's loop body for one image, every intermediate kept."""
    import AnomalyCLIP_lib

    image_features, patch_features = model.encode_image(image, list(layers), DPAM_layer=DPAM_LAYER)
    global_feature = image_features
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    image_score = ((image_features @ text.permute(0, 2, 1)) / TEMPERATURE).softmax(-1)[:, 0, 1]
    record: Record = {"global feature": global_feature, "image score": image_score}
    maps = []
    for layer, patch_feature in zip(layers, patch_features, strict=True):
        record[f"patch tokens L{layer}"] = patch_feature[:, 1:]
        patch_feature = patch_feature / patch_feature.norm(dim=-1, keepdim=True)
        similarity, _ = AnomalyCLIP_lib.compute_similarity(patch_feature, text[0])
        upsampled = AnomalyCLIP_lib.get_similarity_map(similarity[:, 1:, :], IMAGE_SIZE)
        record[f"patch probabilities L{layer}"] = similarity[:, 1:, :]
        record[f"upsampled probabilities L{layer}"] = upsampled.permute(0, 3, 1, 2)
        maps.append((upsampled[..., 1] + 1 - upsampled[..., 0]) / 2.0)
    summed = torch.stack(maps).sum(dim=0)
    record["map before smoothing"] = summed
    record["final map"] = torch.stack([torch.from_numpy(gaussian_filter(m, sigma=SIGMA)) for m in summed.cpu()])
    return record


def official_training_step(model: Any, learner: Any, batch: Record) -> Record:
    """train.py's loop body on one batch (``--features_list 24``): the loss and the prompt gradients before Adam."""
    import AnomalyCLIP_lib
    from loss import BinaryDiceLoss, FocalLoss

    focal, dice = FocalLoss(), BinaryDiceLoss()
    model.eval()
    learner.train()
    learner.zero_grad(set_to_none=True)
    gt = batch["img_mask"].squeeze().clone()
    gt[gt > 0.5], gt[gt <= 0.5] = 1, 0
    with torch.no_grad():
        image_features, patch_features = model.encode_image(batch["img"], list(RELEASED_LAYERS), DPAM_layer=DPAM_LAYER)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    prompts, tokenized, deep = learner(cls_id=None)
    text = model.encode_text_learn(prompts, tokenized, deep).float()
    text = torch.stack(torch.chunk(text, dim=0, chunks=2), dim=1)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = (image_features.unsqueeze(1) @ text.permute(0, 2, 1))[:, 0, ...] / TEMPERATURE
    image_loss = F.cross_entropy(logits.squeeze(), batch["anomaly"].long())  # train.py adds .cuda()
    local_loss = 0
    for patch_feature in patch_features:
        patch_feature = patch_feature / patch_feature.norm(dim=-1, keepdim=True)
        similarity, _ = AnomalyCLIP_lib.compute_similarity(patch_feature, text[0])
        upsampled = AnomalyCLIP_lib.get_similarity_map(similarity[:, 1:, :], IMAGE_SIZE).permute(0, 3, 1, 2)
        local_loss += focal(upsampled, gt) + dice(upsampled[:, 1, :, :], gt) + dice(upsampled[:, 0, :, :], 1 - gt)
    total = LOCAL_LOSS_WEIGHT * local_loss + image_loss
    total.backward()
    gradients = {name: p.grad.detach().clone() for name, p in learner.named_parameters() if p.grad is not None}
    return {"loss": float(total), "gradients": gradients, "masks": gt}


def official_items(folder: Path, images: Sequence[Path]) -> dict[Path, Record]:
    """The official ``Dataset`` items of ``images`` (test.py's transforms), by path."""
    from dataset import Dataset
    from utils import get_transform

    write_official_meta(folder, images)
    preprocess, target_transform = get_transform(official_arguments(folder))
    dataset = Dataset(root=str(folder), transform=preprocess, target_transform=target_transform, dataset_name="mvtec")
    return {Path(entry["img_path"]): dataset[index] for index, entry in enumerate(dataset.data_all)}


def run_official(
    weights: Path, images: Sequence[Path], train_images: Sequence[Path], folder: Path, seed: int
) -> Record:
    """Everything the official code computes, and the released-format file of its seeded prompt learner."""
    checkpoint = released_file(official_model(weights), folder, seed)
    model, learner = official_test_model(weights, checkpoint)
    items = official_items(folder, images)
    with torch.no_grad():
        text = official_text_features(model, learner)
    record: Record = {"checkpoint": checkpoint, "text features": text}
    record["released"] = [official_image(model, text, items[p]["img"][None], RELEASED_LAYERS) for p in images]
    record["paper layers"] = [official_image(model, text, items[p]["img"][None], PAPER_LAYERS) for p in images]
    record["inputs"] = [items[p]["img"][None] for p in images]
    first = record["inputs"][0]
    record["seconds"] = timed(lambda: official_image(model, text, first, RELEASED_LAYERS), repeats=2)[1]
    record["training"] = official_training_step(model, learner, default_collate([items[p] for p in train_images]))
    return record


# ---------------------------------------------------------------- zsad
def zsad_detectors(checkpoint: Path, weights: Path, folder: Path, device: str) -> tuple[Path, Detector, Detector]:
    """``zsad import`` of the official file, then ``zsad.load`` with its preset and with the paper's layers."""
    out = import_checkpoint(checkpoint, "anomalyclip", "mvtec", folder / "anomalyclip_mvtec.ckpt", weights=str(weights))
    released = zsad.load(out, device, weights=str(weights), batch_size=1)
    local_weights = folder / "weights.yaml"  # as `zsad test -c ... --model.backbone.init_args.pretrained=<file>`
    local_weights.write_text(json.dumps({"model": {"backbone": {"init_args": {"pretrained": str(weights)}}}}))
    paper = zsad.load(out, device, configs=[BACKBONE_CONFIG, PAPER_CONFIG, local_weights], batch_size=1)
    return out, released, paper


@torch.no_grad()
def zsad_image(detector: Detector, image: Tensor) -> Record:
    """One preprocessed image through the loaded model, every intermediate kept."""
    module = detector.module
    features = module.extract_features({"image": image.to(detector.device)})
    scores, text = module.score(features)
    record: Record = {
        "global feature": features.global_embedding,
        "text features": text.embeddings,
        "image score": scores.image_score,
        "final map": scores.anomaly_map,
        "map before smoothing": aggregate_layers(
            [anomaly_probability(p) for p in scores.layer_probs], module.head.aggregation
        ),
    }
    for index, layer in enumerate(module.backbone.layers):
        tokens = features.dense_tokens[index]
        record[f"patch tokens L{layer}"] = tokens
        record[f"patch probabilities L{layer}"] = class_logits(tokens, text.embeddings, TEMPERATURE).softmax(-1)
        record[f"upsampled probabilities L{layer}"] = scores.layer_probs[index]
    return record


def zsad_training_step(detector: Detector, train_images: Sequence[Path]) -> Record:
    """``ZSADModule.training_step`` on zsad's own items of the training images: the loss, gradients and masks."""
    step = common.zsad_training_step(detector.module, zsad_items(train_images), str(detector.device))
    return {"loss": step["loss"], "gradients": step["gradients"], "masks": step["batch"]["mask"][:, 0].cpu()}


def run_zsad(
    checkpoint: Path, weights: Path, images: Sequence[Path], train_images: Sequence[Path], folder: Path, device: str
) -> Record:
    """Everything zsad computes through its documented path."""
    out, released, paper = zsad_detectors(checkpoint, weights, folder, device)
    inputs = [released.transform(as_pil(path))[None] for path in images]
    record: Record = {"inputs": inputs, "provenance": torch.load(out, weights_only=True)["zsad"]["provenance"]}
    record["released"] = [zsad_image(released, image) for image in inputs]
    record["paper layers"] = [zsad_image(paper, image) for image in inputs]
    first = inputs[0]
    record["seconds"] = timed(lambda: released.score_batch(first), repeats=2)[1]
    record["training"] = zsad_training_step(released, train_images)
    record["prompt"] = released.module.prompt
    return record


# ---------------------------------------------------------------- the comparison
FEATURE_TOLERANCE = 1e-4
"""Features: the largest difference relative to the tensor's largest magnitude (an rtol that near-zero entries
cannot inflate)."""
MAP_TOLERANCE = 1e-5
"""Scores, probabilities and maps: absolute."""
GRADIENT_TOLERANCE = 1e-4
"""Gradients, relative to each parameter's largest gradient entry."""
FP16_GRADIENT_TOLERANCE = 2.0**-10
"""The deep prompts' gradients, relative to the largest entry: both codes round each prompt's copy of a deep
prompt to fp16, so each copy's gradient is rounded to fp16 (relative spacing up to 2^-10) before the sum over
the two prompts, and float32 differences of 1e-6 upstream flip a rounding here and there."""
FLIPPED_SHARE_TOLERANCE = 0.01
"""Largest share of deep-prompt gradient entries allowed beyond :data:`GRADIENT_TOLERANCE`: isolated fp16 rounding
flips, not a systematic difference."""


def is_feature(name: str) -> bool:
    """Whether a stage compares features (scale-relative bound) rather than probabilities or maps."""
    return name.startswith(("global feature", "patch tokens", "text features"))


def fill_images(comparison: Comparison, setting: str, official: Sequence[Record], ours: Sequence[Record]) -> None:
    """Per-image stages of one setting, in pipeline order."""
    names = [name for name in official[0] if name in ours[0]]
    for theirs, mine in zip(official, ours, strict=True):
        for name in names:
            label = f"{setting}: {name}"
            if is_feature(name):
                stage = comparison.stage(f"{label} (/ max |x|)", FEATURE_TOLERANCE)
                update_scaled(stage, mine[name], theirs[name].reshape(mine[name].shape))
            else:
                stage = comparison.stage(label, MAP_TOLERANCE)
                stage.update(mine[name].cpu(), theirs[name].reshape(mine[name].shape))


def fill_training(comparison: Comparison, official: Record, ours: Record) -> None:
    """The training masks, loss and every prompt gradient, mapped by the importer's own map."""
    comparison.stage("training: masks", 0.0).update(ours["masks"], official["masks"].reshape(ours["masks"].shape))
    comparison.stage("training: loss (relative)", MAP_TOLERANCE, relative=True).update(
        torch.tensor(ours["loss"]), torch.tensor(official["loss"])
    )
    official_gradients = trained_state(official["gradients"], ours["prompt"])
    for name, mine, theirs in matched_gradients(official_gradients, ours["gradients"]):
        if name == "prompt.deep":
            stage = comparison.stage(
                f"training: gradient {name} (/ max |grad|; fp16 per prompt)", FP16_GRADIENT_TOLERANCE
            )
            update_scaled(stage, mine, theirs)
            scale = float(theirs.abs().max()) or 1.0
            flipped = ((mine - theirs).abs() / scale > GRADIENT_TOLERANCE).float().mean()
            share = f"training: share of {name} gradient entries beyond {GRADIENT_TOLERANCE:g} (fp16 rounding flips)"
            comparison.stage(share, FLIPPED_SHARE_TOLERANCE).update(flipped, torch.zeros(()))
        else:
            stage = comparison.stage(f"training: gradient {name} (/ max |grad|)", GRADIENT_TOLERANCE)
            update_scaled(stage, mine, theirs)
    unused = sorted(k for k in official["gradients"] if k.startswith("compound_prompt_projections"))
    if unused:
        raise ValueError(f"the official projections got gradients ({unused[:2]}); they should be unused")


def compare(src: Path, images: Sequence[Path], *, seed: int = 0, device: str = "cpu") -> Comparison:
    """Run the official AnomalyCLIP code and zsad's import of its released format on the same weights and images.

    Args:
        src: A checkout of zqhang/AnomalyCLIP (imported unchanged; the released .pth files need not be present).
        images: MVTec-layout test images (masks found beside them); 2 to 4 keep a CPU run to minutes.
        seed: Seed of the CLIP weights and of the official prompt weights.
        device: Where zsad runs; the official code runs on the CPU (its test.py would pick CUDA when present).

    Returns:
        The comparison, with the time per image of both test paths (model only: preprocessed image in, final
        518 px map out; text features encoded once before, as test.py does).
    """
    src, images = checked_inputs("anomalyclip", src, images)
    train_images = training_batch_images(images)
    comparison = Comparison("anomalyclip")
    with tempfile.TemporaryDirectory(prefix="anomalyclip_parity_") as tmp:
        folder = Path(tmp)
        weights = write_clip_archive(folder / "clip_openai_torchscript.pt", seed)
        with official_code(src) as environment_notes:
            official = run_official(weights, images, train_images, folder, seed)
        ours = run_zsad(official["checkpoint"], weights, images, train_images, folder, device)
    for official_input, our_input in zip(official["inputs"], ours["inputs"], strict=True):
        comparison.stage("input (preprocessed image)", MAP_TOLERANCE).update(our_input, official_input)
    text_stage = comparison.stage("text features (/ max |x|)", FEATURE_TOLERANCE)
    update_scaled(text_stage, ours["released"][0]["text features"], official["text features"])
    for setting in ("released", "paper layers"):
        fill_images(comparison, setting, official[setting], ours[setting])
    fill_training(comparison, official["training"], {**ours["training"], "prompt": ours["prompt"]})
    comparison.seconds_official, comparison.seconds_zsad = official["seconds"], ours["seconds"]
    comparison.notes += [
        setup_note(src, images, seed, device, train_images),
        "released: test.sh (--features_list 24) vs the imported checkpoint (configs/released/anomalyclip.yaml); "
        "paper layers: test.py's default --features_list 6 12 18 24 vs the same checkpoint with configs/method/"
        "static.yaml",
        f"zsad import recorded provenance {ours['provenance']['method']} / trained on "
        f"{[a['dataset'] for a in ours['provenance']['aux']]} / preset {ours['provenance']['preset']}",
        "(/ max |x|) stages are bounded by max abs diff / max |official|; their max rel diff column is per element "
        "and blows up on entries near zero",
        "training: train.py's loop body (features_list 24, lam 4) from the official functions, labels kept on the "
        "CPU; zsad: ZSADModule.training_step of the imported model",
    ]
    comparison.notes += environment_notes
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table; exit status 1 when a stage is out of bounds."""
    args = parity_parser(__doc__ or "", "AnomalyCLIP", " (half normal)").parse_args(argv)
    return report(compare(args.src, parity_images(args.images), seed=args.seed, device=args.device))


if __name__ == "__main__":
    sys.exit(main())
