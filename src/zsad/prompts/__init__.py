"""Prompt synthesizers: :class:`~zsad.structures.Features` to class text embeddings."""

from zsad.prompts.base import PromptSynthesizer
from zsad.prompts.static import StaticPrompt

__all__ = ["PromptSynthesizer", "StaticPrompt"]
