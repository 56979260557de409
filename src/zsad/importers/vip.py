"""ViP2-CLIP's official checkpoints (kim0806/ViP2-CLIP) as zsad state dicts of the ``vip`` preset.

The official ``train.py`` saves ``epoch_<n>.pth`` as ``{"prompt_learner": ICA.state_dict(), "Zero_try":
FGP.state_dict()}``; the authors released two such files, ``models/mvtec_train_epoch_10.pth`` and
``models/visa_train_epoch_10.pth``. :func:`read` names each tensor ``<part>.<key>``, and the trained ones map onto the
preset (``configs/method/vip.yaml``) as follows, ``W`` being the text width and ``D`` the joint dimension (both 768
for ViT-L/14@336):

- ``prompt_learner.ctx_pos`` and ``ctx_neg`` [n_ctx, W] -> ``prompt.context`` [2, n_ctx, W] (normal, anomaly);
- ``prompt_learner.cls_ctx`` [3, W] -> ``prompt.class_tokens``;
- ``prompt_learner.cls_prompter.bias`` [1, D] -> ``prompt.meta_bias`` [D];
- ``prompt_learner.cls_prompter.fc.<k>.{0,2}.{weight,bias}`` -> ``prompt.meta_nets.<k>.{0,2}.{weight,bias}``;
- ``Zero_try.{q_proj_pre,k_proj_pre_1,v_proj_pre_1,proj_post_t}`` -> ``prompt.fgp.{query,key,value,output}``, the
  1x1 ``Conv1d`` weights [D, D, 1] as ``Linear`` weights [D, D].

The file also holds the ICA's buffers: the token embeddings of the fixed prompt pieces (``token_prefix_*``,
``token_middle_*``, ``token_suffix_*``; both states' taken from the "damaged" sentence, the official quirk) and the
token ids of both sentences (``tokenized_prompts_*``). The official test loads them with the weights, zsad rebuilds
them from the frozen token table, so each is compared with zsad's own and a difference is refused. Dropped, because
the official test never uses them: FGP's ``prompt_temp_l1`` (a temperature FGP creates and loads but never uses) and,
in files written by another version of ``train.py``, ``patch_selecter`` (an attention pooling that version trains
for the image score; ``test.py`` at the pinned commit scores with the top-k patches and does not load it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from zsad.errors import CheckpointError
from zsad.importers.base import ReleasedFormat, key_set_problems, load_official_file, register_format
from zsad.module import ZSADModule
from zsad.prompts.vip import ViPPrompt

logger = logging.getLogger(__name__)

PARTS = ("prompt_learner", "Zero_try")
"""The two state dicts every file of the official ``train.py`` holds: the ICA prompt learner and FGP."""

UNUSED_PARTS = ("patch_selecter",)
"""State dicts of other ``train.py`` versions that the official test at the pinned commit never loads."""

FGP_NAMES = {"q_proj_pre": "query", "k_proj_pre_1": "key", "v_proj_pre_1": "value", "proj_post_t": "output"}
"""Official FGP projection -> zsad ``FineGrainedPerception`` attribute."""

STATES = ("pos", "neg")
"""Official suffix of each state, in zsad's order (normal, anomaly)."""


