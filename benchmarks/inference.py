"""Test-time inference cost of each method relative to the bare CLIP image tower it is built on.

For every method, ``ZSADModule`` scores a batch of images exactly as at test time (eval mode, inference mode,
``model(images)``: backbone features, prompt synthesis, scoring head, maps at image size). The reference is the
bare open_clip image tower of the same architecture, input size, batch size and dtype (``model.encode_image``),
timed back to back with it in every repetition (alternating which goes first). The table gives median milliseconds
per image and the median of the per-repetition ratios (zsad / bare), which is robust to slow drifts of the load.

Models are built from the shipped configs (backbone config, then the method config) by the CLI's own parser, so
each method runs with its reproduction settings; only the weights are random (``pretrained: null``). By default
that is the real ``ViT-L-14-336`` architecture at 518 px (WinCLIP: ``ViT-B-16-plus-240`` at 240 px, its own
backbone); ``--backbone tiny-random`` swaps in the tiny random CLIP for a quick run.

Where the time goes, per image: ``features`` is the backbone (with DAPO's visual tokens), ``V-V`` the share of it
spent on the V-V (DPAM) path (the backbone timed once more with the path switched off), ``prompts`` the rest of the
forward (prompt synthesis, or a cache lookup for image-independent prompts, which are encoded once per evaluation:
``once ms``) and ``head`` the scoring head with its upsampling and smoothing.

    python benchmarks/inference.py --backbone tiny-random              # seconds
    python benchmarks/inference.py                                     # ViT-L/14 at 518 px on a CPU: ~20 minutes
    python benchmarks/inference.py --device cuda --dtype bf16 --batch-size 8
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
REAL = "real"
TINY = "tiny-random"


@dataclass(frozen=True)
class Method:
    """A method as the benchmarks run it: its config and the inference-cost target of issue 7."""

    label: str
    config: str
    target: float | None
    own_backbone: bool = False
    """The method config sets the whole backbone (WinCLIP), so the backbone config goes after it."""


METHODS: dict[str, Method] = {
    "static": Method("static + dual_branch", "method/static.yaml", 1.10),
    "cops": Method("cops (R=10) + saga", "method/cops.yaml", 1.30),
    "vip": Method("vip + topk", "method/vip.yaml", 1.30),
    "dapo": Method("dapo + multiclass", "method/dapo.yaml", None),
    "winclip": Method("winclip + winclip_windows", "method/winclip.yaml", None, own_backbone=True),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def config_args(method: Method, backbone: str) -> list[str]:
    """CLI arguments that build ``method`` on the real architecture (random weights) or the tiny CLIP."""
    if backbone == TINY:
        tiny = "backbone/tiny_winclip.yaml" if method.own_backbone else "backbone/tiny.yaml"
        files = [method.config, tiny] if method.own_backbone else [tiny, method.config]
        extra = []
    else:
        files = [method.config] if method.own_backbone else ["backbone/vit_l_14_336_openai.yaml", method.config]
        extra = ["--model.backbone.init_args.pretrained=null"]  # the architecture, without downloading weights
    return [arg for name in [*files, "data/synthetic.yaml"] for arg in ("--config", str(CONFIGS / name))] + extra


def build_cli(method: Method, backbone: str, extra: list[str] | None = None) -> Any:
    """The ``ZSADCLI`` (not run) for a method, exactly as ``zsad fit``/``zsad test`` would build it."""
    from zsad.cli import ZSADCLI
    from zsad.config_aliases import install_loader, translate_argv

    install_loader()
    return ZSADCLI(args=translate_argv([*config_args(method, backbone), *(extra or [])]), run=False)


def bare_image_tower(backbone: nn.Module) -> nn.Module:
    """A plain open_clip CLIP of the backbone's architecture at its input size, random weights, eval, frozen."""
    import open_clip

    spec = backbone.spec()["init_args"]
    model = open_clip.create_model(
        spec["model_name"],
        pretrained=None,
        force_image_size=backbone.image_size[0],
        force_quick_gelu=bool(spec.get("force_quick_gelu")),
    )
    return model.requires_grad_(False).eval()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds ``work()`` takes, GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


class StageClock:
    """Forward hooks that record how long the backbone and the head of a module take inside one forward."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._handles = []
        for name in ("backbone", "head"):
            module = getattr(model, name)
            self._handles.append(module.register_forward_pre_hook(self._start(name)))
            self._handles.append(module.register_forward_hook(self._stop(name)))

    def _start(self, name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            synchronize(self.device)
            self._started[name] = time.perf_counter()

        return hook

    def _stop(self, name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            synchronize(self.device)
            self.seconds[name] = time.perf_counter() - self._started[name]

        return hook

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


@contextmanager
def without_vv_path(backbone: nn.Module) -> Iterator[None]:
    """Switch the backbone's V-V path off for a timing (its features then come from the q-k path only)."""
    start = backbone.vv_start_layer
    backbone.vv_start_layer = None
    try:
        yield
    finally:
        backbone.vv_start_layer = start


@dataclass
class Measurement:
    """Seconds per repetition of every timed quantity."""

    bare: list[float] = field(default_factory=list)
    zsad: list[float] = field(default_factory=list)
    features: list[float] = field(default_factory=list)
    head: list[float] = field(default_factory=list)
    features_without_vv: list[float] = field(default_factory=list)
    prompts_once: float | None = None


