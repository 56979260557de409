"""A batch of :class:`~zsad.structures.Features` split into one flat entry per image, and stacked back.

An entry maps names to one image's tensors: ``"global_embedding"``, ``"patch_tokens.0"``, ..., ``"vv_tokens.3"``
(and e.g. ``"window_embeddings.1"`` for WinCLIP's :class:`~zsad.backbones.windows.WindowFeatures`). What is the
same for every image (the record type, layers, grid, window sizes, each tensor's dtype) is kept once, in a
:class:`FeatureLayout`. ``class_names`` is never stored: the module fills it from each batch.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from zsad.errors import DataError
from zsad.structures import Features

NOT_STORED = ("class_names",)


@dataclass(frozen=True)
class FeatureLayout:
    """What every entry of one cache namespace shares.

    Attributes:
        record_type: ``"module:QualName"`` of the :class:`~zsad.structures.Features` (sub)class.
        tensor_fields: Per tensor field, ``None`` for a single tensor or the length of a tuple of tensors.
        constants: The other fields (``layers``, ``grid``, ``vv_tokens`` when ``None``, ...), as plain data.
        dtypes: Dtype of each entry tensor as the backbone produced it (the dtype it is replayed in).
    """

    record_type: str
    tensor_fields: dict[str, int | None]
    constants: dict[str, Any]
    dtypes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a JSON file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureLayout:
        """Inverse of :meth:`to_dict` (JSON lists become tuples again)."""
        constants = {name: _tuples(value) for name, value in data["constants"].items()}
        return cls(data["record_type"], dict(data["tensor_fields"]), constants, dict(data["dtypes"]))

    def record_class(self) -> type[Features]:
        """The record class named by ``record_type``.

        Raises:
            DataError: If it does not name a Features class.
        """
        module_name, _, qualname = self.record_type.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as error:
            raise DataError(f"Feature cache layout names an unknown record type '{self.record_type}'.") from error
        if not (isinstance(found, type) and issubclass(found, Features)):
            raise DataError(f"Feature cache layout names '{self.record_type}', which is not a Features class.")
        return found


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def split_features(features: Features, storage_dtype: torch.dtype | None) -> tuple[FeatureLayout, list[dict]]:
    """The layout of ``features`` and one entry per image, as CPU tensors.

    Args:
        features: A batch of backbone features.
        storage_dtype: Floating tensors are stored in this dtype (``torch.float16`` for compact caches); ``None``
            stores them as produced.
    """
    tensor_fields: dict[str, int | None] = {}
    constants: dict[str, Any] = {}
    named: dict[str, Tensor] = {}
    for field in fields(features):
        value = getattr(features, field.name)
        if field.name in NOT_STORED:
            continue
        if isinstance(value, Tensor):
            tensor_fields[field.name] = None
            named[field.name] = value
        elif isinstance(value, tuple) and value and all(isinstance(v, Tensor) for v in value):
            tensor_fields[field.name] = len(value)
            named.update({f"{field.name}.{i}": v for i, v in enumerate(value)})
        else:
            constants[field.name] = value
    record = type(features)
    layout = FeatureLayout(
        record_type=f"{record.__module__}:{record.__qualname__}",
        tensor_fields=tensor_fields,
        constants=constants,
        dtypes={name: str(tensor.dtype).removeprefix("torch.") for name, tensor in named.items()},
    )
    stored = {name: _for_storage(tensor.detach(), storage_dtype) for name, tensor in named.items()}
    # clones, not views: a saved or kept view would carry the whole batch's storage with it
    entries = [{name: tensor[i].clone() for name, tensor in stored.items()} for i in range(features.batch_size)]
    return layout, entries


def _for_storage(tensor: Tensor, storage_dtype: torch.dtype | None) -> Tensor:
    if storage_dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(storage_dtype)
    return tensor.to("cpu")


def stack_entries(layout: FeatureLayout, entries: list[dict[str, Tensor]], device: torch.device) -> Features:
    """One :class:`~zsad.structures.Features` record from per-image entries, in their original dtypes on ``device``."""

    def stacked(name: str) -> Tensor:
        dtype = getattr(torch, layout.dtypes[name])
        return torch.stack([entry[name] for entry in entries]).to(device=device, dtype=dtype)

    values: dict[str, Any] = dict(layout.constants)
    for name, count in layout.tensor_fields.items():
        values[name] = stacked(name) if count is None else tuple(stacked(f"{name}.{i}") for i in range(count))
    return layout.record_class()(**values)
