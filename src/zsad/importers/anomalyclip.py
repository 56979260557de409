"""AnomalyCLIP's released checkpoints (zqhang/AnomalyCLIP) as zsad state dicts.

The official ``train.py`` saves ``{"prompt_learner": AnomalyCLIP_PromptLearner.state_dict()}`` per epoch; the
authors ship epoch 15 of two runs in the repository. The run folder names the dataset the file is *tested* on, not
the one it was trained on (``train.sh`` and ``test.sh``):

- ``checkpoints/9_12_4_multiscale/epoch_15.pth``: trained on the VisA test split (``--trained-on visa``), tested on
  MVTec AD;
- ``checkpoints/9_12_4_multiscale_visa/epoch_15.pth``: trained on the MVTec AD test split (``--trained-on mvtec``),
  tested on VisA and every other dataset.

Both are bound to ``configs/released/anomalyclip.yaml`` (patch maps from layer 24 only, as the current
``test.sh``). The keys map onto the ``static`` prompt (``n`` context tokens, text width ``W``, ``depth - 1`` deep
prompts of ``k`` tokens, context length 77):

- ``ctx_pos`` ``[1, 1, n, W]`` -> ``prompt.context[0]`` (normal, "[V..] object.");
- ``ctx_neg`` ``[1, 1, n, W]`` -> ``prompt.context[1]`` (anomaly, "[W..] damaged object.");
- ``compound_prompts_text.<i>`` ``[k, W]`` -> ``prompt.deep[i]``;
- ``compound_prompt_projections.<i>.weight`` ``[896, W]`` and ``.bias`` ``[896]``: shape-checked and dropped, the
  official forward pass never calls these layers;
- ``token_prefix_pos/neg`` ``[1, 1, 1, W]`` and ``token_suffix_pos/neg`` ``[1, 1, 77 - 1 - n, W]``: compared with
  the template embeddings zsad builds from its own backbone;
- ``tokenized_prompts_pos/neg`` ``[1, 1, 77]``: compared with zsad's tokens of the same templates.

The buffers are what the official code computed from *its* CLIP's token table; zsad rebuilds them from the backbone
it loads, so they are compared, never copied: a difference means that the backbone is not the one the file was made
with (or that the templates differ), and the import stops there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from zsad.errors import CheckpointError
from zsad.importers.base import (
    ReleasedFormat,
    key_set_problems,
    load_official_file,
    register_format,
    saved_state_dict,
    uncovered_parameters,
)
from zsad.module import ZSADModule
from zsad.prompts.static import PLACEHOLDER, StaticPrompt

PROJECTION_WIDTH = 896
"""Output width of the official, never-used ``compound_prompt_projections`` (fixed in the official code)."""

BUFFER_TOLERANCE = 1e-6
"""Largest absolute difference accepted between an official buffer and zsad's rebuilt one: both are rows of the
same fp32 token table, so anything above float noise means another backbone."""

STATES = ("pos", "neg")
"""Official suffix of the normal and the anomaly prompt, in zsad's context order."""

PRESET = ("backbone/vit_l_14_336_openai.yaml", "released/anomalyclip.yaml")


