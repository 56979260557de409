"""zsad's WinCLIP against anomalib 2.7's WinCLIP: same random-weight CLIP, same images, scores, maps and speed.

Both sides get the same weights (anomalib's CLIP is built without weights, then every tensor is copied from zsad's
backbone) and the same normalised images, with the object name "object" (anomalib's default and zsad's when a
batch names none). zsad runs its WinCLIP config (``configs/method/winclip.yaml``, weights swapped for random
ones); anomalib runs ``WinClipModel`` in zero-shot mode. Printed: the largest absolute differences of the image
scores, the anomaly maps and the cosines before the softmax (full image and every window of both sizes), and the
time per image of zsad, of anomalib and of the bare image tower (``model.encode_image``).

anomalib's known bug (anomalib#2571, closed unfixed): under open_clip 3.x it permutes the window tokens to
sequence-first before the batch-first transformer, so attention runs across the windows instead of within each
one, every window gets the same embedding and the maps come out flat. The comparison therefore runs anomalib
twice: as installed (the bug, shown for the record), and with that single mismatch corrected by
:func:`anomalib_windows_corrected`, a monkeypatch applied in this script only, which hands the transformer the
window tokens batch-first (attention within each window) and changes nothing else.

Known differences that remain, both deliberate and exact up to float rounding: zsad cuts the prompts to their
longest sentence instead of 77 tokens (exact under the causal mask), and averages the sentence embeddings then
L2-normalises the mean (anomalib keeps the raw mean; cosines are the same).

anomalib is an optional extra, used only here (``pip install -e .[bench]``; see docs/performance.md for the
install steps that keep zsad's pins). Without it the script prints a note and exits 0.

    python benchmarks/winclip_vs_anomalib.py                            # ViT-B-16-plus-240, random weights
    python benchmarks/winclip_vs_anomalib.py --backbone tiny-random     # seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import METHODS, REAL, TINY, bare_image_tower, build_cli, timed

TOLERANCE = 1e-5
OBJECT_NAME = "object"


def anomalib_winclip() -> types.ModuleType | None:
    """anomalib's WinCLIP torch module, or ``None`` when anomalib (or its open_clip extra) is not installed."""
    try:
        from anomalib.models.image.winclip import torch_model
    except ImportError:
        return None
    return torch_model


def build_zsad(backbone: str) -> nn.Module:
    """zsad's WinCLIP ``ZSADModule`` from the shipped config, random weights, eval mode."""
    with tempfile.TemporaryDirectory() as scratch:  # the CLI wants a data config; nothing is generated
        cli = build_cli(METHODS["winclip"], backbone, [f"--data.init_args.root={scratch}"])
    return cli.model.eval()


def copy_clip_weights(backbone: nn.Module, clip: nn.Module) -> None:
    """Load every tensor of zsad's frozen CLIP (image and text towers) into an open_clip ``CLIP``."""
    clip.visual.load_state_dict(backbone.visual.state_dict())
    text = backbone.text
    for name in ("token_embedding", "transformer", "ln_final"):
        getattr(clip, name).load_state_dict(getattr(text, name).state_dict())
    with torch.no_grad():
        clip.positional_embedding.copy_(text.positional_embedding)
        if isinstance(clip.text_projection, nn.Module):
            clip.text_projection.load_state_dict(text.text_projection.state_dict())
        else:
            clip.text_projection.copy_(text.text_projection)


def build_anomalib(torch_model: types.ModuleType, zsad_model: nn.Module) -> nn.Module:
    """anomalib's zero-shot ``WinClipModel`` on zsad's architecture and weights."""
    spec = zsad_model.backbone.spec()["init_args"]
    # anomalib reads the architecture and the weights tag from module constants when the model is built
    constants = torch_model.BACKBONE, torch_model.PRETRAINED
    torch_model.BACKBONE, torch_model.PRETRAINED = spec["model_name"], None
    try:
        model = torch_model.WinClipModel(scales=tuple(spec["window_sizes"]))
    finally:
        torch_model.BACKBONE, torch_model.PRETRAINED = constants
    copy_clip_weights(zsad_model.backbone, model.clip)
    model.setup(OBJECT_NAME)  # the text embeddings, from the copied weights
    return model.eval()


