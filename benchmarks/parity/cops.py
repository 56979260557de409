"""CoPS: the official code (cqylunlun/CoPS) against zsad's ``cops`` presets, stage by stage.

Both sides get the same seeded random ``ViT-L-14-336-quickgelu`` weights, in one file of the format of OpenAI's
``ViT-L-14-336px.pt`` (a TorchScript archive), which the official ``lib.load`` and zsad's backbone both read. They
get the same seeded random CoPS prompt weights: the official ``PromptLearner`` built under ``seed``, every tensor
perturbed (biases and LayerNorms included, so none sits at its constant initial value), saved as the official
``train.py`` saves it (``{"prompt_learner": ...}`` after its own ``remove_keys_from_model``: the 28-tensor layout of
the released files). zsad reads that file only through its documented path:
``zsad.importers.import_checkpoint(file, "cops", <trained on>, out, weights=<CLIP file>)``, then
``zsad.load(out, weights=<CLIP file>)``.

The official side is the official ``test.test`` and ``train.train`` functions, run unchanged. The harness only
observes them (it wraps the functions and modules they call: ``encode_image``, ``average_neighbor``, the extractor,
the VAE decoder, the prompt learner, ``compute_similarity``, ``get_fullsize_map``, ``gaussian_filter``) and feeds
them what a CPU run without the authors' folders needs: the CLIP file instead of the download, a ``meta.json`` listing
the images, ``Tensor.cuda`` as a no-op without CUDA, no pictures (``visualizer``) and no metrics (the run stops at
the first metric call, whose ``results`` hold every map and score).

Same noise on both sides: CoPS tests with R = 10 prior samples per image and trains with one posterior sample.
zsad's preset draws each image's R latents from a generator seeded by ``test_seed`` and the image's global feature
(``zsad.prompts.cops.icts.prior_latents``); the harness computes those latents and hands them to the official test
as the result of its ``torch.randn((10, 1, 768))`` call. In training, the harness draws one seeded ``[B, 768]`` noise
and returns it from the official ``torch.randn((1, B, 768))`` and from zsad's ``torch.randn_like`` (both patched for
the call only).

Two test settings, the two the README runs: the MVTec-trained preset (``--trained-on mvtec``) tested as the official
code tests VisA (alpha 0.35, beta 1.0, K 3), and the VisA-trained preset tested as it tests every other dataset
(alpha 0.26, beta 0.9, K 5). Training: one batch of the MVTec-trained setting (K 3, reconstruction loss on) from an
unfiltered ``prompt_learner.state_dict()`` (with the VAE encoder, imported by the same importer): the loss and every
gradient before the optimizer step.

Usage::

    python -m benchmarks.parity.cops --src /path/to/CoPS [--images 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import gc
import io
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import zsad
from zsad.heads.maps import class_logits
from zsad.heads.saga import spatial_weights
from zsad.importers import import_checkpoint
from zsad.importers.cops import convert
from zsad.module import ZSADModule
from zsad.prompts.cops.ests import average_neighbor
from zsad.prompts.cops.icts import prior_latents

from . import common
from .common import (
    IMAGE_SIZE,
    Comparison,
    Record,
    checked_inputs,
    cuda_as_identity,
    default_images,
    matched_gradients,
    mean_after_warmup,
    parity_parser,
    quiet,
    replaced,
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

LAYER = 24
SAMPLES = 10
"""R: prior samples per test image (hard-coded in the official test.py)."""
HYPERPARAMETERS = {
    "prompt_length": 12,
    "learnable_text_embedding_depth": 8,
    "learnable_text_embedding_length": 4,
    "prt_length": 6,
    "vae_length": 1,
}
"""What the official test.py and train.py build the prompt learner with (shell/test.sh, shell/train.sh)."""
DEEP_LAYERS = 8
"""Deep text prompts overwrite positions 1..4 before text blocks 1..8 (0-based)."""
SETTINGS: dict[str, str] = {"mvtec": "visa", "visa": "mvtec"}
"""Training set of the imported preset -> the official --dataset of the test run it is compared with."""
TRAINING_SET = "mvtec"
OFFICIAL_MODULES = ("lib", "utils", "datasets", "test", "train")
UNUSED_IMPORTS = ("cv2",)
"""Imported at the top of utils/tools.py, used only for the pictures (``visualizer``), which the harness skips."""


class Collected(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside an official function once everything compared has been observed."""


