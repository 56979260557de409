"""ViP2-CLIP: the official code (kim0806/ViP2-CLIP) against zsad's ``vip`` preset, stage by stage.

Both sides get the same seeded random ``ViT-L-14-336-quickgelu`` weights, written once in the form of OpenAI's
``ViT-L-14-336px.pt`` (a TorchScript archive of fp16 tensors; the official ``VIP2CLIP_lib.load`` reads its state dict
into an fp32 model, zsad reads it through ``weights``). The official ICA and FGP are built at their seeded
initialisation, every tensor is then perturbed (no bias sits at its initial value), and the two state dicts are
saved as the official ``train.py`` saves them. zsad takes that file through its documented path only:
:func:`zsad.importers.import_checkpoint` onto the preset for a file trained on MVTec AD, then :func:`zsad.load` with
the same CLIP file, scoring with ``Detector.score_batch`` on ``Detector.transform``'s input.

The official side runs its own ``test.test`` and ``train.train`` unchanged, instrumented from outside:
``VIP2CLIP_lib.load`` is pointed at the seeded file, forward hooks record the image tower, the ICA, the text
encoder and FGP, ``gaussian_filter`` is wrapped to record the map before and after smoothing, the metric functions
are replaced by recorders (metrics are not compared; ``skimage``, ``cv2`` and ``tabulate`` get stand-ins that raise
if called), and the training run gets one batch, its ICA and FGP loaded from the same file. On a machine without
CUDA, ``Tensor.cuda`` is the identity for the training run (``train.py`` moves the labels with ``.cuda()``). The
per-layer probabilities and the image logits of the official side are computed from the recorded tensors with the
official ``get_similarity_map``, the same operations as the loop in ``test.py``; the image score and the final maps
are what ``test.test`` itself stored.

Usage::

    python -m benchmarks.parity.vip --src /path/to/ViP2-CLIP [--images 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

import zsad
from zsad.heads.maps import aggregate_layers, anomaly_probability
from zsad.importers import import_checkpoint
from zsad.importers.vip import map_official
from zsad.inference.detector import Detector, as_pil
from zsad.module import ZSADModule

from . import common
from .common import (
    IMAGE_SIZE,
    Comparison,
    Record,
    checked_inputs,
    cuda_as_identity,
    default_images,
    mean_after_warmup,
    packaging_only_pkg_resources,
    parity_parser,
    replaced,
    report,
    setup_note,
    silenced,
    stand_in,
    training_batch_images,
    update_scaled,
    write_clip_archive,
    write_official_meta,
    zsad_items,
    zsad_training_step,
)

LAYERS = (6, 12, 18, 24)
N_CTX, N_CLS, TOP_K, SIGMA, TEMPERATURE = 7, 3, 50, 8, 0.07  # the official test.sh (sigma: test.py's default)
BORDER = 2 * SIGMA  # the band where the smoothing border matters
OFFICIAL_MODULES = (
    "VIP2CLIP_lib",
    "prompt_learner",
    "train",
    "test",
    "dataset",
    "loss",
    "metrics",
    "logger",
    "utils",
    "visualization",
)
OFFICIAL_DATASET = "pcb"
"""The official ``Dataset`` needs every category of the dataset it is named after (test.py concatenates each one's
results), so the images are filed under a one-category dataset name; the name only picks that category list."""
UNUSED_IMPORTS = ("cv2", "skimage", "tabulate")
"""Packages the official modules import at the top but use only for pictures, AUPRO and the results table."""


# ---------------------------------------------------------------- importing the official code
@contextlib.contextmanager
def official_code(src: Path) -> Iterator[list[str]]:
    """The official checkout importable, with stand-ins for what is missing; yields notes on what was bridged.

    ``pkg_resources`` gets a stand-in carrying the real ``packaging``. The root logger, which the official
    ``get_logger`` resets, is restored.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    missing = [*(stand_in(name) for name in UNUSED_IMPORTS), packaging_only_pkg_resources()]
    try:
        with common.official_code(src, OFFICIAL_MODULES, missing) as notes:
            yield notes
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("test").handlers.clear()


