"""Shared pieces of the official-code comparisons: stage records, images, seeded weights, running the official code.

Every method module in this folder exposes ``compare(src, images, *, seed, device) -> Comparison``: it imports the
official code from ``src`` (a checkout the user gives; nothing of it is copied into zsad), runs the official test
path and zsad's documented path (``zsad import`` of the official prompt weights, the backbone loaded from the same
OpenAI-format weight file) on the same images at batch 1, and records the largest absolute difference at every stage.
This module holds what the four comparisons do alike; each method module keeps what is its method's own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

CLIP_MODEL = "ViT-L-14-336-quickgelu"
"""The backbone of every released preset compared here (OpenAI's ViT-L/14@336 has QuickGELU)."""
IMAGE_SIZE = 518
"""The input size of every official test script compared here."""

Record = dict[str, Any]
"""What one side computed, by stage name."""


@dataclass
class Stage:
    """One compared quantity.

    Attributes:
        name: What was compared, e.g. ``"patch tokens L24"`` or ``"final maps"``.
        max_abs_diff: Largest absolute difference over every element (and every image).
        max_rel_diff: Largest ``|a - b| / max(|b|, 1e-12)`` over every element, for features compared with an rtol.
        tolerance: The bound this stage is held to (absolute, unless ``relative``).
        relative: Whether ``tolerance`` bounds the relative difference.
    """

    name: str
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    tolerance: float = 1e-5
    relative: bool = False

    def update(self, ours: Tensor, official: Tensor) -> None:
        """Fold one more pair of tensors into the maxima (shapes must agree)."""
        ours, official = ours.detach().double().cpu(), official.detach().double().cpu()
        if ours.shape != official.shape:
            shapes = f"zsad {tuple(ours.shape)} vs official {tuple(official.shape)}"
            raise ValueError(f"{self.name}: shapes differ, {shapes}")
        difference = (ours - official).abs()
        self.max_abs_diff = max(self.max_abs_diff, float(difference.max()) if difference.numel() else 0.0)
        relative = difference / official.abs().clamp_min(1e-12)
        self.max_rel_diff = max(self.max_rel_diff, float(relative.max()) if relative.numel() else 0.0)

    @property
    def passed(self) -> bool:
        """Whether the stage is within its tolerance."""
        return (self.max_rel_diff if self.relative else self.max_abs_diff) <= self.tolerance


@dataclass
class Comparison:
    """The outcome of one method's comparison.

    Attributes:
        method: zsad method name.
        stages: Compared quantities, in pipeline order.
        seconds_official: Mean seconds per image of the official test path (after one warm-up image).
        seconds_zsad: The same for zsad.
        notes: Free-form remarks printed under the table (e.g. which official commit ran).
    """

    method: str
    stages: dict[str, Stage] = field(default_factory=dict)
    seconds_official: float = float("nan")
    seconds_zsad: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str, tolerance: float = 1e-5, relative: bool = False) -> Stage:
        """The stage called ``name``, created on first use."""
        if name not in self.stages:
            self.stages[name] = Stage(name, tolerance=tolerance, relative=relative)
        return self.stages[name]

    @property
    def passed(self) -> bool:
        """Whether every stage is within its tolerance."""
        return all(stage.passed for stage in self.stages.values())

    def table(self) -> str:
        """A markdown table of the stages, then the timing line."""
        lines = [
            f"### {self.method}",
            "",
            "| stage | max abs diff | max rel diff | bound | ok |",
            "|---|---|---|---|---|",
        ]
        for stage in self.stages.values():
            bound = f"rtol {stage.tolerance:.0e}" if stage.relative else f"{stage.tolerance:.0e}"
            ok = "yes" if stage.passed else "NO"
            lines.append(f"| {stage.name} | {stage.max_abs_diff:.2e} | {stage.max_rel_diff:.2e} | {bound} | {ok} |")
        ratio = self.seconds_zsad / self.seconds_official if self.seconds_official > 0 else float("nan")
        lines += [
            "",
            f"time per image: official {self.seconds_official:.3f} s, zsad {self.seconds_zsad:.3f} s "
            f"(zsad / official {ratio:.3f}x)",
        ]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def update_scaled(stage: Stage, ours: Tensor, official: Tensor) -> None:
    """Fold a pair into ``stage``, both divided by the official tensor's largest magnitude (1 if it is all zeros).

    A bound on the result is an rtol relative to the tensor's scale, which entries near zero cannot inflate.
    """
    scale = float(official.detach().abs().max()) or 1.0
    stage.update(ours.detach().cpu() / scale, official.detach().cpu() / scale)


