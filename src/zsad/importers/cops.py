"""CoPS's official checkpoints (cqylunlun/CoPS) as zsad state dicts.

The official ``train.py`` saves, per epoch, ``epoch_<n>.pth`` holding ``{"prompt_learner": state_dict}``, from which
it first removes the unused modules (``projector``, ``projector_cls``, ``extractor_``), the VAE encoder and the
template buffers (``token_*``). The released files (``results/models/mvtec/epoch_5.pth``, trained on MVTec AD, and
``results/models/visa/epoch_10.pth``, trained on VisA) therefore hold 28 tensors. They map onto zsad's CoPS preset
(W = text width, D = joint width; both 768 for ViT-L/14):

=========================================================  ===================================================
official (``prompt_learner`` keys)                          zsad (``ZSADModule.state_dict()`` names)
=========================================================  ===================================================
``ctx_pos``, ``ctx_neg`` [1, 1, 14, W]                      ``prompt.context`` [2, 14, W] (normal, anomaly)
``t_n``, ``t_a`` [6, D]                                     ``prompt.ests.queries`` [2, 6, D] (normal, anomaly)
``extractor.{ln_1,attn,ln_2}.*``                            ``prompt.ests.extractor.{ln_1,attn,ln_2}.*``
``extractor.mlp.c_fc.*``, ``extractor.mlp.c_proj.*``        ``prompt.ests.extractor.mlp.0.*``, ``.mlp.2.*``
``vae_decoder.net.0.*``, ``vae_decoder.net.2.*``            ``prompt.vae.decoder.0.*``, ``prompt.vae.decoder.2.*``
``compound_prompts_text.<i>`` [4, W]                        ``prompt.deep[i]`` (stacked over the 8 layers)
``vae_encoder.net.0.*`` (if present)                        ``prompt.vae.encoder.0.*``
``vae_encoder.mean.*``, ``vae_encoder.log_var.*``           ``prompt.vae.to_mean.*``, ``prompt.vae.to_logvar.*``
=========================================================  ===================================================

``ctx_pos`` is the normal prompt: the official text features put it at index 0, and the anomaly score is the
softmax's index 1.

Not in the released files, and handled when a file has them (an unfiltered ``prompt_learner.state_dict()``):

- ``vae_encoder.*`` is mapped (zsad keeps the encoder so that training can continue). When it is absent, as in the
  released files, zsad's encoder keeps its official initialisation: testing never runs the encoder.
- ``projector.*``, ``projector_cls.*`` and ``extractor_.*`` are created by the official ``PromptLearner`` but never
  called in its forward pass; they are checked for shape and dropped.
- ``token_prefix_*``, ``token_suffix_*`` and ``tokenized_prompts_*`` are rebuilt by zsad from its own CLIP; they are
  compared with zsad's template (token ids equal, embeddings within :data:`BUFFER_TOLERANCE`), never trusted.
"""

from __future__ import annotations

import logging
import re
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
)
from zsad.module import ZSADModule
from zsad.prompts.cops.synthesizer import PLACEHOLDER, CoPSPrompt

logger = logging.getLogger(__name__)

SAVED_PART = "prompt_learner"
"""The key under which the official ``train.py`` saves the prompt learner's state dict."""

BUFFER_TOLERANCE = 1e-5
"""Largest difference allowed between a saved template embedding and zsad's (both come from the CLIP token table)."""

CONTEXTS = ("ctx_pos", "ctx_neg")
QUERIES = ("t_n", "t_a")
DEEP = "compound_prompts_text."
ENCODER = "vae_encoder."
UNUSED_MODULES = ("projector.", "projector_cls.", "extractor_.")
"""Official modules that its forward pass never calls (checked for shape, dropped)."""
PROJECTOR_PATTERN = re.compile(r"projector(_cls)?\.fc\.\d+\.(weight|bias)")
BUFFER_PATTERN = re.compile(r"(token_prefix|token_suffix|tokenized_prompts)_(pos|neg)")
"""Template buffers of the official prompt learner, which zsad rebuilds (compared, never loaded)."""

EXTRACTOR_NAMES = {
    "ln_1.weight": "ln_1.weight",
    "ln_1.bias": "ln_1.bias",
    "attn.in_proj_weight": "attn.in_proj_weight",
    "attn.in_proj_bias": "attn.in_proj_bias",
    "attn.out_proj.weight": "attn.out_proj.weight",
    "attn.out_proj.bias": "attn.out_proj.bias",
    "ln_2.weight": "ln_2.weight",
    "ln_2.bias": "ln_2.bias",
    "mlp.c_fc.weight": "mlp.0.weight",
    "mlp.c_fc.bias": "mlp.0.bias",
    "mlp.c_proj.weight": "mlp.2.weight",
    "mlp.c_proj.bias": "mlp.2.bias",
}
"""Official Prototype_Extractor parameter -> zsad PrototypeExtractor parameter."""