# ---------------------------------------------------------------- shared inputs
def official_arguments(folder: Path, checkpoint: Path, data: Path, epochs: int = 1) -> argparse.Namespace:
    """The arguments of test.sh / train.sh for one released file (train.py gets one epoch of one batch)."""
    return argparse.Namespace(
        data_path=str(data),
        train_data_path=str(data),
        save_path=str(folder / "official_results"),
        checkpoint_path=str(checkpoint),
        visualize=False,
        dataset=OFFICIAL_DATASET,
        features_list=list(LAYERS),
        image_size=IMAGE_SIZE,
        n_ctx=N_CTX,
        n_cls=N_CLS,
        topk=TOP_K,
        feature_map_layer=[0, 1, 2, 3],
        metrics="image-pixel-level",
        seed=111,
        sigma=SIGMA,
        epoch=epochs,
        learning_rate=1e-3,
        batch_size=2,
        print_freq=1,
        save_freq=1000,
    )


# ---------------------------------------------------------------- the official side
PERTURBATION = 0.02
"""Standard deviation of the seeded noise added to every official prompt tensor."""
ATTENTION_PERTURBATION = {"q_proj_pre.weight": 0.5, "k_proj_pre_1.weight": 0.5}
"""Larger noise for FGP's query and key weights. At the official initialisation FGP's attention over the patches is
almost uniform, so both refined embeddings are almost the same, every patch's anomaly probability is about 0.5 and
the top-k patches are picked among near-ties that float rounding reorders. Peaked attention (logits of a few units)
separates them, as training does."""


def write_official_checkpoint(clip_file: Path, folder: Path, seed: int) -> Path:
    """The official ICA and FGP at their seeded initialisation, every tensor perturbed, saved as train.py does."""
    import VIP2CLIP_lib
    from prompt_learner import FGP, ICA

    torch.manual_seed(seed)
    with silenced():
        model, _ = VIP2CLIP_lib.load(str(clip_file), device="cpu")
        ica = ICA([], model, {"Prompt_length": N_CTX, "Prompt_cls_length": N_CLS})
    fgp = FGP(dim_v=768, dim_t=768, dim_out=768)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in [*ica.named_parameters(), *fgp.named_parameters()]:
            scale = ATTENTION_PERTURBATION.get(name, PERTURBATION)
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    path = folder / "epoch_10.pth"
    torch.save({"prompt_learner": ica.state_dict(), "Zero_try": fgp.state_dict()}, path)
    return path


@dataclass
class OfficialProbe:
    """What the hooks record while the official test runs: one record per image, and when each image ran."""

    images: list[Record] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)

    def attach_model(self, model: torch.nn.Module) -> None:
        """Record the image tower's input and outputs and the text encoder's output."""

        def before_visual(module: Any, args: tuple[Any, ...]) -> None:
            self.started.append(time.perf_counter())
            self.images.append({"input": args[0].detach().clone()})

        def after_visual(module: Any, args: Any, output: tuple[Tensor, list[Tensor]]) -> None:
            self.images[-1]["global feature"] = output[0].detach().clone()
            self.images[-1]["patch tokens"] = [tokens[:, 1:].detach().clone() for tokens in output[1]]

        model.visual.register_forward_pre_hook(before_visual)
        model.visual.register_forward_hook(after_visual)
        encode = model.encode_text_learn

        def encode_text_learn(*args: Any, **kwargs: Any) -> Tensor:
            output = encode(*args, **kwargs)
            self.images[-1]["text raw"] = output.detach().clone()
            return output

        model.encode_text_learn = encode_text_learn

    def attach_prompt(self, ica: torch.nn.Module, fgp: torch.nn.Module) -> None:
        """Record the ICA's prompt embeddings and each FGP output."""
        ica.register_forward_hook(lambda m, a, out: self.images[-1].__setitem__("prompts", out[0].detach().clone()))
        fgp.register_forward_hook(lambda m, a, out: self.images[-1].setdefault("fgp", []).append(out.detach().clone()))

    def smoothing(self, gaussian_filter: Callable[..., Any]) -> Callable[..., Any]:
        """``gaussian_filter`` recording its input and the time the image's work ended."""

        def smooth(values: Any, *args: Any, **kwargs: Any) -> Any:
            self.images[-1]["unsmoothed map"] = torch.as_tensor(values).clone()[None]
            result = gaussian_filter(values, *args, **kwargs)
            self.finished.append(time.perf_counter())
            return result

        return smooth


