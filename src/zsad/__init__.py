"""zsad: CLIP-based zero-shot anomaly detection as composable, registered Lightning components.

Importing ``zsad`` registers the built-in components (backbones, prompt synthesizers, heads, losses,
datamodules); third-party ones arrive through the ``zsad.plugins`` entry-point group.
"""

__version__ = "0.1.0"

from zsad import backbones, data, heads, losses, prompts
from zsad.inference import load
from zsad.module import ZSADModule

__all__ = ["ZSADModule", "__version__", "backbones", "data", "heads", "load", "losses", "prompts"]