DECODER_NAMES = {f"net.{i}.{kind}": f"decoder.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")}
ENCODER_NAMES = {
    "net.0.weight": "encoder.0.weight",
    "net.0.bias": "encoder.0.bias",
    "mean.weight": "to_mean.weight",
    "mean.bias": "to_mean.bias",
    "log_var.weight": "to_logvar.weight",
    "log_var.bias": "to_logvar.bias",
}


def read(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official CoPS checkpoint under their ``prompt_learner`` names.

    Raises:
        CheckpointError: Unreadable file, or a file without the ``prompt_learner`` state dict train.py saves.
    """
    example = "CoPS's train.py, e.g. results/models/mvtec/epoch_5.pth"
    return saved_state_dict(load_official_file(path), path, SAVED_PART, example)


def parameter_names(prompt: CoPSPrompt, with_encoder: bool) -> dict[str, str]:
    """Official key -> zsad key for every tensor copied one to one (contexts, queries, deep prompts are stacked)."""
    names = {f"extractor.{key}": f"prompt.ests.extractor.{value}" for key, value in EXTRACTOR_NAMES.items()}
    names |= {f"vae_decoder.{key}": f"prompt.vae.{value}" for key, value in DECODER_NAMES.items()}
    if with_encoder:
        names |= {f"{ENCODER}{key}": f"prompt.vae.{value}" for key, value in ENCODER_NAMES.items()}
    return names


def stacked_names(prompt: CoPSPrompt) -> dict[str, tuple[str, ...]]:
    """The official keys stacked, in order, along the first axis of each zsad parameter."""
    return {
        "prompt.context": CONTEXTS,
        "prompt.ests.queries": QUERIES,
        "prompt.deep": tuple(f"{DEEP}{i}" for i in range(prompt.deep_layers)),
    }


def convert(official: Mapping[str, Tensor], module: ZSADModule) -> dict[str, Tensor]:
    """Map the tensors :func:`read` returns onto ``module``'s trainable state, checking every key, shape and buffer.

    Args:
        official: ``read``'s output.
        module: A model built from a CoPS preset (``configs/method/cops.yaml`` or ``cops_visa.yaml``).

    Returns:
        Every key of ``module.state_dict()`` (the backbone is never part of it), ready for ``load_state_dict``. The
        VAE encoder keeps the module's own (official) initialisation when the file has none.

    Raises:
        CheckpointError: One line naming every unknown, missing or mis-shaped key, a saved template buffer that
            differs from zsad's, or a model that is not the full CoPS preset.
    """
    prompt = _cops_prompt(module)
    expected = module.state_dict()
    with_encoder = any(key.startswith(ENCODER) for key in official)
    names = parameter_names(prompt, with_encoder)
    stacked = stacked_names(prompt)
    shapes = official_shapes(names, stacked, expected)
    problems = key_set_problems(official, shapes, ignore=_dropped_or_buffer)
    problems += [
        f"{key} has shape {tuple(official[key].shape)} but this preset needs {shape}"
        for key, shape in shapes.items()
        if key in official and tuple(official[key].shape) != shape
    ]
    problems += _unused_module_problems(official, expected)
    problems += _slot_problems(official, prompt)
    if problems:
        raise CheckpointError(
            f"The CoPS checkpoint does not fit the CoPS preset: {'; '.join(problems)}. Build the model from "
            "configs/method/cops.yaml (or cops_visa.yaml) with the backbone the file was trained with."
        )
    _check_buffers(official, module, prompt)
    if not with_encoder:
        logger.info(
            "The CoPS file has no VAE encoder (train.py drops it); zsad keeps its initial one (unused at test)."
        )
    converted = {zsad: official[key] for key, zsad in names.items()}
    for zsad_key, keys in stacked.items():
        converted[zsad_key] = torch.stack([official[key].reshape(expected[zsad_key].shape[1:]) for key in keys])
    state = {key: value.detach().to(expected[key].dtype).clone() for key, value in converted.items()}
    return {key: state[key] if key in state else expected[key].clone() for key in expected}


def official_shapes(
    names: Mapping[str, str], stacked: Mapping[str, tuple[str, ...]], expected: Mapping[str, Tensor]
) -> dict[str, tuple[int, ...]]:
    """The shape each official key must have for the model (``expected`` is its state dict)."""
    shapes = {key: tuple(expected[zsad].shape) for key, zsad in names.items()}
    for zsad_key, keys in stacked.items():
        item = tuple(expected[zsad_key].shape[1:])
        shapes |= {key: (1, 1, *item) if key in CONTEXTS else item for key in keys}  # ctx: [1, vae_length=1, n, W]
    return shapes


def _dropped_or_buffer(key: str) -> bool:
    """Whether ``key`` is an unused official module or a template buffer zsad rebuilds."""
    return key.startswith(UNUSED_MODULES) or bool(BUFFER_PATTERN.fullmatch(key))


def _unused_module_problems(official: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> list[str]:
    """The dropped ``extractor_`` must have the extractor's shapes; the projectors must be Linear layers."""
    wrong = []
    for key, value in official.items():
        if key.startswith("extractor_."):
            name = EXTRACTOR_NAMES.get(key.removeprefix("extractor_."))
            target = expected.get(f"prompt.ests.extractor.{name}")
            if target is None or tuple(target.shape) != tuple(value.shape):
                wrong.append(key)
        elif key.startswith(("projector.", "projector_cls.")) and not PROJECTOR_PATTERN.fullmatch(key):
            wrong.append(key)
    return [f"unused keys {sorted(wrong)[:6]} do not fit the official PromptLearner"] if wrong else []


def _slot_problems(official: Mapping[str, Tensor], prompt: CoPSPrompt) -> list[str]:
    """The 14 tokens split as the official code does: context, one state slot per prototype, then 2 class slots."""
    queries = official.get(QUERIES[0])
    prototypes = queries.shape[0] if queries is not None and queries.dim() == 2 else prompt.slots[1]
    official_slots = (prompt.num_tokens - prototypes - 2, prototypes, 2)
    if tuple(prompt.slots) != official_slots:
        return [
            f"the file's {prototypes} prototypes and 2 class tokens split the {prompt.num_tokens} prompt tokens as "
            f"{official_slots}, the preset as {tuple(prompt.slots)} (n_context, n_prototypes, n_class_tokens)"
        ]
    return []


def _check_buffers(official: Mapping[str, Tensor], module: ZSADModule, prompt: CoPSPrompt) -> None:
    """Compare saved template buffers with the template zsad builds from its own CLIP.

    Raises:
        CheckpointError: Naming the first buffer that differs and by how much.
    """
    text = module.backbone.text
    template = " ".join([PLACEHOLDER] * prompt.num_tokens) + "."
    ids = text.tokenize([template]).cpu()
    embeddings = prompt.template_embeddings.detach().float().cpu()
    ours = {"token_prefix": embeddings[0, :1], "token_suffix": embeddings[0, 1 + prompt.num_tokens :]}
    for key in sorted(k for k in official if _dropped_or_buffer(k) and not k.startswith(UNUSED_MODULES)):
        kind = key.rsplit("_", 1)[0]
        saved = official[key].detach().cpu()
        if kind == "tokenized_prompts":
            if saved.numel() != ids.numel() or not torch.equal(saved.reshape(-1).long(), ids.reshape(-1).long()):
                raise CheckpointError(
                    f"Buffer {key} holds other token ids than zsad's CoPS template '{template}'; the file was "
                    "written with another prompt length (n_ctx) or tokenizer."
                )
            continue
        reference = ours[kind]
        if saved.numel() != reference.numel():
            raise CheckpointError(
                f"Buffer {key} has shape {tuple(saved.shape)}, but zsad's template gives {tuple(reference.shape)} "
                "tokens; the file was written with another prompt length or text width."
            )
        difference = float((saved.reshape(reference.shape).float() - reference).abs().max())
        if difference > BUFFER_TOLERANCE:
            raise CheckpointError(
                f"Buffer {key} differs from the template zsad embeds with its CLIP token table by up to "
                f"{difference:.3g}: the file was written with other CLIP weights than --weights / the preset's."
            )


def _cops_prompt(module: ZSADModule) -> CoPSPrompt:
    """The module's full CoPS synthesizer (prototypes, VAE and deep prompts all on).

    Raises:
        CheckpointError: The module was not built from a CoPS preset.
    """
    prompt = module.prompt
    if not isinstance(prompt, CoPSPrompt) or not (prompt.use_ests and prompt.use_icts and prompt.deep is not None):
        raise CheckpointError(
            f"A CoPS checkpoint needs the cops prompt with ESTS, ICTS and deep prompts, not {type(prompt).__name__}"
            f"{' (ablated)' if isinstance(prompt, CoPSPrompt) else ''}; build it from configs/method/cops.yaml."
        )
    return prompt


FORMAT = register_format(
    ReleasedFormat(
        name="cops",
        description="CoPS (cqylunlun/CoPS) results/models/<set>/epoch_<n>.pth: --trained-on mvtec (epoch_5) or visa "
        "(epoch_10)",
        presets={
            "mvtec": ("backbone/vit_l_14_336_openai.yaml", "method/cops.yaml"),
            "visa": ("backbone/vit_l_14_336_openai.yaml", "method/cops_visa.yaml"),
        },
        read=read,
        convert=convert,
    )
)