class BatchFirstWindows(nn.Module):
    """Gives a batch-first transformer the sequence-first ``[L, N, W]`` window tokens anomalib hands it, batch-first.

    With it, each window's ``L`` tokens attend to each other, as WinCLIP intends, instead of the ``N`` windows
    attending to each other at every token position (anomalib#2571).
    """

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, tokens: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.transformer(tokens.transpose(0, 1), *args, **kwargs).transpose(0, 1)


@contextmanager
def anomalib_windows_corrected(model: nn.Module) -> Iterator[None]:
    """MONKEYPATCH (this benchmark only): anomalib's window pass with attention within each window (anomalib#2571).

    The window method of this one instance is wrapped so that, while it runs, the image tower's transformer is
    :class:`BatchFirstWindows` around the real one; the full-image pass and everything else stay anomalib's.
    """
    original = type(model)._get_window_embeddings

    def corrected(self: nn.Module, feature_map: Tensor, masks: Tensor) -> Tensor:
        visual = self.clip.visual
        transformer = visual.transformer
        visual.transformer = BatchFirstWindows(transformer)
        try:
            return original(self, feature_map, masks)
        finally:
            visual.transformer = transformer

    model.__dict__["_get_window_embeddings"] = types.MethodType(corrected, model)
    try:
        yield
    finally:
        del model.__dict__["_get_window_embeddings"]


@dataclass
class Outputs:
    """What one implementation gives for a batch: scores, maps and the cosines before the softmax."""

    image_score: Tensor
    anomaly_map: Tensor
    image_cosines: Tensor
    window_cosines: list[Tensor]


def zsad_outputs(model: nn.Module, images: Tensor) -> Outputs:
    """zsad's scores (the module's forward) and the cosines its head turns into probabilities."""
    from zsad.heads.maps import class_logits

    scores = model(images)
    features = model.extract_features({"image": images})
    text = model.prompt.synthesize(features, model.backbone.text).embeddings
    return Outputs(
        image_score=scores.image_score,
        anomaly_map=scores.anomaly_map,
        image_cosines=class_logits(features.global_embedding, text, 1.0),  # temperature 1: the raw cosines
        window_cosines=[class_logits(windows, text, 1.0) for windows in features.window_embeddings],
    )


def anomalib_outputs(torch_model: types.ModuleType, model: nn.Module, images: Tensor) -> Outputs:
    """anomalib's scores (its forward) and the cosines from its own ``encode_image`` and ``cosine_similarity``."""
    from anomalib.models.image.winclip.utils import cosine_similarity

    result = model(images)
    image_embeddings, window_embeddings, _ = model.encode_image(images)
    text = model.text_embeddings
    return Outputs(
        image_score=result.pred_score,
        anomaly_map=result.anomaly_map,
        image_cosines=cosine_similarity(image_embeddings, text),
        window_cosines=[cosine_similarity(windows, text) for windows in window_embeddings],
    )


def max_differences(ours: Outputs, theirs: Outputs) -> dict[str, float]:
    """Largest absolute difference of each quantity."""

    def largest(a: Tensor, b: Tensor) -> float:
        return float((a.float() - b.float()).abs().max())

    cosines = [largest(ours.image_cosines, theirs.image_cosines)]
    cosines += [largest(a, b) for a, b in zip(ours.window_cosines, theirs.window_cosines, strict=True)]
    return {
        "image score": largest(ours.image_score, theirs.image_score),
        "anomaly map": largest(ours.anomaly_map, theirs.anomaly_map),
        "cosines": max(cosines),
    }


def flatness(outputs: Outputs) -> dict[str, float]:
    """How much the windows differ: the spread of window cosines and of each map, largest over the batch."""
    window_spread = max(float((c - c[:, :1]).abs().max()) for c in outputs.window_cosines)
    map_spread = float((outputs.anomaly_map.flatten(1).amax(1) - outputs.anomaly_map.flatten(1).amin(1)).max())
    return {"window cosine spread": window_spread, "map max - min": map_spread}