def read(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official AnomalyCLIP checkpoint, under the prompt learner's own key names.

    Raises:
        CheckpointError: Unreadable file, or a file without the ``prompt_learner`` state dict train.py writes.
    """
    example = "AnomalyCLIP's train.py, e.g. checkpoints/9_12_4_multiscale/epoch_15.pth"
    return saved_state_dict(load_official_file(path), path, "prompt_learner", example)


def official_shapes(prompt: StaticPrompt, context_length: int) -> dict[str, tuple[int, ...]]:
    """Every key the official prompt learner saves, with its shape, for the sizes of ``prompt``."""
    width = prompt.context.shape[-1]
    shapes: dict[str, tuple[int, ...]] = {}
    for state in STATES:
        shapes[f"ctx_{state}"] = (1, 1, prompt.n_ctx, width)
        shapes[f"token_prefix_{state}"] = (1, 1, 1, width)
        shapes[f"token_suffix_{state}"] = (1, 1, context_length - 1 - prompt.n_ctx, width)
        shapes[f"tokenized_prompts_{state}"] = (1, 1, context_length)
    for index in range(prompt.num_deep_layers):
        shapes[f"compound_prompts_text.{index}"] = (prompt.deep_length, width)
        shapes[f"compound_prompt_projections.{index}.weight"] = (PROJECTION_WIDTH, width)
        shapes[f"compound_prompt_projections.{index}.bias"] = (PROJECTION_WIDTH,)
    return shapes


def convert(official: Mapping[str, Tensor], module: ZSADModule) -> dict[str, Tensor]:
    """Map the tensors :func:`read` returns onto ``module``'s trainable state, checking every key, shape and buffer.

    Args:
        official: ``read``'s output.
        module: A model built from the AnomalyCLIP preset (``static`` prompt), whose sizes the file must have.

    Returns:
        ``{"prompt.context", "prompt.deep"}`` (every key of ``module.state_dict()``), ready for ``load_state_dict``.

    Raises:
        CheckpointError: Naming every unknown, missing or mis-shaped key, a rebuilt buffer that differs (with the
            largest difference), or a model that is not AnomalyCLIP's.
    """
    prompt = static_prompt(module)
    expected = official_shapes(prompt, module.backbone.text.context_length)
    problems = key_problems(official, expected)
    if not problems:
        problems = buffer_problems(official, prompt, module)
    converted = {} if problems else trained_state(official, prompt)
    trainable = module.state_dict()
    if not problems:
        problems = uncovered_parameters(trainable, converted, "AnomalyCLIP")
    if problems:
        raise CheckpointError(
            f"The AnomalyCLIP checkpoint does not fit the AnomalyCLIP preset: {'; '.join(problems)}. Build the model "
            "from configs/released/anomalyclip.yaml with the sizes and CLIP weights the file was trained "
            "with (n_ctx, deep_depth, deep_length, backbone)."
        )
    return {key: value.detach().to(trainable[key].dtype).clone() for key, value in converted.items()}


def static_prompt(module: ZSADModule) -> StaticPrompt:
    """The module's static prompt.

    Raises:
        CheckpointError: The module was not built from the AnomalyCLIP preset.
    """
    if not isinstance(module.prompt, StaticPrompt):
        raise CheckpointError(
            f"An AnomalyCLIP checkpoint needs a model with the static prompt, not {type(module.prompt).__name__}; "
            "build it from configs/released/anomalyclip.yaml."
        )
    return module.prompt


def key_problems(official: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Unknown, missing and mis-shaped official keys, one phrase each kind."""
    problems = key_set_problems(official, expected)
    for key, shape in expected.items():
        if key in official and tuple(official[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(official[key].shape)} but this preset needs {shape}")
    return problems


def buffer_problems(official: Mapping[str, Tensor], prompt: StaticPrompt, module: ZSADModule) -> list[str]:
    """Official buffers that differ from what zsad rebuilds from its own backbone and templates."""
    problems = []
    templates = [" ".join([PLACEHOLDER] * prompt.n_ctx + [suffix]) for suffix in prompt.suffixes]
    token_ids = module.backbone.text.tokenize(templates).cpu()
    embeddings = prompt.template_embeddings.detach().float().cpu()
    for index, state in enumerate(STATES):
        ids = official[f"tokenized_prompts_{state}"].reshape(-1).long()
        if not torch.equal(ids, token_ids[index]):
            position = int((ids != token_ids[index]).nonzero()[0, 0])
            problems.append(
                f"tokenized_prompts_{state} differs from zsad's tokens of '{templates[index]}' from position "
                f"{position} (official {ids[position].item()}, zsad {token_ids[index, position].item()})"
            )
        rebuilt = {
            f"token_prefix_{state}": embeddings[index, :1],
            f"token_suffix_{state}": embeddings[index, 1 + prompt.n_ctx :],
        }
        for key, ours in rebuilt.items():
            difference = (official[key].reshape(ours.shape).float() - ours).abs().max().item()
            if not difference <= BUFFER_TOLERANCE:  # also catches NaN
                problems.append(
                    f"buffer {key} differs from zsad's template embedding by up to {difference:.3g} (tolerance "
                    f"{BUFFER_TOLERANCE:g}): the file was made with other CLIP weights than the backbone loaded"
                )
    return problems


def trained_state(official: Mapping[str, Tensor], prompt: StaticPrompt) -> dict[str, Tensor]:
    """The trained tensors under zsad's names (the keys and shapes are already checked)."""
    context = torch.stack([official[f"ctx_{state}"].reshape(prompt.context.shape[1:]) for state in STATES])
    state = {"prompt.context": context}
    if prompt.num_deep_layers:
        deep = [official[f"compound_prompts_text.{index}"] for index in range(prompt.num_deep_layers)]
        state["prompt.deep"] = torch.stack(deep)
    return state


FORMAT = register_format(
    ReleasedFormat(
        name="anomalyclip",
        description="AnomalyCLIP (zqhang/AnomalyCLIP) checkpoints/9_12_4_multiscale*/epoch_15.pth: "
        "9_12_4_multiscale was trained on VisA, 9_12_4_multiscale_visa on MVTec AD",
        presets={"mvtec": PRESET, "visa": PRESET},
        read=read,
        convert=convert,
    )
)