def matched_gradients(
    official: Mapping[str, Tensor], ours: Mapping[str, Tensor]
) -> Iterator[tuple[str, Tensor, Tensor]]:
    """``(name, zsad's gradient, official gradient)`` for every official gradient, already under zsad's names.

    Raises:
        ValueError: zsad computed no gradient for one of them.
    """
    for name, theirs in official.items():
        mine = ours.get(name)
        if mine is None:
            raise ValueError(f"zsad computed no gradient for {name}")
        yield name, mine, theirs


# ---------------------------------------------------------------- the images
def default_images(count: int) -> list[Path]:
    """Real test images from ../shared/data (MVTec AD bottle: a normal one, then one of each defect, round robin).

    An empty list when the folder is absent.
    """
    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad" / "bottle" / "test"
    if not root.is_dir():
        return []
    kinds = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != "good", p.name))  # normal first
    per_kind = [sorted(kind.glob("*.png")) for kind in kinds]
    images = [paths[i] for i in range(max(map(len, per_kind), default=0)) for paths in per_kind if i < len(paths)]
    return images[:count]


def mask_for(image: Path) -> Path | None:
    """The MVTec-layout ground-truth mask of a test image, if there is one."""
    if image.parent.name == "good":
        return None
    candidate = image.parents[2] / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
    return candidate if candidate.is_file() else None


def describe_images(images: Sequence[Path]) -> str:
    """One line naming the images compared."""
    kinds = sorted({p.parent.name for p in images})
    return f"{len(images)} images ({', '.join(kinds)})"


def checked_inputs(method: str, src: Path, images: Sequence[Path]) -> tuple[Path, list[Path]]:
    """``src`` and ``images`` as absolute paths (the official code reads them from a ``meta.json`` elsewhere).

    Raises:
        SystemExit: No images.
    """
    if not images:
        raise SystemExit(f"{method} parity: no images; give MVTec-layout test images (../shared/data has some)")
    return Path(src).resolve(), [Path(p).resolve() for p in images]


TRAINING_BATCH = 2
"""Images in the compared training step: the official losses squeeze a batch of one to a scalar and fail."""


def training_batch_images(images: Sequence[Path], size: int = TRAINING_BATCH) -> list[Path]:
    """Up to ``size`` images for a training batch: anomalous ones with masks first, then a normal one, then the rest."""
    anomalous = [p for p in images if mask_for(p) is not None]
    normal = [p for p in images if p.parent.name == "good"]
    chosen = anomalous[: max(1, size - 1)] + normal[:1]
    chosen += [p for p in images if p not in chosen]
    return chosen[:size]


def write_official_meta(folder: Path, images: Sequence[Path], category: str | None = None) -> Path:
    """A ``meta.json`` in the official layout listing ``images`` (absolute paths) under the test split; ``folder``.

    Args:
        folder: Where to write it (created when missing).
        images: MVTec-layout test images; their masks are found beside them.
        category: The category every image is filed under; ``None`` files each under its own MVTec category.
    """
    categories: dict[str, list[dict[str, Any]]] = {}
    for path in images:
        mask = mask_for(path)
        item = {
            "img_path": str(path),
            "mask_path": str(mask) if mask is not None else "",
            "cls_name": category or path.parents[2].name,
            "specie_name": path.parent.name,
            "anomaly": int(mask is not None),
        }
        categories.setdefault(item["cls_name"], []).append(item)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"test": categories}))
    return folder


def zsad_items(images: Sequence[Path]) -> list[dict[str, Any]]:
    """Items of zsad's own dataset class for ``images`` (MVTec layout), as ``zsad fit`` loads them."""
    from zsad.data.datasets.base import AnomalyDataset, SampleRecord

    records = [
        SampleRecord(
            path=path,
            label=int(mask_for(path) is not None),
            category=path.parents[2].name,
            defect_type=path.parent.name,
            mask_path=mask_for(path),
            dataset="mvtec",
        )
        for path in images
    ]
    dataset = AnomalyDataset(records, IMAGE_SIZE)
    return [dataset[i] for i in range(len(dataset))]


def setup_note(
    src: Path, images: Sequence[Path], seed: int, device: str, train_images: Sequence[Path] | None = None
) -> str:
    """The note that says what ran: the official checkout, the images (and training batch), seed, model and device."""
    batch = f"; training batch {[p.parent.name for p in train_images]}" if train_images is not None else ""
    return (
        f"official {src.name} ({describe_images(images)}{batch}), seed {seed}, {CLIP_MODEL} at {IMAGE_SIZE} px, "
        f"batch 1, {torch.get_num_threads()} threads, zsad on {device}"
    )


