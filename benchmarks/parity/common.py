"""Shared pieces of the official-code comparisons: stage records, timing, seeded OpenAI-format weights.

Every method module in this folder exposes ``compare(src, images, *, seed, device) -> Comparison``: it imports the
official code from ``src`` (a checkout the user gives; nothing of it is copied into zsad), runs the official test
path and zsad's documented path (``zsad import`` of the official prompt weights, the backbone loaded from the same
OpenAI-format weight file) on the same images at batch 1, and records the largest absolute difference at every stage.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


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


def timed(function: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Run ``function`` once to warm up, then ``repeats`` times; return the last result and the mean seconds."""
    result = function()
    if repeats <= 0:
        return result, float("nan")
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return result, (time.perf_counter() - start) / repeats


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
