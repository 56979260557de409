"""DAPO: the official code (boschresearch/defect-aware-prompt-optimization) against zsad's ``dapo`` preset.

Both sides get the same seeded random ``ViT-L-14-336-quickgelu`` weights (an OpenAI-format file), and zsad gets the
official side's seeded prompt weights through its documented path: the official ``train.py`` writes them
(``Trainer.save_checkpoint``), ``zsad import`` (:func:`zsad.importers.import_checkpoint` with
:mod:`zsad.importers.dapo`) binds them to the preset (``configs/backbone/vit_l_14_336_openai.yaml`` +
``configs/method/dapo.yaml``) and ``zsad.load`` loads it. Each side preprocesses the images itself (the official
``Dataset`` and transforms; zsad's ``AnomalyDataset``). Compared at batch 1: input, image features, raw patch
tokens per layer, text features, image logits and scores, patch softmax per layer, upsampled maps per layer,
final maps (the official ``Tester.forward_pass``), defect-type argmax; then one training batch (the official
``Trainer.train_epoch`` on one batch against ``ZSADModule.training_step``): loss and every gradient. The training
step runs with fewer context sets (see :func:`compare`); its checkpoint goes through the importer's ``read`` and
``convert`` directly, since ``zsad import`` binds a file to the preset's own 10 sets.

The official modules import ``cv2``, ``tabulate`` and ``skimage`` at the top but use them only for pictures,
tables and AUPRO; where those packages are missing, stand-ins that raise when called are installed for the import.
The official ``Dataset`` builds a normal image's zero mask in a way current Pillow refuses; that one call is bridged
(:func:`~benchmarks.parity.common.zero_masks_as_uint8`).

Usage::

    python -m benchmarks.parity.dapo --src /path/to/defect-aware-prompt-optimization [--images 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

import zsad
from zsad.heads.maps import class_logits
from zsad.heads.multiclass import defect_class_map
from zsad.importers import import_checkpoint
from zsad.importers.dapo import convert, read
from zsad.inference.configs import module_from_configs
from zsad.module import ZSADModule

from . import common
from .common import (
    CLIP_MODEL,
    IMAGE_SIZE,
    Comparison,
    Record,
    checked_inputs,
    default_images,
    matched_gradients,
    parity_parser,
    quiet,
    report,
    seeded_clip_state_dict,
    setup_note,
    silenced,
    stand_in,
    timed,
    training_batch_images,
    update_scaled,
    write_official_meta,
    zsad_items,
    zsad_training_step,
)

LAYERS = (6, 12, 18, 24)
TEMPERATURE = 0.07
ROOT = Path(__file__).resolve().parents[2]
PRESET = (ROOT / "configs" / "backbone" / "vit_l_14_336_openai.yaml", ROOT / "configs" / "method" / "dapo.yaml")
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
OFFICIAL_MODULES = ("open_clip", "train", "test", "dataset", "loss", "metrics", "logger", "visualization")
UNUSED_IMPORTS = ("cv2", "tabulate", "skimage")
"""Packages the official modules import at the top but never use on the compared path."""


def progress(message: str) -> None:
    """One progress line on stderr with the peak memory so far (a CPU run takes minutes)."""
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"[dapo parity] {message} (peak RSS so far {peak_gb:.1f} GB)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- shared inputs
def write_clip_weights(folder: Path, seed: int) -> tuple[Path, Path]:
    """The seeded CLIP weights as an OpenAI-format file (zsad) and as the same tensors without the meta entries.

    open_clip drops OpenAI's three meta entries when it reads OpenAI's own archives; the official code reads a
    plain state dict strictly, so it gets the file without them.
    """
    state = seeded_clip_state_dict(CLIP_MODEL, seed)
    openai_file, plain_file = folder / "clip_openai.pt", folder / "clip_plain.pt"
    torch.save(state, openai_file)
    torch.save({k: v for k, v in state.items() if k not in OPENAI_META_KEYS}, plain_file)
    return openai_file, plain_file


@contextlib.contextmanager
def official_code(src: Path) -> Iterator[list[str]]:
    """The official checkout importable, its vendored ``open_clip`` included; the installed open_clip is restored.

    Yields notes on what was bridged for this environment (stand-ins, Pillow), filled when the block ends.
    """
    installed = {k: v for k, v in sys.modules.items() if k == "open_clip" or k.startswith("open_clip.")}
    try:
        missing = [stand_in(name) for name in UNUSED_IMPORTS]
        with common.official_code(src, OFFICIAL_MODULES, missing) as notes:
            yield notes
    finally:
        for name in [k for k in sys.modules if k == "open_clip" or k.startswith("open_clip.")]:
            del sys.modules[name]
        sys.modules.update(installed)


# ---------------------------------------------------------------- the official side
def official_arguments(
    src: Path, weights: Path, folder: Path, batch_size: int, seed: int, prompt_count: int
) -> argparse.Namespace:
    """The arguments of the official train.py and test.py (their defaults, with the seeded weight file).

    ``folder`` takes the checkpoints; the data (``meta.json``) is read from its parent.
    """
    return argparse.Namespace(
        model_name=CLIP_MODEL,
        pretrained=str(weights),
        image_size=IMAGE_SIZE,
        dataset="mvtec",
        train_data_path=str(folder.parent),
        test_data_path=str(folder.parent),
        model_configs=str(src / "open_clip" / "model_configs"),
        depth=24,
        prefix_token_cnt=4,
        feature_layers=list(LAYERS),
        text_depth=12,
        normal_token_cnt=5,
        abnormal_token_cnt=5,
        prompt_count=prompt_count,
        layer_token_cnt=4,
        epoch=1,
        learning_rate=1e-3,
        batch_size=batch_size,
        seed=seed,
        checkpoint_dir=str(folder),
        checkpoint_interval=1,
        save_path=str(folder / "results"),
        defect_types=None,
        metrics="image_pixel_level",
    )


def run_official(
    src: Path,
    weights: Path,
    images: Sequence[Path],
    train_images: Sequence[Path],
    folder: Path,
    seed: int,
    train_prompt_count: int,
) -> Record:
    """Everything the official code computes, as plain tensors, and its checkpoints in train.py's format.

    One CLIP model serves both runs: ``create_model_components`` builds it with the training step's prompt learner,
    and the ``Tester`` builds its own learnable parts (the preset's 10 context sets) on it.
    """
    # the official modules are importable only inside official_code()
    import test as official_test
    import train as official_train
    from loss import BinaryDiceLoss, FocalLoss

    write_official_meta(folder, images)
    train_args = official_arguments(src, weights, folder / "train", len(train_images), seed, train_prompt_count)
    torch.manual_seed(seed)
    components = official_train.create_model_components(train_args)
    loader = official_train.create_data_loaders(train_args, components["preprocessor"])["train_loader"]
    items = {Path(item["img_path"]): item for item in loader.dataset}
    losses = {"focal_loss": FocalLoss(), "dice_loss": BinaryDiceLoss()}
    trainer = official_train.Trainer(train_args, components, {"train_loader": []}, losses, train_args.checkpoint_dir)
    quiet(trainer.save_checkpoint)  # epoch_0.pth: the seeded prompt weights, as train.py writes them

    test_args = official_arguments(src, weights, folder / "test", 1, seed, 10)
    tester = official_test.Tester(test_args)
    tester.model_components = {k: components[k] for k in ("model", "preprocessor", "tokenizer")}
    tester.learnable_components = tester.setup_learnable_components()
    saved_parts = {"model": components["model"], **tester.learnable_components}
    test_checkpoint = save_like_train_py(official_train, test_args, saved_parts, losses)
    record: Record = {"checkpoint": test_checkpoint, "notes": [load_into_tester(tester, test_checkpoint)]}
    progress("official model and checkpoints ready")
    record["images"] = [official_inference(tester, items[path]["img"][None]) for path in images]
    first = items[images[0]]["img"][None]
    with torch.no_grad():  # as Tester.process_image calls it
        record["seconds"] = timed(lambda: quiet(tester.forward_pass, first), repeats=1)[1]
    progress("official inference done")

    batch = default_collate([items[path] for path in train_images])
    training = official_training_step(trainer, batch)
    record["training"] = {**training, "checkpoint": Path(train_args.checkpoint_dir) / "epoch_0.pth"}
    progress("official training step done")
    return record


def save_like_train_py(official_train: Any, args: argparse.Namespace, parts: dict[str, Any], losses: Any) -> Path:
    """``parts`` written by train.py's own ``Trainer.save_checkpoint`` (its optimizer included): epoch_0.pth."""
    trainer = official_train.Trainer(args, parts, {"train_loader": []}, losses, args.checkpoint_dir)
    quiet(trainer.save_checkpoint)
    return Path(args.checkpoint_dir) / "epoch_0.pth"


def load_into_tester(tester: Any, checkpoint: Path) -> str:
    """Load train.py's checkpoint into the Tester's parts; ``Tester.load_checkpoint`` cannot read that format."""
    try:
        quiet(tester.load_checkpoint, str(checkpoint))
        note = "Tester.load_checkpoint read train.py's file"
    except KeyError as error:
        note = f"Tester.load_checkpoint fails on train.py's file (KeyError {error}); loaded its keys as train.py does"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    parts = tester.learnable_components
    parts["prompt_learner"].load_state_dict(saved["prompt_learner"])
    parts["visual_prompt"].load_state_dict(saved["visual_prompt"])
    parts["trainable_adapter"].load_state_dict(saved["linear_adapter"])
    for part in parts.values():
        part.eval()
    return note


@torch.no_grad()
def official_inference(tester: Any, image: Tensor) -> Record:
    """Every stage of one image through the official parts, then the official test path itself."""
    import train as official_train

    model, parts = tester.model_components["model"], tester.learnable_components
    image = image.to(next(model.parameters()).device)
    visual_tokens = parts["visual_prompt"]()
    image_features, patch_tokens, _ = model.encode_image([image, visual_tokens], list(LAYERS))
    raw_tokens = [tokens[:, 1:].clone() for tokens in patch_tokens]  # the adapter drops CLS (and edits the list)
    unit_image = image_features / image_features.norm(dim=-1, keepdim=True)
    projected = parts["trainable_adapter"](list(patch_tokens))
    prompt, deep_tokens, template_tokens = parts["prompt_learner"](unit_image)
    text, _ = model.encode_learn_prompts(prompt, deep_tokens, template_tokens)
    text = text / text.norm(dim=-1, keepdim=True)
    defect = text[1:].mean(dim=0, keepdim=True)
    binary_text = torch.cat([text[:1], defect / defect.norm(dim=-1, keepdim=True)])
    record: Record = {
        "input": image,
        "image features": image_features,
        "text features": text,
        "image logits": unit_image @ binary_text.T / TEMPERATURE,
    }
    for layer, tokens, patches in zip(LAYERS, raw_tokens, projected, strict=True):
        patches = patches / patches.norm(dim=-1, keepdim=True)
        softmax = official_train.compute_similarity(patches, text).softmax(dim=-1)
        upsampled = official_train.compute_similarity_map(softmax, IMAGE_SIZE).permute(0, 3, 1, 2)
        record[f"patch tokens L{layer}"] = tokens
        record[f"patch softmax L{layer}"] = softmax
        record[f"upsampled softmax L{layer}"] = upsampled
    record["final map"], record["image score"] = quiet(tester.forward_pass, image)
    return record


def official_training_step(trainer: Any, batch: dict[str, Any]) -> Record:
    """One batch through ``Trainer.train_epoch``: its two loss terms and every gradient (before Adam's update)."""
    trainer.train_loader = [batch]
    try:
        with silenced():
            local_loss, image_loss = trainer.train_epoch()
    finally:
        torch.autograd.set_detect_anomaly(False)  # train_epoch switches anomaly detection on for the process
    gradients = {}
    for part, module in (
        ("prompt_learner", trainer.prompt_learner),
        ("visual_prompt", trainer.visual_prompt),
        ("linear_adapter", trainer.trainable_adapter),
    ):
        for name, parameter in module.named_parameters():
            if parameter.grad is not None:
                gradients[f"{part}.{name}"] = parameter.grad.detach().cpu().clone()
    return {"loss": float(local_loss) + float(image_loss), "gradients": gradients}


# ---------------------------------------------------------------- zsad
def imported_preset(openai_file: Path, checkpoint: Path, folder: Path, device: str) -> ZSADModule:
    """``zsad import`` of the official file, then ``zsad.load`` with the preset and the seeded CLIP file.

    The preset's ``test_vocabulary: by_dataset`` scores the MVTec batches with the official test script's MVTec
    list, as ``zsad test -c <preset> -c <this file>`` would.
    """
    out = import_checkpoint(checkpoint, "dapo", "mvtec", folder / "dapo_mvtec.ckpt", weights=str(openai_file))
    settings = folder / "test_settings.yaml"
    model = {"backbone": {"init_args": {"pretrained": str(openai_file)}}}
    settings.write_text(json.dumps({"model": model}))
    return zsad.load(out, device, configs=[*PRESET, settings], batch_size=1).module.eval()


def training_preset(openai_file: Path, checkpoint: Path, device: str, prompt_count: int) -> ZSADModule:
    """The preset with ``prompt_count`` context sets and the official training checkpoint, through the importer's
    ``read`` and ``convert`` (``zsad import`` binds files to the preset's own 10 sets)."""
    overrides = [
        f"--model.backbone.init_args.pretrained={openai_file}",
        f"--model.prompt.init_args.prompt_count={prompt_count}",
    ]
    module = module_from_configs(PRESET, overrides=overrides)
    module.load_state_dict(convert(read(checkpoint), module))
    return module.to(device)


@torch.no_grad()
def zsad_inference(module: ZSADModule, item: dict[str, Any], device: str) -> Record:
    """Every stage of one image through zsad's module."""
    image = item["image"][None].to(device)
    # the batch names its dataset as zsad test's loader does: the preset's test words follow it
    features = module.extract_features({"image": image, "dataset": [item["dataset"]]})
    scores, text = module.score(features)
    record: Record = {
        "input": image,
        "image features": features.global_embedding,
        "text features": text.embeddings[0],
        "image logits": scores.image_logits,
        "image score": scores.image_score,
        "final map": scores.anomaly_map,
        "class map": scores.class_map,
        "layer maps": scores.layer_probs,
    }
    for index, layer in enumerate(LAYERS):
        projected = module.head.patch_maps[index](features.patch_tokens[index])
        record[f"patch tokens L{layer}"] = features.patch_tokens[index]
        record[f"patch softmax L{layer}"] = class_logits(projected, text.embeddings, TEMPERATURE).softmax(dim=-1)
        record[f"upsampled softmax L{layer}"] = scores.layer_probs[index]
    return record


def run_zsad(
    openai_file: Path,
    official: Record,
    images: Sequence[Path],
    train_images: Sequence[Path],
    folder: Path,
    device: str,
) -> Record:
    """Everything zsad computes, as plain tensors: inference with the preset, then the training step."""
    module = imported_preset(openai_file, official["checkpoint"], folder, device)
    items = dict(zip(images, zsad_items(images), strict=True))
    progress("zsad model ready")
    record: Record = {"images": [zsad_inference(module, items[path], device) for path in images]}
    progress("zsad inference done")
    first = {"image": items[images[0]]["image"][None].to(device), "dataset": ["mvtec"]}
    with torch.no_grad():
        record["seconds"] = timed(lambda: module.score(module.extract_features(first)), repeats=1)[1]
    del module  # the training step builds the model again with the training step's context sets
    gc.collect()
    training = official["training"]
    prompt_count = int(read(training["checkpoint"])["prompt_learner.learnable_normal_tokens"].shape[0])
    module = training_preset(openai_file, training["checkpoint"], device, prompt_count)
    step = zsad_training_step(module, zsad_items(train_images), device)
    record["training"] = {"loss": step["loss"], "gradients": step["gradients"]}
    record["module"] = module
    progress("zsad training step done")
    return record


# ---------------------------------------------------------------- the comparison
STAGE_BOUNDS: dict[str, float] = {
    "input": 1e-6,
    "image features": 1e-4,
    "patch tokens": 1e-4,
    "text features": 1e-6,
    "image logits": 1e-5,
    "image score": 1e-6,
    "patch softmax": 1e-6,
    "upsampled softmax": 1e-6,
    "final map": 1e-5,
    "defect-type argmax": 0.0,
    "class map": 0.0,
    "training loss": 1e-4,
    "gradient": 1e-4,
}
"""Absolute bounds, 5 to 30 times the float32 rounding seen on seeded weights (gradients: relative to their largest
entry). Features and losses accumulate rounding over 24 blocks; the probabilities stay far closer."""


def bound(name: str) -> float:
    """The bound of a stage, by the longest matching prefix of :data:`STAGE_BOUNDS`."""
    return STAGE_BOUNDS[max((key for key in STAGE_BOUNDS if name.startswith(key)), key=len)]


def fill_images(comparison: Comparison, official: Sequence[Record], ours: Sequence[Record]) -> None:
    """Per-image stages, in pipeline order."""
    names = ["input", "image features", *(f"patch tokens L{layer}" for layer in LAYERS), "text features"]
    names += ["image logits", "image score", *(f"patch softmax L{layer}" for layer in LAYERS)]
    names += [*(f"upsampled softmax L{layer}" for layer in LAYERS), "final map"]
    for theirs, mine in zip(official, ours, strict=True):
        for name in names:
            comparison.stage(name, bound(name)).update(mine[name], theirs[name].reshape(mine[name].shape))
        fill_defect_types(comparison, [theirs[f"upsampled softmax L{layer}"] for layer in LAYERS], mine)


TIE_MARGIN = 1e-5
"""A pixel's defect type is left to float rounding when its two likeliest defect classes (summed over the 4 layers)
lie closer than this, or its mean defect probability this close to the class map's 0.5: far above the summed maps'
float32 differences (below 1e-6 on seeded weights)."""


def fill_defect_types(comparison: Comparison, official_maps: Sequence[Tensor], mine: Record) -> None:
    """Defect-type argmax and class map: identical where decided, and near-ties within float rounding counted apart.

    The official test scripts make no class map; zsad's rule (:func:`~zsad.heads.multiclass.defect_class_map`) is
    applied to the official maps.
    """
    summed_official = torch.stack(official_maps).sum(0)[:, 1:]
    summed_ours = torch.stack(mine["layer maps"]).sum(0)[:, 1:].to(summed_official.device)
    top_two = summed_official.topk(2, dim=1).values
    decided = (top_two[:, 0] - top_two[:, 1]) > TIE_MARGIN
    argmax_differs = summed_ours.argmax(1) != summed_official.argmax(1)
    class_differs = mine["class map"].to(summed_official.device) != defect_class_map(official_maps, 0.5)
    class_decided = decided & ((summed_official.sum(1) / len(official_maps) - 0.5).abs() > TIE_MARGIN)
    everywhere = torch.ones_like(decided)
    for name, differs, where, limit in (
        ("defect-type argmax: share of decided pixels differing", argmax_differs, decided, 0.0),
        ("defect-type argmax: share of all pixels differing (near-ties)", argmax_differs, everywhere, 1e-4),
        ("class map: share of decided pixels differing", class_differs, class_decided, 0.0),
        ("class map: share of all pixels differing (near-ties)", class_differs, everywhere, 1e-4),
    ):
        share = (differs & where).float().sum() / where.float().sum().clamp_min(1.0)
        comparison.stage(name, limit).update(share, torch.zeros(()))


def fill_training(comparison: Comparison, official: Record, ours: Record, module: ZSADModule) -> None:
    """The training loss and each parameter's gradient, mapped by the importer's own key map."""
    comparison.stage("training loss", bound("training loss")).update(
        torch.tensor(ours["loss"]), torch.tensor(official["loss"])
    )
    official_gradients = convert(official["gradients"], module)
    for name, mine, theirs in matched_gradients(official_gradients, ours["gradients"]):
        update_scaled(comparison.stage(f"gradient {name} (/ max |grad|)", bound("gradient")), mine, theirs)


def compare(
    src: Path,
    images: Sequence[Path],
    *,
    seed: int = 0,
    device: str = "cpu",
    train_images: int = 1,
    train_prompt_count: int = 2,
) -> Comparison:
    """Run the official DAPO code and zsad's ``dapo`` preset on the same weights and images, stage by stage.

    Args:
        src: A checkout of boschresearch/defect-aware-prompt-optimization (imported unchanged).
        images: MVTec-layout test images (masks found beside them); 2 to 4 keep a CPU run to minutes.
        seed: Seed of the CLIP weights and of the official prompt initialisation.
        device: Where zsad runs; the official code picks CUDA itself whenever it is available.
        train_images: Images in the training batch (anomalous ones with masks first, then a normal one).
        train_prompt_count: Context sets of the training step. The official training step keeps the activations of
            every prompt (10 sets x 21 classes x 81 tokens at the preset's 10 sets: more than 20 GB with ViT-L/14),
            so the step is compared with fewer sets; everything else is the preset's.

    Returns:
        The comparison, with the time per image of both test paths.
    """
    src, images = checked_inputs("dapo", src, images)
    batch_images = training_batch_images(images, train_images)
    comparison = Comparison("dapo")
    with tempfile.TemporaryDirectory(prefix="dapo_parity_") as tmp:
        folder = Path(tmp)
        openai_file, plain_file = write_clip_weights(folder, seed)
        with official_code(src) as environment_notes:
            official = run_official(src, plain_file, images, batch_images, folder, seed, train_prompt_count)
        ours = run_zsad(openai_file, official, images, batch_images, folder, device)
        fill_images(comparison, official["images"], ours["images"])
        fill_training(comparison, official["training"], ours["training"], ours["module"])
    comparison.seconds_official, comparison.seconds_zsad = official["seconds"], ours["seconds"]
    comparison.notes += [
        setup_note(src, images, seed, device),
        f"training step: batch {[p.parent.name for p in batch_images]}, {train_prompt_count} context sets "
        f"(the official step with 10 did not fit in 23 GB); inference: the preset's 10",
        *official["notes"],
        "zsad encodes its image-independent prompts once per evaluation; the official test path encodes the 210 "
        "prompts for every image (both times include that)",
    ]
    comparison.notes += environment_notes
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table; exit status 1 when a stage is out of bounds."""
    parser = parity_parser(__doc__ or "", "DAPO")
    parser.add_argument("--train-images", type=int, default=1, help="images in the training batch")
    parser.add_argument("--train-prompt-count", type=int, default=2, help="context sets of the training step")
    args = parser.parse_args(argv)
    comparison = compare(
        args.src,
        default_images(args.images),
        seed=args.seed,
        device=args.device,
        train_images=args.train_images,
        train_prompt_count=args.train_prompt_count,
    )
    return report(comparison)


if __name__ == "__main__":
    sys.exit(main())
