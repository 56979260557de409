"""Frozen backbones: images to :class:`~zsad.structures.Features`, prompt embeddings to text features."""

from zsad.backbones.base import Backbone
from zsad.backbones.clip import CLIPBackbone, TinyRandomBackbone
from zsad.backbones.loading import create_clip
from zsad.backbones.text import InsertDeepPrompts, OverwriteDeepPrompts, TextEncoder
from zsad.backbones.tiny import register_tiny_configs
from zsad.backbones.windows import WinCLIPBackbone, WindowFeatures

register_tiny_configs()

__all__ = [
    "Backbone",
    "CLIPBackbone",
    "InsertDeepPrompts",
    "OverwriteDeepPrompts",
    "TextEncoder",
    "TinyRandomBackbone",
    "WinCLIPBackbone",
    "WindowFeatures",
    "create_clip",
    "register_tiny_configs",
]