def compare(torch_model: types.ModuleType, zsad_model: nn.Module, anomalib_model: nn.Module, images: Tensor) -> dict:
    """Differences to anomalib as installed and to anomalib with the window attention corrected."""
    with torch.inference_mode():
        ours = zsad_outputs(zsad_model, images)
        as_installed = anomalib_outputs(torch_model, anomalib_model, images)
        with anomalib_windows_corrected(anomalib_model):
            corrected = anomalib_outputs(torch_model, anomalib_model, images)
    return {
        "corrected": max_differences(ours, corrected),
        "as_installed": max_differences(ours, as_installed),
        "flatness": {
            "zsad": flatness(ours),
            "anomalib corrected": flatness(corrected),
            "anomalib as installed": flatness(as_installed),
        },
    }


def time_all(
    zsad_model: nn.Module, anomalib_model: nn.Module, bare: nn.Module, images: Tensor, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per repetition of zsad, anomalib (corrected and as installed) and the bare tower, back to back."""
    device = images.device
    runs = {
        "bare image tower": lambda: bare.encode_image(images),
        "zsad": lambda: zsad_model(images),
        "anomalib corrected": lambda: anomalib_model(images),
        "anomalib as installed": lambda: anomalib_model(images),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for step in range(warmup + repeats):
            for name, run in runs.items():
                corrected = name == "anomalib corrected"
                with anomalib_windows_corrected(anomalib_model) if corrected else nullcontext():
                    elapsed = timed(run, device)
                if step >= warmup:
                    seconds[name].append(elapsed)
    return seconds


def print_report(results: dict, seconds: dict[str, list[float]], batch: int, label: str) -> None:
    """Print the parity and timing tables."""
    from zsad.metrics.results import format_table

    print(f"zsad WinCLIP vs anomalib 2.7 WinCLIP on {label}, random weights, batch {batch}; torch {torch.__version__}")
    header = ["quantity", "max |zsad - anomalib corrected|", "max |zsad - anomalib as installed|", "target"]
    rows = [
        [name, f"{results['corrected'][name]:.2e}", f"{results['as_installed'][name]:.2e}", f"<= {TOLERANCE:.0e}"]
        for name in results["corrected"]
    ]
    print(format_table(header, rows))
    print()
    header = ["implementation", "window cosine spread", "map max - min"]
    rows = [
        [name, f"{v['window cosine spread']:.2e}", f"{v['map max - min']:.2e}"]
        for name, v in results["flatness"].items()
    ]
    print(format_table(header, rows))
    print()
    median = {name: 1000 * statistics.median(values) / batch for name, values in seconds.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(seconds[a], seconds[b], strict=True))

    header = ["implementation", "ms / image", "zsad / this", "target"]
    targets = {"bare image tower": "<= 13x", "anomalib corrected": "<= 1.0x"}
    rows = [
        [name, f"{ms:.1f}", "-" if name == "zsad" else f"{paired('zsad', name):.3f}x", targets.get(name, "-")]
        for name, ms in median.items()
    ]
    print(format_table(header, rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=[REAL, TINY], default=REAL, help="ViT-B-16-plus-240 or the tiny CLIP")
    parser.add_argument("--images", type=int, default=2, help="images in the batch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch_model = anomalib_winclip()
    if torch_model is None:
        print("anomalib not installed, skipping the WinCLIP comparison (pip install -e .[bench]; docs/performance.md)")
        return 0
    zsad_model = build_zsad(args.backbone)
    anomalib_model = build_anomalib(torch_model, zsad_model)
    bare = bare_image_tower(zsad_model.backbone)
    size = zsad_model.backbone.image_size
    images = torch.randn(args.images, 3, *size, generator=torch.Generator().manual_seed(args.seed))
    results = compare(torch_model, zsad_model, anomalib_model, images)
    seconds = time_all(zsad_model, anomalib_model, bare, images, args.warmup, args.repeats)
    label = f"{zsad_model.backbone.spec()['init_args']['model_name']} @ {size[0]} px"
    print_report(results, seconds, args.images, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
