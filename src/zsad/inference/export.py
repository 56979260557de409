"""ONNX export: normalised images -> (image score, anomaly map[, defect class map]) as one graph.

The graph holds the frozen image tower and the scoring head; the class text embeddings are computed once at export
and stored as constants. That is only possible when the prompts do not depend on the image
(``PromptSynthesizer.image_conditioned`` false: static prompts, WinCLIP, DAPO): CoPS's and ViP2's prompts are
rebuilt from every image's features, so the text tower would have to run inside the graph for each image.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript). The TorchScript exporter cannot
translate the image tower (``aten::_native_multi_head_attention``, the fused attention path that
``nn.MultiheadAttention`` takes in eval mode) nor the reflect padding of the Gaussian smoothing; the dynamo
exporter translates both and keeps the batch dimension symbolic.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from zsad import __version__
from zsad.backbones.windows import WinCLIPBackbone, window_patch_indices
from zsad.data.transforms import OPENAI_MEAN, OPENAI_STD
from zsad.errors import ConfigError
from zsad.module import ZSADModule
from zsad.structures import Features, TextFeatures
from zsad.workflow.atomic import atomic_save

INPUT_NAME = "images"
OUTPUT_NAMES = ("image_score", "anomaly_map")
CLASS_MAP_NAME = "defect_class_map"
MAX_BATCH = 1024
"""Largest batch the exported graph is declared for (the batch axis is symbolic from 1 to this)."""
OPSET = 18


class ExportGraph(nn.Module):
    """The part of a :class:`~zsad.module.ZSADModule` that runs per image, with constant text embeddings.

    Args:
        module: The model in eval mode.
        text: Class embeddings from :func:`constant_text` (batch dimension 1).
        with_class_map: Also return the head's defect class map (DAPO).
    """

    def __init__(self, module: ZSADModule, text: TextFeatures, with_class_map: bool) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("embeddings", text.embeddings.detach().clone())
        self.per_layer = (
            nn.ParameterList(nn.Parameter(e.detach().clone(), requires_grad=False) for e in text.per_layer)
            if text.per_layer is not None
            else None
        )
        self.class_names = text.class_names
        self.with_class_map = with_class_map

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Image score ``[B]``, anomaly map ``[B, S, S]`` (and class map ``[B, S, S]``) of normalised images."""
        features = self.module.extract_features({"image": images})
        per_layer = tuple(self.per_layer) if self.per_layer is not None else None
        text = TextFeatures(embeddings=self.embeddings, class_names=self.class_names, per_layer=per_layer)
        scores = self.module.head(features, text, self.module.backbone.image_size)
        outputs = (scores.image_score, scores.anomaly_map)
        return (*outputs, scores.class_map) if self.with_class_map else outputs


def check_exportable(module: ZSADModule) -> None:
    """Refuse a model whose prompts depend on each image.

    Raises:
        ConfigError: Naming the prompt synthesizer and why it cannot be exported.
    """
    if module.prompt.image_conditioned:
        name = type(module.prompt).__name__
        raise ConfigError(
            f"{name} builds its prompts from each image's features (image-conditioned, as CoPS and ViP2-CLIP do), so "
            "its text embeddings cannot be computed once and stored in the graph: the text encoder would have to "
            "run inside the ONNX graph for every image, which zsad does not export. Export methods with "
            "image-independent prompts (static, winclip, dapo), or run this model in PyTorch (zsad.load, zsad "
            "predict)."
        )


def constant_text(module: ZSADModule, features: Features) -> TextFeatures:
    """The class embeddings of an image-independent prompt synthesizer, as one row that the head broadcasts.

    Args:
        module: The model.
        features: Features of any image, carrying the object name (``class_names``) for prompts that use it.

    Raises:
        ConfigError: If the synthesizer is image-conditioned or gives visual prototypes (per-image data).
    """
    check_exportable(module)
    text = module.prompt(features, module.backbone.text)
    if text.prototypes is not None:
        raise ConfigError(f"{type(module.prompt).__name__} gives per-image visual prototypes; it cannot be exported.")
    per_layer = tuple(e[:1] for e in text.per_layer) if text.per_layer is not None else None
    return TextFeatures(embeddings=text.embeddings[:1], class_names=text.class_names, per_layer=per_layer)


