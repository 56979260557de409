"""Inference outside the training loop: ``zsad.load`` (a callable detector), and ONNX export (``export.py``).

``zsad.inference.export`` is not imported here: it needs the optional ONNX packages (``pip install 'zsad[export]'``).
"""

from zsad.checkpoints.files import WEIGHT_SOURCE_KEYS, is_compatible_version, read_checkpoint
from zsad.inference.detector import Detector, Prediction
from zsad.inference.loading import load

__all__ = ["WEIGHT_SOURCE_KEYS", "Detector", "Prediction", "is_compatible_version", "load", "read_checkpoint"]