def metric_recorders(sink: Record) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Stand-ins of ``image_level_metrics`` / ``pixel_level_metrics`` that keep the results test.py passes them."""

    def image_level(results: dict[str, Any], obj: str, metric: str) -> float:
        sink["results"] = results
        return 0.0

    def pixel_level(results: dict[str, Any], obj: str, metric: str) -> Any:
        sink["results"] = results
        return (0.0, None) if metric == "pixel-f1" else 0.0

    return image_level, pixel_level


def run_official_test(clip_file: Path, checkpoint: Path, folder: Path) -> Record:
    """``test.test`` on the images of ``folder/meta.json``: every recorded stage, its scores, maps and timing."""
    import test as official_test
    import VIP2CLIP_lib

    probe, sink = OfficialProbe(), {}
    load = VIP2CLIP_lib.load

    def load_seeded(name: str, *args: Any, **kwargs: Any) -> Any:
        model, transform = load(str(clip_file), *args, **kwargs)
        probe.attach_model(model)
        return model, transform

    def hooked(cls: type) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            part = cls(*args, **kwargs)
            sink.setdefault("parts", []).append(part)
            if len(sink["parts"]) == 2:
                probe.attach_prompt(*sink["parts"])
            return part

        return build

    image_level, pixel_level = metric_recorders(sink)
    args = official_arguments(folder, checkpoint, folder)
    with contextlib.ExitStack() as stack:
        stack.enter_context(replaced(VIP2CLIP_lib, "load", load_seeded))
        for name, value in (
            ("ICA", hooked(official_test.ICA)),
            ("FGP", hooked(official_test.FGP)),
            ("gaussian_filter", probe.smoothing(official_test.gaussian_filter)),
            ("image_level_metrics", image_level),
            ("pixel_level_metrics", pixel_level),
            ("tabulate", lambda *a, **k: ""),
        ):
            stack.enter_context(replaced(official_test, name, value))
        stack.enter_context(silenced())
        official_test.setup_seed(args.seed)
        official_test.test(args)
    results = next(iter(r for r in sink["results"].values() if r["pr_sp"]))
    for index, record in enumerate(probe.images):
        record["image score"] = results["pr_sp"][index].reshape(1)
        record["final map"] = torch.as_tensor(results["anomaly_maps"][index])[None]
        add_official_derived_stages(record)
    durations = [end - start for start, end in zip(probe.started, probe.finished, strict=True)]
    return {"images": probe.images, "seconds": mean_after_warmup(durations)}


def add_official_derived_stages(record: Record) -> None:
    """Normalised text pair, per-layer probabilities and image logits from the recorded official tensors.

    The operations of the loop in ``test.py``: cosines of the normalised patches with FGP's pair, softmax over
    cosines / 0.07, the official ``get_similarity_map``; the top-k patches by anomaly probability, their raw cosines
    averaged over the four layers and divided by 0.07. ``top-k margin`` is the smallest gap between the k-th and
    the (k+1)-th anomaly probability of any layer: the selection is the same on both sides while the sides' patch
    probabilities differ by less than half of it.
    """
    from utils import get_similarity_map

    text = torch.stack(torch.chunk(record.pop("text raw"), 2, dim=0), dim=1)
    record["text features"] = text / text.norm(dim=-1, keepdim=True)
    selected, margins = [], []
    for layer, tokens, refined in zip(LAYERS, record["patch tokens"], record["fgp"], strict=True):
        cosines = (tokens / tokens.norm(dim=-1, keepdim=True)) @ refined.transpose(1, 2)
        probs = (cosines / TEMPERATURE).softmax(dim=-1)
        record[f"layer probabilities L{layer}"] = get_similarity_map(probs, IMAGE_SIZE).permute(0, 3, 1, 2)
        top = torch.topk(probs[:, :, 1], k=TOP_K, dim=-1).indices
        selected.append(cosines[torch.arange(cosines.shape[0])[:, None], top])
        ranked = probs[:, :, 1].sort(dim=-1, descending=True).values
        margins.append(float((ranked[:, TOP_K - 1] - ranked[:, TOP_K]).min()))
    record["image logits"] = torch.cat(selected, dim=1).mean(dim=1) / TEMPERATURE
    record["top-k margin"] = min(margins)


def run_official_training(clip_file: Path, checkpoint: Path, folder: Path, data: Path) -> Record:
    """``train.train`` for one epoch of one batch from the saved weights: the loss and every gradient."""
    import train as official_train
    import VIP2CLIP_lib

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    parts: dict[str, torch.nn.Module] = {}
    losses: list[Tensor] = []
    load = VIP2CLIP_lib.load

    def loaded(cls: type, key: str) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            part = cls(*args, **kwargs)
            part.load_state_dict(saved[key])
            parts[key] = part
            return part

        return build

    def recording(cls: type) -> type:
        class Recording(cls):  # type: ignore[misc,valid-type]
            def forward(self, *args: Any) -> Tensor:
                value = super().forward(*args)
                losses.append(value.detach().double())
                return value

        return Recording

    functional = types.SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("__")})

    def cross_entropy(*args: Any, **kwargs: Any) -> Tensor:
        value = F.cross_entropy(*args, **kwargs)
        losses.append(value.detach().double())
        return value

    functional.cross_entropy = cross_entropy
    args = official_arguments(folder, checkpoint, data)
    with contextlib.ExitStack() as stack:
        stack.enter_context(replaced(VIP2CLIP_lib, "load", lambda name, *a, **k: load(str(clip_file), *a, **k)))
        for name, value in (
            ("ICA", loaded(official_train.ICA, "prompt_learner")),
            ("FGP", loaded(official_train.FGP, "Zero_try")),
            ("FocalLoss", recording(official_train.FocalLoss)),
            ("BinaryDiceLoss", recording(official_train.BinaryDiceLoss)),
            ("F", functional),
        ):
            stack.enter_context(replaced(official_train, name, value))
        stack.enter_context(cuda_as_identity())  # train.py moves the labels with .cuda()
        stack.enter_context(silenced())
        official_train.setup_seed(args.seed)
        official_train.train(args)
    gradients = {
        f"{key}.{name}": parameter.grad.detach().cpu().clone()
        for key, part in parts.items()
        for name, parameter in part.named_parameters()
        if parameter.grad is not None
    }
    return {"loss": float(torch.stack(losses).sum()), "gradients": gradients}


# ---------------------------------------------------------------- zsad
@dataclass
class ZsadProbe:
    """Forward hooks on the loaded module: the features, text features and scores of the last call."""

    record: Record = field(default_factory=dict)

    def attach(self, module: ZSADModule) -> None:
        """Hook the backbone, the prompt synthesizer and the head."""
        for part, key in ((module.backbone, "features"), (module.prompt, "text"), (module.head, "scores")):
            part.register_forward_hook(lambda m, a, out, key=key: self.record.__setitem__(key, out))


def zsad_inference(detector: Detector, probe: ZsadProbe, path: Path) -> tuple[Record, float]:
    """One image through ``Detector.score_batch`` (timed), with every stage the hooks saw."""
    image = detector.transform(as_pil(path))[None].to(detector.device)
    start = time.perf_counter()
    scores, maps, _, _ = detector.score_batch(image)
    seconds = time.perf_counter() - start
    features, text, head = probe.record["features"], probe.record["text"], probe.record["scores"]
    prompt = detector.module.prompt
    with torch.no_grad():
        prompts, _ = prompt.prompt_embeddings(prompt.class_token_batch(features))
    unsmoothed = aggregate_layers([anomaly_probability(p) for p in head.layer_probs], "mean")
    record: Record = {
        "input": image,
        "global feature": features.global_embedding,
        "patch tokens": list(features.patch_tokens),
        "prompts": prompts,
        "text features": text.embeddings,
        "fgp": list(text.per_layer),
        "image logits": head.image_logits,
        "image score": scores,
        "unsmoothed map": unsmoothed,
        "final map": maps,
    }
    for layer, probs in zip(LAYERS, head.layer_probs, strict=True):
        record[f"layer probabilities L{layer}"] = probs
    return record, seconds


def run_zsad(
    clip_file: Path, checkpoint: Path, images: Sequence[Path], train_images: Sequence[Path], folder: Path, device: str
) -> Record:
    """The documented path: ``import_checkpoint`` onto the preset, ``zsad.load``, then score and one training step."""
    out = import_checkpoint(checkpoint, "vip", "mvtec", folder / "vip_mvtec.ckpt", weights=str(clip_file))
    detector = zsad.load(out, device=device, weights=str(clip_file))
    probe = ZsadProbe()
    probe.attach(detector.module)
    records, seconds = [], []
    for path in images:
        record, elapsed = zsad_inference(detector, probe, path)
        records.append(record)
        seconds.append(elapsed)
    step = zsad_training_step(detector.module, zsad_items(train_images), device)
    return {
        "images": records,
        "seconds": mean_after_warmup(seconds),
        "training": {"loss": step["loss"], "gradients": step["gradients"]},
        "module": detector.module,
    }


# ---------------------------------------------------------------- the comparison
FEATURE_TOLERANCE = 1e-4
"""Features, text embeddings and gradients: the largest difference relative to the tensor's largest magnitude."""
MAP_TOLERANCE = 1e-5
"""Probabilities, scores and maps: absolute."""