@contextlib.contextmanager
def windows_in_one_pass(module: ZSADModule) -> Iterator[None]:
    """Encode all WinCLIP windows of a batch in one pass while exporting, so the batch axis stays symbolic.

    WinCLIP's backbone splits its window sequences into passes of ``max_windows_per_pass`` (all of them when
    ``None``); a split whose size is the batch-dependent sequence count makes ``torch.export`` specialise the batch.
    A constant pass size that covers :data:`MAX_BATCH` images gives one pass for every batch the graph accepts.
    The setting bounds memory only; results do not change.
    """
    backbone = module.backbone
    if not isinstance(backbone, WinCLIPBackbone):
        yield
        return
    saved = backbone.max_windows_per_pass
    most_windows = max(
        len(window_patch_indices(backbone.grid, size, backbone.window_stride)) for size in backbone.window_sizes
    )
    backbone.max_windows_per_pass = MAX_BATCH * most_windows
    try:
        yield
    finally:
        backbone.max_windows_per_pass = saved


def require_exporter() -> None:
    """Raise a clear error when the ONNX packages are missing."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'zsad[export]'.")


def export_onnx(
    module: ZSADModule,
    path: str | Path,
    class_name: str | None = None,
    optimize: bool = False,
    dataset: str | None = None,
) -> Path:
    """Export a model with image-independent prompts as an ONNX graph ``images -> image_score, anomaly_map``.

    The input ``images`` is ``[batch, 3, S, S]`` float32, normalised like
    :class:`~zsad.data.transforms.ImageTransform` (OpenAI CLIP mean and std), at the backbone's size ``S``; the batch
    axis is symbolic (1 to :data:`MAX_BATCH`). Outputs: ``image_score [batch]``, ``anomaly_map [batch, S, S]``,
    and ``defect_class_map [batch, S, S]`` (int64, 0 normal) for heads with a class map. The file's metadata
    records the input size, normalisation, class names and zsad version.

    Args:
        module: The model (its prompts must not depend on the image, see :func:`check_exportable`); it is moved to
            the CPU and put in eval mode.
        path: Output ``.onnx`` file.
        class_name: Object name for prompts that use it (WinCLIP); ``None`` uses the prompt's default.
        optimize: Run onnxscript's graph optimiser too (slow for big graphs; ONNX Runtime optimises on load anyway).
        dataset: The benchmark the graph will score, for prompts whose words follow it (DAPO's ``by_dataset``
            test words); ``None``: unknown (DAPO: the training words). The metadata records it.

    Returns:
        The written path.

    Raises:
        ConfigError: The ONNX packages are missing, or the prompts depend on the image.
        WriteError: The file could not be written (a full disk, say); the previous file at ``path`` is kept.
    """
    require_exporter()
    check_exportable(module)
    module = module.to("cpu").eval()
    side = module.backbone.image_size
    probe_batch: dict = {"image": torch.zeros(1, 3, *side)}
    if class_name is not None:
        probe_batch["category"] = [class_name]
    if dataset is not None:
        probe_batch["dataset"] = [dataset]
    with torch.no_grad():
        features = module.extract_features(probe_batch)
        text = constant_text(module, features)
        probe = module.head(features, text, side)
    graph = ExportGraph(module, text, with_class_map=probe.class_map is not None).eval()
    names = [*OUTPUT_NAMES, CLASS_MAP_NAME] if graph.with_class_map else list(OUTPUT_NAMES)
    # batch 2, not 1: torch.export specialises a dimension whose example size is 0 or 1
    example = torch.zeros(2, 3, *side)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with windows_in_one_pass(module), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes={INPUT_NAME: {0: batch}},
            opset_version=OPSET,
            optimize=optimize,
        )
    program.model.metadata_props.update(
        {
            "zsad_version": __version__,
            "image_size": str(side[0]),
            "normalize_mean": ",".join(map(str, OPENAI_MEAN)),
            "normalize_std": ",".join(map(str, OPENAI_STD)),
            "class_names": ",".join(text.class_names),
            "object_name": class_name or getattr(module.prompt, "default_class_name", ""),
            "dataset": dataset or "",
            "prompt": type(module.prompt).__name__,
            "head": type(module.head).__name__,
        }
    )
    # atomically: a full disk or a kill mid-write leaves the previous file (or none), never a truncated one
    return atomic_save(path, lambda staged: program.save(str(staged)))