def read(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official ViP2-CLIP checkpoint, named ``<part>.<key>`` (see the module docstring).

    Raises:
        CheckpointError: Unreadable file, or a file without the ICA or FGP state dict.
    """
    document = load_official_file(path)
    if not isinstance(document, Mapping):
        raise CheckpointError(
            f"'{path}' holds a {type(document).__name__}, not the dictionary ViP2-CLIP's train.py saves."
        )
    absent = [part for part in PARTS if not isinstance(document.get(part), Mapping)]
    if absent:
        names = " or ".join(repr(part) for part in absent)
        raise CheckpointError(
            f"'{path}' has no {names} state dict (keys: {sorted(map(str, document))[:8]}). Give an epoch_<n>.pth "
            "written by ViP2-CLIP's train.py, e.g. models/mvtec_train_epoch_10.pth."
        )
    tensors: dict[str, Tensor] = {}
    for part, value in document.items():
        if isinstance(value, Mapping):
            tensors.update({f"{part}.{key}": tensor for key, tensor in value.items() if isinstance(tensor, Tensor)})
        elif isinstance(value, Tensor):
            tensors[str(part)] = value  # not part of the format: convert names it as unknown
    return tensors


def trained_layout(prompt: ViPPrompt) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Official key -> (zsad key, official shape) of every trained tensor, sized from ``prompt``."""
    n_ctx, width = prompt.context.shape[1:]
    layout = {f"prompt_learner.ctx_{state}": ("prompt.context", (n_ctx, width)) for state in STATES}
    layout["prompt_learner.cls_ctx"] = ("prompt.class_tokens", tuple(prompt.class_tokens.shape))
    if prompt.meta_bias is not None:
        layout["prompt_learner.cls_prompter.bias"] = ("prompt.meta_bias", (1, *prompt.meta_bias.shape))
    for index, meta_net in enumerate(prompt.meta_nets):
        for layer in (0, 2):
            for kind in ("weight", "bias"):
                shape = tuple(getattr(meta_net[layer], kind).shape)
                ours = f"prompt.meta_nets.{index}.{layer}.{kind}"
                layout[f"prompt_learner.cls_prompter.fc.{index}.{layer}.{kind}"] = (ours, shape)
    for official, ours in FGP_NAMES.items():
        linear = getattr(prompt.fgp, ours)
        layout[f"Zero_try.{official}.weight"] = (f"prompt.fgp.{ours}.weight", (*linear.weight.shape, 1))
        layout[f"Zero_try.{official}.bias"] = (f"prompt.fgp.{ours}.bias", tuple(linear.bias.shape))
    return layout


def dropped_layout(prompt: ViPPrompt) -> dict[str, tuple[int, ...]]:
    """Official key -> shape of the tensors the official test never uses (accepted, checked, left out)."""
    dim = prompt.fgp.query.in_features
    hidden = dim // 4  # EnhancedTokenSelector: Linear(D, D/4), ReLU, Linear(D/4, 1)
    return {
        "Zero_try.prompt_temp_l1": (),
        "patch_selecter.attention_net.0.weight": (hidden, dim),
        "patch_selecter.attention_net.0.bias": (hidden,),
        "patch_selecter.attention_net.2.weight": (1, hidden),
        "patch_selecter.attention_net.2.bias": (1,),
    }


def rebuilt_buffers(module: ZSADModule) -> dict[str, Tensor]:
    """What the official ICA's buffers hold, computed from zsad's own prompt templates and tokenizer.

    ``token_*_<state>`` are slices of each state's template embeddings (SOS; the state word; what follows the class
    tokens) and ``tokenized_prompts_<state>`` the token ids of each state's own sentence, all with a leading 1.
    """
    prompt = _vip_prompt(module)
    token_ids = module.backbone.text.tokenize(prompt.sentences()).cpu()
    buffers: dict[str, Tensor] = {}
    for index, state in enumerate(STATES):
        template = prompt.template_embeddings[index].detach().cpu()
        word_start = 1 + prompt.n_ctx
        class_start = word_start + prompt.word_lengths[index]
        buffers[f"prompt_learner.token_prefix_{state}"] = template[None, :1]
        buffers[f"prompt_learner.token_middle_{state}"] = template[None, word_start:class_start]
        buffers[f"prompt_learner.token_suffix_{state}"] = template[None, class_start + prompt.n_class_tokens :]
        buffers[f"prompt_learner.tokenized_prompts_{state}"] = token_ids[index : index + 1]
    return buffers


def map_official(official: Mapping[str, Tensor], module: ZSADModule) -> dict[str, Tensor]:
    """Rename and reshape the trained official tensors present in ``official`` to zsad's keys (no checks).

    The two context tensors are stacked into ``prompt.context`` only when both are present. Also maps tensors
    shaped like the parameters, e.g. the official gradients.
    """
    layout = trained_layout(_vip_prompt(module))
    shapes = {key: value.shape for key, value in module.state_dict().items()}
    mapped: dict[str, Tensor] = {}
    for official_key, (ours, _) in layout.items():
        if official_key in official and ours != "prompt.context":
            mapped[ours] = official[official_key].reshape(shapes[ours])
    contexts = [f"prompt_learner.ctx_{state}" for state in STATES]
    if all(key in official for key in contexts):
        mapped["prompt.context"] = torch.stack([official[key] for key in contexts])
    return mapped


def convert(official: Mapping[str, Tensor], module: ZSADModule) -> dict[str, Tensor]:
    """Map the tensors :func:`read` returns onto ``module``'s trainable state, checking every key, shape and buffer.

    Args:
        official: ``read``'s output.
        module: A model built from the ViP2-CLIP preset (``configs/method/vip.yaml``) with the CLIP the file was
            trained on (its token table must give the file's buffers).

    Returns:
        Every key of ``module.state_dict()`` (the backbone is never part of it), ready for ``load_state_dict``.

    Raises:
        CheckpointError: Naming every unknown, missing or mis-shaped key, a buffer that differs from zsad's
            rebuilt one, or a model that is not ViP2-CLIP's.
    """
    prompt = _vip_prompt(module)
    layout, dropped, buffers = trained_layout(prompt), dropped_layout(prompt), rebuilt_buffers(module)
    expected_shapes = {key: shape for key, (_, shape) in layout.items()}
    expected_shapes |= {key: tuple(value.shape) for key, value in buffers.items()}
    problems = _key_problems(official, expected_shapes, dropped)
    if not problems:
        problems = _buffer_problems(official, buffers, prompt)
    if problems:
        raise CheckpointError(
            f"The ViP2-CLIP checkpoint does not fit the vip preset: {'; '.join(problems)}. Build the model from "
            "configs/method/vip.yaml (n_ctx 7, 3 class tokens) on the CLIP the file was trained on "
            "(OpenAI ViT-L/14@336)."
        )
    if any(key.startswith(f"{part}.") for key in official for part in UNUSED_PARTS):
        logger.warning(
            "The file also holds %s from another version of train.py; the official test scores with the top-k "
            "patches and never loads it, and so does zsad.",
            ", ".join(UNUSED_PARTS),
        )
    expected = module.state_dict()
    mapped = map_official(official, module)
    return {key: value.detach().to(expected[key].dtype).clone() for key, value in mapped.items()}


def _key_problems(
    official: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], dropped: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Unknown, missing and mis-shaped keys, one phrase each kind."""
    problems = key_set_problems(official, expected, ignore=lambda key: key in dropped)
    shapes = {**expected, **dropped}
    for key in sorted(set(official) & set(shapes)):
        if tuple(official[key].shape) != shapes[key]:
            problems.append(f"{key} has shape {tuple(official[key].shape)} but this preset needs {shapes[key]}")
    return problems


def _buffer_problems(official: Mapping[str, Tensor], buffers: Mapping[str, Tensor], prompt: ViPPrompt) -> list[str]:
    """The file's buffers that differ from zsad's rebuilt ones, with the largest difference; then the EOT positions."""
    problems = []
    for key, ours in buffers.items():
        difference = (official[key].double() - ours.double()).abs()
        largest = float(difference.max()) if difference.numel() else 0.0
        if largest > 0:
            problems.append(
                f"buffer {key} differs from zsad's rebuilt one by up to {largest:.3g} (another CLIP token table, "
                "other state words or another context length)"
            )
    for index, state in enumerate(STATES):
        file_eot = int(official[f"prompt_learner.tokenized_prompts_{state}"].argmax())
        if not problems and file_eot != int(prompt.eot[index]):
            problems.append(
                f"the file's {state} prompt is pooled at token {file_eot}, zsad's at {int(prompt.eot[index])} "
                "(state words of different token counts)"
            )
    return problems


def _vip_prompt(module: ZSADModule) -> ViPPrompt:
    """The module's ViP prompt, with ICA and FGP as the official model has them.

    Raises:
        CheckpointError: The module was not built from the ViP2-CLIP preset.
    """
    prompt = module.prompt
    if not isinstance(prompt, ViPPrompt) or not (prompt.use_ica and prompt.use_fgp):
        raise CheckpointError(
            f"A ViP2-CLIP checkpoint needs a model with the vip prompt (ICA and FGP on), not "
            f"{type(prompt).__name__}; build it from configs/method/vip.yaml."
        )
    return prompt


PRESET = ("backbone/vit_l_14_336_openai.yaml", "method/vip.yaml")
"""The official test.sh settings of both released files: ViT-L/14@336 at 518 px, layers 6/12/18/24, n_ctx 7, 3 class
tokens, top-k 50 and test.py's default sigma 8; nothing in them depends on the training set or the test dataset."""

FORMAT = register_format(
    ReleasedFormat(
        name="vip",
        description="ViP2-CLIP (kim0806/ViP2-CLIP): models/<mvtec|visa>_train_epoch_10.pth or train.py's epoch_<n>.pth",
        presets={"mvtec": PRESET, "visa": PRESET},
        read=read,
        convert=convert,
    )
)