def measure(
    model: nn.Module, bare: nn.Module, images: Tensor, args: argparse.Namespace, device: torch.device
) -> Measurement:
    """Warm up, then time the bare tower and the zsad forward back to back ``args.repeats`` times."""
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype]) if DTYPES[args.dtype] else nullcontext()
    result = Measurement()
    clock = StageClock(model, device)
    split_vv = args.split_vv and model.backbone.vv_start_layer is not None
    try:
        with torch.inference_mode(), autocast:
            if not model.prompt.image_conditioned:  # encoded once per evaluation: time that once, then reuse it
                features = model.extract_features({"image": images})
                model.prompt.prompt_cache.clear()
                result.prompts_once = timed(lambda: model.prompt.synthesize(features, model.backbone.text), device)
            for _ in range(args.warmup):
                bare.encode_image(images)
                model(images)
            for repetition in range(args.repeats):
                # alternate which side goes first, so that a load change during a pair favours neither side
                first_bare = repetition % 2 == 0
                bare_seconds = timed(lambda: bare.encode_image(images), device) if first_bare else None
                result.zsad.append(timed(lambda: model(images), device))
                result.bare.append(bare_seconds or timed(lambda: bare.encode_image(images), device))
                result.features.append(clock.seconds["backbone"])
                result.head.append(clock.seconds["head"])
                if split_vv:
                    with without_vv_path(model.backbone):
                        result.features_without_vv.append(timed(lambda: model.backbone(images), device))
    finally:
        clock.remove()
    return result


def per_image_ms(seconds: list[float], batch: int) -> float:
    """Median milliseconds per image."""
    return 1000 * statistics.median(seconds) / batch


def summarise(name: str, method: Method, size: str, result: Measurement, batch: int) -> dict[str, Any]:
    """One table row (numbers kept as numbers for ``--json``)."""
    ratios = [z / b for z, b in zip(result.zsad, result.bare, strict=True)]
    row = {
        "method": name,
        "label": method.label,
        "backbone": size,
        "batch": batch,
        "bare_ms": per_image_ms(result.bare, batch),
        "zsad_ms": per_image_ms(result.zsad, batch),
        "ratio": statistics.median(ratios),
        "ratio_spread": (min(ratios), max(ratios)),
        "target": method.target,
        "features_ms": per_image_ms(result.features, batch),
        "head_ms": per_image_ms(result.head, batch),
        "vv_ms": None,
        "prompts_once_ms": None if result.prompts_once is None else 1000 * result.prompts_once,
    }
    # per repetition: the forward minus its backbone and head (prompt synthesis, or its cache lookup, and glue)
    rest = [z - f - h for z, f, h in zip(result.zsad, result.features, result.head, strict=True)]
    row["prompts_ms"] = per_image_ms(rest, batch)
    if result.features_without_vv:
        row["vv_ms"] = row["features_ms"] - per_image_ms(result.features_without_vv, batch)
    return row


def run_method(name: str, args: argparse.Namespace, bare_towers: dict[str, nn.Module]) -> dict[str, Any]:
    """Build one method, time it against the bare tower of its architecture, and free it again."""
    method = METHODS[name]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:  # the CLI wants a data config; nothing is generated
        cli = build_cli(method, args.backbone, [f"--data.init_args.root={scratch}"])
    model = cli.model.to(device).eval()
    backbone = model.backbone
    spec = backbone.spec()["init_args"]
    size = f"{spec['model_name']} @ {backbone.image_size[0]}"
    if size not in bare_towers:
        bare_towers.clear()  # one architecture in memory at a time
        gc.collect()
        bare_towers[size] = bare_image_tower(backbone).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, *backbone.image_size, generator=generator).to(device)
    result = measure(model, bare_towers[size], images, args, device)
    row = summarise(name, method, size, result, args.batch_size)
    if args.backbone == TINY:
        row["target"] = None  # the targets are for the real architectures; the tiny CLIP measures overheads
    return row


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for the table, ``-`` when it does not apply."""
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the results table and the set-up it was measured with."""
    from zsad.metrics.results import format_table

    print(
        f"device {args.device}, dtype {args.dtype}, batch {args.batch_size}, warm-up {args.warmup}, "
        f"{args.repeats} repetitions; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = [
        "method",
        "backbone",
        "bare ms/img",
        "zsad ms/img",
        "ratio",
        "(min-max)",
        "target",
        "features",
        "V-V",
        "prompts",
        "head",
        "once ms",
    ]
    table = []
    for row in rows:
        low, high = row["ratio_spread"]
        target = "-" if row["target"] is None else f"<= {row['target']:.2f}"
        met = "" if row["target"] is None else (" ok" if row["ratio"] <= row["target"] else " MISSED")
        table.append(
            [
                row["label"],
                row["backbone"],
                fmt(row["bare_ms"]),
                fmt(row["zsad_ms"]),
                f"{row['ratio']:.3f}x{met}",
                f"{low:.2f}-{high:.2f}",
                target,
                fmt(row["features_ms"]),
                fmt(row["vv_ms"]),
                fmt(row["prompts_ms"]),
                fmt(row["head_ms"]),
                fmt(row["prompts_once_ms"]),
            ]
        )
    print(format_table(header, table))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--backbone", choices=[REAL, TINY], default=REAL, help="real architecture or tiny CLIP")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype for both sides")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (medians are reported)")
    parser.add_argument("--no-split-vv", dest="split_vv", action="store_false", help="skip the V-V timing")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch-size and --repeats must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks/inference.py: --device cuda, but torch sees no GPU here; use --device cpu")
    bare_towers: dict[str, nn.Module] = {}
    rows = []
    for name in args.methods:
        rows.append(run_method(name, args, bare_towers))
        print(f"{name}: {rows[-1]['ratio']:.3f}x", file=sys.stderr, flush=True)
        gc.collect()
    print_table(rows, args)
    if args.json:
        import json

        from zsad.workflow.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
