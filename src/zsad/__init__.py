"""zsad: CLIP-based zero-shot anomaly detection as composable, registered Lightning components.

``import zsad`` is cheap: the parts load on first use (``zsad.load``, ``zsad.ZSADModule``, ``zsad.backbones``, ...).
The built-in components are known by name from the start (:mod:`zsad.registry`) and their modules are imported when
a name is first looked up; third-party ones arrive through the ``zsad.plugins`` entry-point group.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_ATTRIBUTES = {"ZSADModule": "zsad.module", "load": "zsad.inference.loading"}
"""Public names, and the module each is imported from on first access."""
_SUBPACKAGES = ("backbones", "data", "heads", "losses", "prompts")

__all__ = ["ZSADModule", "__version__", "backbones", "data", "heads", "load", "losses", "prompts"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562), so that ``import zsad`` stays cheap."""
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"zsad.{name}")
    else:
        raise AttributeError(f"module 'zsad' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