def scaled(comparison: Comparison, name: str, ours: Tensor, theirs: Tensor) -> None:
    """Fold a pair into stage ``name``, both divided by the official tensor's largest magnitude."""
    update_scaled(comparison.stage(f"{name} (/ max |x|)", FEATURE_TOLERANCE), ours, theirs)


def absolute(comparison: Comparison, name: str, ours: Tensor, theirs: Tensor, tolerance: float) -> None:
    """Fold a pair into stage ``name`` with an absolute bound."""
    comparison.stage(name, tolerance).update(ours, theirs.to(ours.device).reshape(ours.shape))


def fill_images(comparison: Comparison, official: Sequence[Record], ours: Sequence[Record]) -> None:
    """Per-image stages, in pipeline order."""
    for theirs, mine in zip(official, ours, strict=True):
        absolute(comparison, "input", mine["input"], theirs["input"], 1e-6)
        scaled(comparison, "global feature", mine["global feature"], theirs["global feature"])
        for layer, a, b in zip(LAYERS, mine["patch tokens"], theirs["patch tokens"], strict=True):
            scaled(comparison, f"patch tokens L{layer}", a, b)
        scaled(comparison, "prompt token embeddings", mine["prompts"], theirs["prompts"])
        scaled(comparison, "text features (ICA pair)", mine["text features"], theirs["text features"])
        for layer, a, b in zip(LAYERS, mine["fgp"], theirs["fgp"], strict=True):
            scaled(comparison, f"FGP text features L{layer}", a, b)
        for layer in LAYERS:
            name = f"layer probabilities L{layer}"
            absolute(comparison, name, mine[name], theirs[name], MAP_TOLERANCE)
        absolute(comparison, "image logits", mine["image logits"], theirs["image logits"], 1e-4)
        absolute(comparison, "image score", mine["image score"], theirs["image score"], MAP_TOLERANCE)
        absolute(comparison, "map before smoothing", mine["unsmoothed map"], theirs["unsmoothed map"], MAP_TOLERANCE)
        absolute(comparison, "final map (sigma 8)", mine["final map"], theirs["final map"], MAP_TOLERANCE)
        band = torch.ones(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
        band[BORDER:-BORDER, BORDER:-BORDER] = False
        mine_band, theirs_band = mine["final map"][:, band], theirs["final map"].to(mine["final map"].device)[:, band]
        absolute(comparison, f"final map, {BORDER}-px border band", mine_band, theirs_band, MAP_TOLERANCE)


def fill_training(comparison: Comparison, official: Record, ours: Record, module: ZSADModule) -> None:
    """The training loss, then each parameter's gradient, grouped by layer and scaled by the group's largest."""
    comparison.stage("training loss", FEATURE_TOLERANCE, relative=True).update(
        torch.tensor(ours["loss"], dtype=torch.float64), torch.tensor(official["loss"], dtype=torch.float64)
    )
    official_gradients = map_official(official["gradients"], module)
    missing = sorted(set(official_gradients) ^ set(ours["gradients"]))
    if missing:
        raise ValueError(f"gradients on one side only: {missing}")
    groups: dict[str, list[str]] = {}
    for name in official_gradients:
        group = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
        groups.setdefault(group, []).append(name)
    for group, names in groups.items():
        scale = max(float(official_gradients[n].abs().max()) for n in names) or 1.0
        stage = comparison.stage(f"gradient {group} (/ max |grad|)", FEATURE_TOLERANCE)
        for name in names:
            stage.update(ours["gradients"][name] / scale, official_gradients[name] / scale)


def compare(src: Path, images: Sequence[Path], *, seed: int = 0, device: str = "cpu") -> Comparison:
    """Run the official ViP2-CLIP code and zsad's ``vip`` preset on the same weights and images, stage by stage.

    Args:
        src: A checkout of kim0806/ViP2-CLIP (imported unchanged).
        images: MVTec-layout test images (masks found beside them); 2 to 4 keep a CPU run to minutes.
        seed: Seed of the CLIP weights and of the official prompt initialisation and perturbation.
        device: Where zsad runs; the official code picks CUDA itself whenever it is available.

    Returns:
        The comparison, with the time per image of both test paths (batch 1, the first image as warm-up).
    """
    src, images = checked_inputs("vip", src, images)
    train_images = training_batch_images(images)
    comparison = Comparison("vip")
    with tempfile.TemporaryDirectory(prefix="vip_parity_") as tmp:
        folder = Path(tmp)
        clip_file = write_clip_archive(folder / "ViT-L-14-336px.pt", seed, torch.half)  # fp16, as OpenAI's file
        write_official_meta(folder, images, OFFICIAL_DATASET)
        write_official_meta(folder / "train", train_images, OFFICIAL_DATASET)
        with official_code(src) as environment_notes:
            checkpoint = write_official_checkpoint(clip_file, folder, seed)
            official = run_official_test(clip_file, checkpoint, folder)
            gc.collect()
            official["training"] = run_official_training(clip_file, checkpoint, folder, folder / "train")
        gc.collect()
        ours = run_zsad(clip_file, checkpoint, images, train_images, folder, device)
        fill_images(comparison, official["images"], ours["images"])
        fill_training(comparison, official["training"], ours["training"], ours["module"])
    comparison.seconds_official, comparison.seconds_zsad = official["seconds"], ours["seconds"]
    margin = min(record["top-k margin"] for record in official["images"])
    comparison.notes += [
        f"training loss: official {official['training']['loss']:.9g}, zsad {ours['training']['loss']:.9g}; smallest "
        f"gap between the {TOP_K}th and {TOP_K + 1}st patch anomaly probability (official): {margin:.3g}",
        setup_note(src, images, seed, device, train_images),
        "zsad: zsad.importers.import_checkpoint(train.py's file, 'vip', 'mvtec') then zsad.load(..., weights=the "
        "CLIP file), scored by Detector.score_batch; official: test.test and train.train as shipped",
        "features, text and gradients are bounded relative to the largest magnitude of each tensor (gradients: of "
        "each layer's weight and bias together), probabilities, scores and maps absolutely; the max rel diff column "
        "is elementwise, large where an element is near 0, and bounds nothing",
    ]
    comparison.notes += environment_notes
    return comparison


def pick_images(count: int) -> list[Path]:
    """``count`` ../shared/data MVTec bottle images, the first anomalous ones of each defect and a normal one last."""
    pool = default_images(64)
    normal = [p for p in pool if p.parent.name == "good"][:1]
    anomalous = [p for p in pool if p.parent.name != "good"]
    return (anomalous[: max(count - len(normal), 0)] + normal)[:count] if count > 1 else pool[:count]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table; exit status 1 when a stage is out of bounds."""
    args = parity_parser(__doc__ or "", "ViP2-CLIP").parse_args(argv)
    return report(compare(args.src, pick_images(args.images), seed=args.seed, device=args.device))


if __name__ == "__main__":
    sys.exit(main())
