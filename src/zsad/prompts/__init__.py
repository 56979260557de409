"""Prompt synthesizers: :class:`~zsad.structures.Features` to class text embeddings."""

from zsad.prompts.base import PromptSynthesizer
from zsad.prompts.dapo import DAPOPrompt
from zsad.prompts.static import StaticPrompt
from zsad.prompts.vip import ViPPrompt

__all__ = ["DAPOPrompt", "PromptSynthesizer", "StaticPrompt", "ViPPrompt"]
