"""DAPO's official checkpoints (boschresearch/defect-aware-prompt-optimization) as zsad state dicts.

The official ``train.py`` saves, per epoch, ``epoch_<n>.pth`` holding ``{"epoch", "prompt_learner", "visual_prompt",
"linear_adapter", "optimizer_state_dict", ...}``: one state dict per trained part, plus the optimizer and the
epoch's mean losses as numpy floats. (The official ``test.py`` asks for ``*_state_dict`` keys first, which
``train.py`` never writes; :func:`read` accepts both spellings.) The trained tensors map onto zsad's DAPO preset:

- ``prompt_learner.learnable_normal_tokens`` ``[P, n, W]`` -> ``prompt.normal_context``;
- ``prompt_learner.learnable_abnormal_tokens`` ``[P, n, W]`` -> ``prompt.anomaly_context``;
- ``prompt_learner.learnable_layer_tokens.<i>`` ``[k, W]`` -> ``prompt.text_deep[i]`` (stacked over the layers);
- ``visual_prompt.learnable_visual_tokens`` ``[L, k, width]`` -> ``prompt.vision_deep``;
- ``linear_adapter.fc.<i>.weight`` / ``.bias`` -> ``head.patch_maps.<i>.weight`` / ``.bias``.

``prompt_learner.meta_net.*`` (a small MLP the official prompt learner creates but never calls) is checked for
shape and left out. The official files hold no buffers: both codes rebuild the template token embeddings from
the frozen token table, so there is nothing saved that zsad would have to trust or compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zsad.errors import CheckpointError
from zsad.heads.multiclass import MultiClassHead
from zsad.importers.base import (
    ReleasedFormat,
    key_set_problems,
    load_official_file,
    register_format,
    saved_state_dict,
    uncovered_parameters,
)
from zsad.module import ZSADModule
from zsad.prompts.dapo import DAPOPrompt

COMPONENTS: dict[str, tuple[str, ...]] = {
    "prompt_learner": ("prompt_learner_state_dict", "prompt_learner"),
    "visual_prompt": ("visual_prompt_state_dict", "visual_prompt"),
    "linear_adapter": ("trainable_adapter_state_dict", "linear_adapter"),
}
"""Each trained part, with the keys it may be saved under: ``test.py``'s spelling first (as it looks them up),
then ``train.py``'s."""

META_NET = "prompt_learner.meta_net."
"""Prefix of the official prompt learner's unused MLP (``Linear(W, W/16)``, ReLU, ``Linear(W/16, W)``)."""


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling numpy scalars needs: train.py stores each epoch's mean losses as numpy floats."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(name)) for name in ("float64", "float32", "int64")]
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtypes,
    ]


