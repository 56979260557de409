"""Prompt synthesizers: :class:`~zsad.structures.Features` to class text embeddings."""

from zsad.prompts.base import PromptSynthesizer
from zsad.prompts.cops import CoPSPrompt
from zsad.prompts.dapo import DAPOPrompt
from zsad.prompts.static import StaticPrompt
from zsad.prompts.vip import ViPPrompt
from zsad.prompts.winclip import WinCLIPPrompt

__all__ = ["CoPSPrompt", "DAPOPrompt", "PromptSynthesizer", "StaticPrompt", "ViPPrompt", "WinCLIPPrompt"]