# ---------------------------------------------------------------- the seeded weights
def seeded_clip_state_dict(model_name: str, seed: int) -> dict[str, Tensor]:
    """Random weights of an open_clip architecture, drawn from ``seed``, in OpenAI's key layout with its meta keys.

    open_clip's ``CLIP`` mirrors OpenAI's module names, so the open_clip state dict is OpenAI's once the three int64
    meta entries OpenAI's files carry (``input_resolution``, ``context_length``, ``vocab_size``) are added. The
    random draw is perturbed (every tensor gets seeded noise) so that no bias or LayerNorm sits at its constant
    initial value, which could hide a dropped parameter.
    """
    import open_clip

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # open_clip draws its initial weights from the global stream
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None)
    state = {key: value.detach().clone() for key, value in model.state_dict().items() if key != "attn_mask"}
    for key, value in state.items():
        if value.is_floating_point():
            scale = 0.02 if value.dim() > 1 else 0.1
            state[key] = value + scale * torch.randn(value.shape, generator=generator, dtype=value.dtype)
    state["logit_scale"] = torch.tensor(4.6052)  # ln(100), as the released OpenAI models
    state["input_resolution"] = torch.tensor(int(model.visual.image_size[0]))
    state["context_length"] = torch.tensor(int(model.context_length))
    state["vocab_size"] = torch.tensor(int(model.vocab_size))
    return state


class WeightTree(torch.nn.Module):
    """A module whose only content is parameters and buffers at given dotted names (no code to run)."""


def write_clip_archive(path: Path, seed: int, dtype: torch.dtype | None = None) -> Path:
    """The seeded :data:`CLIP_MODEL` weights as a TorchScript archive in OpenAI's layout, like ``ViT-L-14-336px.pt``.

    That is the format both sides read as released: the official loaders try ``torch.jit.load`` first and fall back
    to ``torch.load`` on the same, already consumed file object, which fails for a plain ``torch.save`` file; zsad
    reads the archive's ``state_dict()`` without running its code. Floating tensors are stored as parameters (cast to
    ``dtype`` when given; OpenAI's own files are fp16), OpenAI's int64 meta entries as buffers.
    """
    root = WeightTree()
    for key, value in seeded_clip_state_dict(CLIP_MODEL, seed).items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if part not in node._modules:
                node.add_module(part, WeightTree())
            node = node._modules[part]
        if value.is_floating_point():
            value = value if dtype is None else value.to(dtype)
            node.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
        else:
            node.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated; the archive format is not
        torch.jit.script(root).save(str(path))
    return path