# ---------------------------------------------------------------- patching helpers
def official_code(src: Path) -> contextlib.AbstractContextManager[list[str]]:
    """The official checkout importable (stand-ins for its unused, uninstalled imports); yields notes on them."""
    return common.official_code(src, OFFICIAL_MODULES, [stand_in(name) for name in UNUSED_IMPORTS])


@contextlib.contextmanager
def injected_randn(shape: Callable[[tuple[int, ...]], bool], draws: list[Tensor]) -> Iterator[None]:
    """``torch.randn(size)`` returns the next of ``draws`` when ``shape(size)`` says it is the sampling call."""
    original = torch.randn

    def randn(*args: Any, **kwargs: Any) -> Tensor:
        size = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else None
        if size is not None and shape(size):
            draw = draws.pop(0)
            if tuple(draw.shape) != size:
                raise ValueError(f"injected noise {tuple(draw.shape)} does not fit the official draw {size}")
            return draw.clone()
        return original(*args, **kwargs)

    with replaced(torch, "randn", randn):
        yield


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (one ViT-L at a time on a small machine)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only; elsewhere the memory just stays reserved
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def progress(message: str) -> None:
    """One line on stderr: the run takes minutes on a CPU."""
    print(f"[cops parity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- shared inputs
def perturbed(state: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Every floating tensor plus seeded noise (0.02 for matrices, 0.1 for vectors); template buffers untouched."""
    generator = torch.Generator().manual_seed(seed + 1)
    result = {}
    for key, value in state.items():
        if value.is_floating_point() and not key.startswith("token_"):
            scale = 0.02 if value.dim() > 1 else 0.1
            value = value + scale * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        result[key] = value.detach().clone()
    return result


def write_official_prompt_files(clip_file: Path, folder: Path, seed: int) -> tuple[Path, Path]:
    """Seeded official prompt weights: as train.py saves them (released layout) and unfiltered (with the encoder).

    Runs inside :func:`official_code`.
    """
    import lib  # the official modules are importable only inside official_code()
    from lib.cops import PromptLearner
    from utils.tools import remove_keys_from_model

    model, _ = quiet(lib.load, str(clip_file), "cpu", HYPERPARAMETERS)
    torch.manual_seed(seed)
    learner = quiet(PromptLearner, model, HYPERPARAMETERS, [LAYER])
    state = perturbed(learner.state_dict(), seed)
    released, full = folder / "epoch_5.pth", folder / "prompt_learner_full.pth"
    torch.save({"prompt_learner": remove_keys_from_model(dict(state))}, released)
    torch.save({"prompt_learner": state}, full)
    return released, full


def write_meta(folder: Path, images: Sequence[Path], dataset: str) -> Path:
    """A ``meta.json`` in the official layout (split ``test``) listing ``images`` by absolute path.

    The category is one the official ``generate_class_info`` knows for ``dataset`` (the model ignores it). Runs
    inside :func:`official_code`.
    """
    from datasets.getdata import generate_class_info  # inside official_code()

    objects, _ = generate_class_info(dataset)
    return write_official_meta(folder, images, "bottle" if "bottle" in objects else objects[0])


def watch_deep_copies(blocks: Sequence[nn.Module], store: dict[int, Tensor], take: Callable[[Tensor], Tensor]) -> None:
    """Record the gradient of each text block's input at the deep-prompt positions, before any fp16 rounding.

    A pre-hook on the block's ``ln_1`` sees the block input after the deep prompts were spliced in; the gradient of
    that tensor at positions 1..4 is what each prompt's copy of the deep prompt receives, before the fp16 cast both
    codes apply to it. ``take`` selects those positions as ``[P, 4, W]``.
    """
    for layer in range(1, DEEP_LAYERS + 1):

        def hook(_: nn.Module, inputs: tuple[Tensor, ...], layer: int = layer) -> None:
            if inputs[0].requires_grad:
                inputs[0].register_hook(lambda grad: store.__setitem__(layer, take(grad).detach().cpu().clone()))

        blocks[layer].ln_1.register_forward_pre_hook(hook)


# ---------------------------------------------------------------- the official side
class Observer:
    """What the official functions compute, per image, as the harness wraps them."""

    def __init__(self) -> None:
        self.images: list[Record] = []
        self.starts: list[float] = []
        self.ends: list[float] = []

    @property
    def current(self) -> Record:
        """The record of the image being processed."""
        return self.images[-1]

    def wrap(self, function: Callable[..., Any], record: Callable[[Record, tuple, Any], None]) -> Callable[..., Any]:
        """``function`` that also hands its arguments and result to ``record``."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            record(self.current, args, result)
            return result

        return wrapped

    def watch_model(self, model: Any) -> Any:
        """Observe the CLIP's ``encode_image`` (a new image starts there)."""
        encode = model.encode_image

        def encode_image(image: Tensor, *args: Any, **kwargs: Any) -> Any:
            self.starts.append(time.perf_counter())
            self.images.append({"input": image.detach().cpu().clone()})
            result = encode(image, *args, **kwargs)
            self.current["global feature"] = result[0].detach().cpu().clone()
            self.current["patch tokens"] = result[1][-1].detach().cpu().clone()
            return result

        model.encode_image = encode_image
        return model

    def watch_learner(self, learner: Any) -> Any:
        """Observe the prompt learner's extractor, VAE decoder and text features (forward hooks)."""

        def prototypes(_: Any, __: Any, output: Tensor) -> None:
            self.current.setdefault("prototypes", []).append(output.detach().cpu().clone())

        def samples(_: Any, __: Any, output: Tensor) -> None:
            self.current["class-token samples"] = output.detach().cpu().clone()

        def text(_: Any, __: Any, output: Tensor) -> None:
            features = output.detach().cpu().mean(dim=2)
            self.current["text features"] = features / features.norm(dim=-1, keepdim=True)

        learner.extractor.register_forward_hook(prototypes)
        learner.vae_decoder.register_forward_hook(samples)
        learner.register_forward_hook(text)
        return learner


def run_official_test(
    src: Path, clip_file: Path, checkpoint: Path, data: Path, dataset: str, latents: Sequence[Tensor]
) -> Record:
    """The official ``test.test`` on ``data`` (batch 1) with the harness's latents; every observed stage per image."""
    import lib
    import test as official_test
    from lib.cops import PromptLearner

    observer = Observer()
    load = lib.load
    collected: Record = {}

    def load_clip(name: str, *args: Any, **kwargs: Any) -> Any:
        model, transform = load(str(clip_file), *args, **kwargs)
        return observer.watch_model(model), transform

    def learner(*args: Any, **kwargs: Any) -> Any:
        return observer.watch_learner(PromptLearner(*args, **kwargs))

    def averaged(record: Record, args: tuple, result: Tensor) -> None:
        record["averaged tokens"] = result.detach().cpu().clone()

    def similarity(record: Record, args: tuple, result: Tensor) -> None:
        name = "patch-text cosine" if args[0].shape[1] > 1 else "global-text cosine"
        record[name] = result.detach().cpu().clone()

    def upsampled(record: Record, args: tuple, result: Tensor) -> None:
        record["weighted patch probabilities"] = args[0].detach().cpu().clone()
        record["upsampled weighted map"] = result.detach().cpu().permute(0, 3, 1, 2).clone()

    def smoothed(record: Record, args: tuple, result: np.ndarray) -> None:
        record["map before smoothing"] = torch.from_numpy(np.asarray(args[0]).copy())
        observer.ends.append(time.perf_counter())

    def metrics(results: dict[str, Any], obj: str, metric: str) -> float:
        collected.update(results)
        raise Collected

    arguments = argparse.Namespace(
        data_path=str(data),
        checkpoint_path=str(checkpoint),
        dataset=dataset,
        depth=8,
        n_ctx=12,
        t_n_ctx=4,
        features_list=[LAYER],
        batch_size=1,
        image_size=IMAGE_SIZE,
        dpam=24,
    )
    draws = [z.reshape(SAMPLES, 1, -1).cpu() for z in latents]
    with contextlib.ExitStack() as stack:
        stack.enter_context(replaced(lib, "load", load_clip))
        stack.enter_context(replaced(official_test, "PromptLearner", learner))
        for name, record in (
            ("average_neighbor", averaged),
            ("compute_similarity", similarity),
            ("get_fullsize_map", upsampled),
            ("gaussian_filter", smoothed),
        ):
            stack.enter_context(replaced(official_test, name, observer.wrap(getattr(official_test, name), record)))
        stack.enter_context(replaced(official_test, "visualizer", lambda *args, **kwargs: None))
        stack.enter_context(replaced(official_test, "image_level_metrics", metrics))
        stack.enter_context(injected_randn(lambda size: len(size) == 3 and size[0] == SAMPLES, draws))
        stack.enter_context(cuda_as_identity())
        with contextlib.suppress(Collected):
            quiet(official_test.test, arguments)
    if not collected:
        raise RuntimeError("the official test() finished without reaching its metrics")
    (category,) = [name for name, values in collected.items() if values["pred_image"]]
    for index, record in enumerate(observer.images):
        record["final map"] = torch.as_tensor(np.asarray(collected[category]["pred_pixel"][index]))[None]
        record["image score"] = torch.tensor([collected[category]["pred_image"][index]])
    durations = [end - start for start, end in zip(observer.starts, observer.ends, strict=True)]
    return {"images": observer.images, "seconds": mean_after_warmup(durations)}


def run_official_training(src: Path, clip_file: Path, full_state: Path, data: Path, noise: Tensor) -> Record:
    """One batch of the official ``train.train`` (``--dataset mvtec``): the loss and the gradients before the step."""
    import lib
    import train as official_train
    from lib.cops import PromptLearner

    saved = torch.load(full_state, map_location="cpu", weights_only=True)["prompt_learner"]
    load, loader_class, adam = lib.load, torch.utils.data.DataLoader, torch.optim.Adam
    backward = torch.Tensor.backward
    record: Record = {"deep copies": {}}

    def load_clip(name: str, *args: Any, **kwargs: Any) -> Any:
        model, transform = load(str(clip_file), *args, **kwargs)
        blocks = model.transformer.resblocks  # the text tower, sequence-first [77, P, W]
        watch_deep_copies(blocks, record["deep copies"], lambda grad: grad[1 : 1 + 4].transpose(0, 1))
        return model, transform

    def learner(*args: Any, **kwargs: Any) -> Any:
        built = PromptLearner(*args, **kwargs)
        built.load_state_dict(saved)  # the seeded weights instead of a fresh initialisation
        record["learner"] = built
        return built

    def in_order(*args: Any, **kwargs: Any) -> Any:
        return loader_class(*args, **{**kwargs, "shuffle": False})  # the batch in the harness's order

    def recording_backward(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        record["loss"] = float(self.detach())
        return backward(self, *args, **kwargs)

    class StopBeforeStep(adam):  # type: ignore[misc, valid-type]
        def step(self, closure: Any = None) -> None:
            parameters = record["learner"].named_parameters()
            record["gradients"] = {n: p.grad.detach().cpu().clone() for n, p in parameters if p.grad is not None}
            raise Collected

    arguments = argparse.Namespace(
        train_data_path=str(data),
        save_path=str(data / "models"),
        dataset=TRAINING_SET,
        depth=8,
        n_ctx=12,
        t_n_ctx=4,
        features_list=[LAYER],
        batch_size=noise.shape[0],
        image_size=IMAGE_SIZE,
        dpam=24,
        epoch=1,
        learning_rate=1e-3,
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(replaced(lib, "load", load_clip))
        stack.enter_context(replaced(official_train, "PromptLearner", learner))
        stack.enter_context(replaced(torch.utils.data, "DataLoader", in_order))
        stack.enter_context(replaced(torch.optim, "Adam", StopBeforeStep))
        stack.enter_context(replaced(torch.Tensor, "backward", recording_backward))
        stack.enter_context(injected_randn(lambda size: size == (1, *noise.shape), [noise[None].clone()]))
        stack.enter_context(cuda_as_identity())
        with contextlib.suppress(Collected):
            quiet(official_train.train, arguments)
    if "gradients" not in record:
        raise RuntimeError("the official train() finished without an optimizer step")
    del record["learner"]
    return record


# ---------------------------------------------------------------- zsad
@torch.no_grad()
def zsad_inference(module: ZSADModule, item: dict[str, Any], dataset: str, device: str) -> Record:
    """Every compared stage of one image through the imported zsad model (its documented test path).

    The batch names ``dataset``, the official run's ``--dataset``: the preset's test constants follow it.
    """
    prompt, head = module.prompt, module.head
    image = item["image"][None].to(device)
    features = module.extract_features({"image": image, "dataset": [dataset]})
    scores, text = module.score(features)
    tokens = average_neighbor(features.dense_tokens[-1], features.grid, prompt.active_kernel(dataset))
    latents = prior_latents(features.global_embedding, prompt.r_test, prompt.vae.latent_dim, prompt.test_seed)
    probabilities = class_logits(tokens, text.embeddings, head.temperature).softmax(dim=-1)
    weights = spatial_weights(tokens, text.prototypes, head.constants(dataset)[0])
    return {
        "input": image,
        "global feature": features.global_embedding,
        "patch tokens": features.dense_tokens[-1],
        "averaged tokens": tokens,
        "prototypes": text.prototypes,
        "latents": latents[0],
        "class-token samples": prompt.vae.decode(latents[0]),
        "text features": text.embeddings,
        "patch-text cosine": class_logits(tokens, text.embeddings, head.temperature) * head.temperature,
        "global-text cosine": class_logits(features.global_embedding, text.embeddings, 1.0)[:, None],
        "weighted patch probabilities": probabilities * weights[..., None],
        "upsampled weighted map": scores.layer_probs[0],
        "final map": scores.anomaly_map,
        "image score": scores.image_score,
    }


def zsad_test(
    released: Path, trained_on: str, clip_file: Path, folder: Path, images: Sequence[Path], device: str
) -> Record:
    """Import the released-layout file for ``trained_on``, load it, and score ``images`` (batch 1) as the
    official test of ``--dataset SETTINGS[trained_on]`` does."""
    out = import_checkpoint(released, "cops", trained_on, folder / f"cops_{trained_on}.ckpt", weights=str(clip_file))
    release_memory()  # the importer's model
    detector = zsad.load(out, device=device, weights=str(clip_file))
    items = zsad_items(images)
    dataset = SETTINGS[trained_on]
    records = [zsad_inference(detector.module, item, dataset, device) for item in items]
    first = items[0]["image"][None]
    seconds = timed(lambda: detector.score_batch(first, dataset=dataset), repeats=1)[1]
    return {"images": records, "seconds": seconds}


def zsad_training(
    full_state: Path, clip_file: Path, folder: Path, images: Sequence[Path], noise: Tensor, official: Record
) -> Record:
    """Import the unfiltered file (VAE encoder included) and run one ``training_step``: loss and gradients.

    The official gradients (``official["gradients"]``, official names) are mapped onto zsad's names by the
    importer's own ``convert`` while the model is at hand.
    """
    out = import_checkpoint(full_state, "cops", TRAINING_SET, folder / "cops_full.ckpt", weights=str(clip_file))
    release_memory()
    module = zsad.load(out, device="cpu", weights=str(clip_file)).module
    copies: dict[int, Tensor] = {}
    watch_deep_copies(module.backbone.text.transformer.resblocks, copies, lambda grad: grad[:, 1 : 1 + 4])
    items = zsad_items(images)
    original = torch.randn_like

    def randn_like(tensor: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # the posterior sample's noise
        if tuple(tensor.shape) == tuple(noise.shape):
            return noise.to(tensor)
        return original(tensor, *args, **kwargs)

    with replaced(torch, "randn_like", randn_like):
        step = common.zsad_training_step(module, items, "cpu")
    return {
        "loss": step["loss"],
        "gradients": step["gradients"],
        "deep copies": copies,
        "official gradients": convert(official["gradients"], module),
    }


# ---------------------------------------------------------------- the comparison
FEATURE_STAGES = (
    "global feature",
    "patch tokens",
    "averaged tokens",
    "prototypes",
    "class-token samples",
    "text features",
    "patch-text cosine",
    "global-text cosine",
)
"""Compared relative to the official tensor's largest magnitude (rtol 1e-4)."""
SCORE_STAGES = ("weighted patch probabilities", "upsampled weighted map", "final map", "image score")
"""Compared absolutely (1e-5)."""


def fill_test(comparison: Comparison, label: str, official: Sequence[Record], ours: Sequence[Record]) -> None:
    """Per-image stages of one test setting, in pipeline order."""
    for theirs, mine in zip(official, ours, strict=True):
        theirs = {**theirs, "prototypes": torch.cat(theirs["prototypes"], dim=1)}  # normal, then anomaly
        comparison.stage("input", 1e-6).update(mine["input"], theirs["input"])
        for name in FEATURE_STAGES:
            stage = comparison.stage(f"{label} {name} (/ max |official|)", 1e-4)
            update_scaled(stage, mine[name], theirs[name].reshape(mine[name].shape))
        for name in SCORE_STAGES:
            comparison.stage(f"{label} {name}", 1e-5).update(mine[name], theirs[name].reshape(mine[name].shape))


FP16_SPACING = 2.0**-10
"""One fp16 step relative to the value (the spacing of fp16 numbers in [1, 2))."""


def fill_training(comparison: Comparison, official: Record, ours: Record) -> None:
    """The training loss and each parameter's gradient (the official ones under zsad's names, in ``ours``).

    Both codes cast each prompt's copy of the deep prompts to fp16, so autograd rounds the gradient of every copy to
    fp16 before summing the copies. Gradients that agree to ~1e-6 before that cast can round to neighbouring fp16
    numbers, so ``prompt.deep`` is held to one fp16 step relative to its largest entry, and the gradients of the
    copies before the cast (observed in both text towers) are held to the usual 1e-4.
    """
    scale = abs(official["loss"]) or 1.0
    comparison.stage("training loss (/ |official|)", 1e-5).update(
        torch.tensor(ours["loss"] / scale), torch.tensor(official["loss"] / scale)
    )
    theirs_copies = torch.stack([official["deep copies"][layer] for layer in range(1, DEEP_LAYERS + 1)])
    mine_copies = torch.stack([ours["deep copies"][layer] for layer in range(1, DEEP_LAYERS + 1)])
    stage = comparison.stage("gradient of each deep-prompt copy before its fp16 cast (/ max |grad|)", 1e-4)
    update_scaled(stage, mine_copies, theirs_copies)
    official_gradients = dict(sorted(ours["official gradients"].items()))
    for name, mine, theirs in matched_gradients(official_gradients, ours["gradients"]):
        if name == "prompt.deep":
            label, bound = f"gradient {name} (/ max |grad|; summed fp16-rounded copies: one fp16 step)", FP16_SPACING
        else:
            label, bound = f"gradient {name} (/ max |grad|)", 1e-4
        update_scaled(comparison.stage(label, bound), mine, theirs)


def isolated(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh process, so that each phase's ViT-L is gone (memory and all) when it ends."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        payload = pool.submit(serialized, function, *args).result()
    return torch.load(io.BytesIO(payload), weights_only=False)  # written just now by this harness's own child


def serialized(function: Callable[..., Any], *args: Any) -> bytes:
    """``function(*args)`` as ``torch.save`` bytes (tensors travel as data, not as shared memory of a dying process)."""
    buffer = io.BytesIO()
    torch.save(function(*args), buffer)
    return buffer.getvalue()


def official_prompt_phase(src: Path, folder: Path, seed: int) -> tuple[Path, Path, Path, list[str]]:
    """The seeded CLIP archive and the official prompt files; with notes on what the official import needed."""
    torch.manual_seed(seed)  # the global stream the official lib.load then draws from, as it always was
    clip_file = write_clip_archive(folder / "ViT-L-14-336px-seeded.pt", seed)
    release_memory()
    with official_code(src) as environment_notes:
        released, full_state = write_official_prompt_files(clip_file, folder, seed)
    return clip_file, released, full_state, environment_notes


def official_test_phase(
    src: Path, clip_file: Path, released: Path, folder: Path, images: Sequence[Path], test_set: str, latents: list
) -> Record:
    """The official test of ``images`` as ``--dataset test_set`` (see :func:`run_official_test`)."""
    with official_code(src):
        data = write_meta(folder / f"test_{test_set}", images, test_set)
        return run_official_test(src, clip_file, released, data, test_set, latents)


def official_training_phase(
    src: Path, clip_file: Path, full_state: Path, folder: Path, images: Sequence[Path], noise: Tensor
) -> Record:
    """One official training batch of ``images`` (see :func:`run_official_training`)."""
    with official_code(src):
        data = write_meta(folder / "train", images, TRAINING_SET)
        return run_official_training(src, clip_file, full_state, data, noise)


def compare(src: Path, images: Sequence[Path], *, seed: int = 0, device: str = "cpu") -> Comparison:
    """Run the official CoPS code and zsad's imported ``cops`` presets on the same weights and images.

    Each side's model is built and run in its own process, one at a time (a ViT-L at 518 px takes several GB).

    Args:
        src: A checkout of cqylunlun/CoPS (imported unchanged).
        images: MVTec-layout test images (masks found beside them); 2 to 4 keep a CPU run to minutes.
        seed: Seed of the CLIP weights, the official prompt weights and the training noise.
        device: Where zsad tests; the official code picks CUDA itself whenever it is available. Training runs on
            the CPU on both sides.

    Returns:
        The comparison, with the time per image of both test paths (the MVTec-trained setting).
    """
    src, images = checked_inputs("cops", src, images)
    train_images = training_batch_images(images)
    noise = torch.randn(len(train_images), 768, generator=torch.Generator().manual_seed(seed + 2))
    comparison = Comparison("cops")
    timings: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cops_parity_") as tmp, contextlib.chdir(tmp):
        folder = Path(tmp)
        progress("writing the seeded CLIP archive and the official prompt files")
        clip_file, released, full_state, environment_notes = isolated(official_prompt_phase, src, folder, seed)
        for trained_on, test_set in SETTINGS.items():
            progress(f"zsad: import --trained-on {trained_on}, load, test")
            ours = isolated(zsad_test, released, trained_on, clip_file, folder, images, device)
            latents = [record["latents"] for record in ours["images"]]
            progress(f"official: test.test --dataset {test_set}")
            official = isolated(official_test_phase, src, clip_file, released, folder, images, test_set, latents)
            fill_test(comparison, f"[{trained_on}-trained, test {test_set}]", official["images"], ours["images"])
            timings[trained_on] = (official["seconds"], ours["seconds"])
        progress(f"official: train.train --dataset {TRAINING_SET}, one batch")
        official_training = isolated(official_training_phase, src, clip_file, full_state, folder, train_images, noise)
        progress("zsad: import the unfiltered file, one training_step")
        ours_training = isolated(zsad_training, full_state, clip_file, folder, train_images, noise, official_training)
        fill_training(comparison, official_training, ours_training)
    comparison.seconds_official, comparison.seconds_zsad = timings["mvtec"]
    comparison.notes += [
        setup_note(src, images, seed, device, train_images),
        "same noise: zsad's seeded per-image prior latents handed to the official torch.randn((10, 1, 768)); one "
        "seeded posterior noise for both training steps",
        f"time per image of the MVTec-trained setting; VisA-trained: official {timings['visa'][0]:.3f} s, "
        f"zsad {timings['visa'][1]:.3f} s. Official: encode_image to gaussian_filter of its test loop (after the "
        "first image); zsad: zsad.load's Detector.score_batch (after a warm-up)",
    ]
    comparison.notes += environment_notes
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table; exit status 1 when a stage is out of bounds."""
    args = parity_parser(__doc__ or "", "CoPS").parse_args(argv)
    return report(compare(args.src, default_images(args.images), seed=args.seed, device=args.device))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