def read(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official DAPO checkpoint, named ``<part>.<key>`` as in the module docstring.

    Raises:
        CheckpointError: Unreadable file, or a file without one of the three trained parts.
    """
    document = load_official_file(path, _numpy_scalar_globals())
    if not isinstance(document, Mapping):
        raise CheckpointError(f"'{path}' holds a {type(document).__name__}, not the dictionary DAPO's train.py saves.")
    tensors: dict[str, Tensor] = {}
    for part, spellings in COMPONENTS.items():
        # the spelling the file uses; train.py's own when it has neither, for the message
        saved_as = next((key for key in spellings if isinstance(document.get(key), Mapping) and document[key]), part)
        state = saved_state_dict(document, path, saved_as, "DAPO's train.py")
        tensors.update({f"{part}.{key}": value for key, value in state.items()})
    return tensors


def official_names(module: ZSADModule) -> dict[str, str]:
    """Official key -> zsad key for every tensor copied one to one (the text deep tokens are stacked instead)."""
    prompt, head = _dapo_parts(module)
    names = {
        "prompt_learner.learnable_normal_tokens": "prompt.normal_context",
        "prompt_learner.learnable_abnormal_tokens": "prompt.anomaly_context",
    }
    if prompt.vision_deep is not None:
        names["visual_prompt.learnable_visual_tokens"] = "prompt.vision_deep"
    for index in range(len(head.patch_maps or ())):
        for kind in ("weight", "bias"):
            names[f"linear_adapter.fc.{index}.{kind}"] = f"head.patch_maps.{index}.{kind}"
    return names


def convert(official: Mapping[str, Tensor], module: ZSADModule) -> dict[str, Tensor]:
    """Map the tensors :func:`read` returns onto ``module``'s trainable state, checking every key and shape.

    Args:
        official: ``read``'s output.
        module: A model built from the DAPO preset (``configs/method/dapo.yaml``), whose sizes the file must have.

    Returns:
        Every key of ``module.state_dict()`` (the backbone is never part of it), ready for ``load_state_dict``.

    Raises:
        CheckpointError: Naming every unknown, missing or mis-shaped key, or a model that is not DAPO's.
    """
    prompt, _ = _dapo_parts(module)
    expected = module.state_dict()
    converted: dict[str, Tensor] = {}
    problems: list[str] = []
    names = official_names(module)
    for official_key, zsad_key in names.items():
        if official_key in official:
            converted[zsad_key] = official[official_key]
    layer_keys = [f"prompt_learner.learnable_layer_tokens.{i}" for i in range(prompt.text_deep_layers)]
    if prompt.text_deep is not None and all(key in official for key in layer_keys):
        shapes = {tuple(official[key].shape) for key in layer_keys}
        if len(shapes) == 1:
            converted["prompt.text_deep"] = torch.stack([official[key] for key in layer_keys])
        else:
            problems.append(f"learnable_layer_tokens.* have differing shapes {sorted(shapes)}")
    known = {*names, *(layer_keys if prompt.text_deep is not None else ())}
    problems += _meta_net_problems(official, prompt)
    missing = [key for key in known if key not in official]
    problems += key_set_problems(official, known, ignore=lambda key: key.startswith(META_NET))
    for key, value in converted.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            problems.append(f"{key} has shape {tuple(value.shape)} but this preset needs {tuple(expected[key].shape)}")
    if not missing:
        problems += uncovered_parameters(expected, converted, "DAPO")
    if problems:
        raise CheckpointError(
            f"The DAPO checkpoint does not fit the DAPO preset: {'; '.join(problems)}. Build the model from "
            f"configs/method/dapo.yaml with the sizes the file was trained with (prompt_count, deep layers, backbone)."
        )
    return {key: value.detach().to(expected[key].dtype).clone() for key, value in converted.items()}


def _meta_net_problems(official: Mapping[str, Tensor], prompt: DAPOPrompt) -> list[str]:
    """Shape problems of the unused meta-net: it must be the official ``W -> W/16 -> W`` MLP, or absent."""
    width = prompt.normal_context.shape[-1]
    shapes = {
        f"{META_NET}0.weight": (width // 16, width),
        f"{META_NET}0.bias": (width // 16,),
        f"{META_NET}2.weight": (width, width // 16),
        f"{META_NET}2.bias": (width,),
    }
    problems = []
    for key, value in official.items():
        if not key.startswith(META_NET):
            continue
        if key not in shapes:
            problems.append(f"unknown key {key}")
        elif tuple(value.shape) != shapes[key]:
            problems.append(f"{key} has shape {tuple(value.shape)} but text width {width} needs {shapes[key]}")
    return problems


def _dapo_parts(module: ZSADModule) -> tuple[DAPOPrompt, MultiClassHead]:
    """The module's DAPO prompt and multiclass head.

    Raises:
        CheckpointError: The module was not built from the DAPO preset.
    """
    if not isinstance(module.prompt, DAPOPrompt) or not isinstance(module.head, MultiClassHead):
        raise CheckpointError(
            f"A DAPO checkpoint needs a model with the dapo prompt and the multiclass head, not "
            f"{type(module.prompt).__name__} with {type(module.head).__name__}; build it from configs/method/dapo.yaml."
        )
    return module.prompt, module.head


PRESET = ("backbone/vit_l_14_336_openai.yaml", "method/dapo.yaml")
"""The official preset (relative to ``configs/``); DAPO trains on MVTec AD only."""

FORMAT = register_format(
    ReleasedFormat(
        name="dapo",
        description="DAPO (boschresearch/defect-aware-prompt-optimization) epoch_<n>.pth written by train.py, "
        "trained on MVTec AD",
        presets={"mvtec": PRESET},
        read=read,
        convert=convert,
    )
)