# ---------------------------------------------------------------- importing and running the official code
def stand_in(name: str, **attributes: Any) -> types.ModuleType:
    """A module called ``name`` with ``attributes``; any other attribute is a function that raises when called."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def unavailable(attribute: str) -> Callable[..., Any]:
        if attribute.startswith("__"):
            raise AttributeError(attribute)

        def call(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{name}.{attribute} is not installed; the parity run should never call it")

        return call

    module.__getattr__ = unavailable  # type: ignore[attr-defined]
    module.__dict__.update(attributes)
    return module


def packaging_only_pkg_resources() -> types.ModuleType:
    """A ``pkg_resources`` stand-in carrying the installed ``packaging``.

    OpenAI's CLIP code, which the official repositories vendor, uses ``pkg_resources`` (gone from recent setuptools)
    only for ``pkg_resources.packaging.version``.
    """
    import packaging.version

    return stand_in("pkg_resources", packaging=packaging)


@contextlib.contextmanager
def stand_ins(modules: Sequence[types.ModuleType]) -> Iterator[list[str]]:
    """Install each of ``modules`` whose package is not installed; yield their names; remove them afterwards."""
    missing = [m for m in modules if m.__name__ not in sys.modules and importlib.util.find_spec(m.__name__) is None]
    sys.modules.update({module.__name__: module for module in missing})
    try:
        yield [module.__name__ for module in missing]
    finally:
        for module in missing:
            sys.modules.pop(module.__name__, None)


@contextlib.contextmanager
def official_import_path(src: Path, *top_level_modules: str) -> Iterator[None]:
    """Make the official checkout at ``src`` importable for the duration of the block.

    The official repositories use generic top-level names (``utils``, ``dataset``, ``prompt_ensemble``), so the
    modules they bring are dropped from ``sys.modules`` afterwards, and so are ``top_level_modules`` beforehand.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise SystemExit(f"vs_official: --src {src} is not a folder; give a checkout of the official repository")
    before = set(sys.modules)
    for name in top_level_modules:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(src))
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(src)):
                del sys.modules[name]


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` for the duration of the block."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def zero_masks_as_uint8() -> Iterator[list[int]]:
    """``Image.fromarray(float zeros, mode="L")`` gives an all-zero mask again, as the Pillow the official code pins.

    The official ``Dataset`` classes build a normal image's mask from a float64 array of zeros with mode ``"L"``;
    current Pillow refuses that pairing. Only all-zero non-uint8 arrays with mode ``"L"`` are cast (to uint8
    zeros, the same image); every other call reaches Pillow unchanged. Yields a one-element list counting the casts.
    """
    original = Image.fromarray
    cast = [0]

    def fromarray(obj: Any, mode: str | None = None, *args: Any, **kwargs: Any) -> Image.Image:
        if mode == "L" and isinstance(obj, np.ndarray) and obj.dtype != np.uint8 and not obj.any():
            obj = obj.astype(np.uint8)
            cast[0] += 1
        return original(obj, mode, *args, **kwargs)

    with replaced(Image, "fromarray", fromarray):
        yield cast


@contextlib.contextmanager
def official_code(
    src: Path, top_level_modules: Sequence[str], missing: Sequence[types.ModuleType]
) -> Iterator[list[str]]:
    """The official checkout importable, as :func:`official_import_path`, in the environment it needs here.

    Args:
        src: The official checkout.
        top_level_modules: Its top-level module names (dropped from ``sys.modules`` before and after).
        missing: Stand-ins (:func:`stand_in`) for packages it imports but that may not be installed.

    Yields:
        Notes on what was bridged for this environment (stand-ins, Pillow's zero masks), filled when the block ends.
    """
    notes: list[str] = []
    with stand_ins(missing) as installed, official_import_path(src, *top_level_modules), zero_masks_as_uint8() as cast:
        yield notes
    if installed:
        notes.append(f"stand-ins for uninstalled imports: {', '.join(installed)}")
    if cast[0]:
        notes.append(f"current Pillow refuses the official normal-image zero mask; cast to uint8 ({cast[0]} masks)")


@contextlib.contextmanager
def cuda_as_identity() -> Iterator[None]:
    """``Tensor.cuda()`` returns the tensor itself when there is no GPU (the official scripts always call it)."""
    if torch.cuda.is_available():
        yield
        return
    with replaced(torch.Tensor, "cuda", lambda self, *args, **kwargs: self):
        yield


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """The official prints and progress bars silenced."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def quiet(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an official function with its prints and progress bars silenced."""
    with silenced():
        return function(*args, **kwargs)


# ---------------------------------------------------------------- running zsad
def zsad_training_step(module: Any, items: Sequence[dict[str, Any]], device: str) -> Record:
    """One batch of ``items`` through ``ZSADModule.training_step``: ``loss``, every ``gradients`` and the ``batch``."""
    module.train()
    module.zero_grad(set_to_none=True)
    batch = default_collate(list(items))
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Lightning Trainer: nothing to log to
        loss = module.training_step(batch, 0)
    loss.backward()
    gradients = {name: p.grad.detach().cpu().clone() for name, p in module.named_parameters() if p.grad is not None}
    module.eval()
    return {"loss": float(loss.detach()), "gradients": gradients, "batch": batch}


# ---------------------------------------------------------------- timing
def timed(function: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Run ``function`` once to warm up, then ``repeats`` times; return the last result and the mean seconds."""
    result = function()
    if repeats <= 0:
        return result, float("nan")
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return result, (time.perf_counter() - start) / repeats


def mean_after_warmup(durations: Sequence[float]) -> float:
    """The mean of per-image ``durations`` without the first image (the warm-up); NaN with fewer than two."""
    timed_images = list(durations[1:])
    return sum(timed_images) / len(timed_images) if timed_images else float("nan")


# ---------------------------------------------------------------- the command line
def parity_parser(description: str, repository: str, which_images: str = "") -> argparse.ArgumentParser:
    """The options every method module's ``main`` takes: ``--src``, ``--images``, ``--seed`` and ``--device``.

    Args:
        description: The module's docstring (its first line is used).
        repository: The official repository's name, for ``--src``'s help.
        which_images: How the module picks its images, appended to ``--images``' help, e.g. ``" (half normal)"``.
    """
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help=f"checkout of the official {repository} repository")
    parser.add_argument(
        "--images", type=int, default=2, help=f"how many ../shared/data MVTec bottle images{which_images}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def report(comparison: Comparison) -> int:
    """Print the comparison table; the exit status: 1 when a stage is out of bounds, else 0."""
    print(comparison.table())
    return 0 if comparison.passed else 1
