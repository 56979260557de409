"""CoPS (Conditional Prompt Synthesis, methods.md §2): ESTS prototypes, ICTS class tokens, the ``cops`` synthesizer.

The matching scoring head is :class:`zsad.heads.saga.SAGAHead` (``saga``) and the losses are in
:mod:`zsad.losses.cops` (``center``, ``kl``, ``reconstruction``).
"""

from zsad.prompts.cops.ests import PrototypeExtractor, StatePrototypes, average_neighbor
from zsad.prompts.cops.icts import ClassTokenVAE
from zsad.prompts.cops.synthesizer import CoPSPrompt

__all__ = ["ClassTokenVAE", "CoPSPrompt", "PrototypeExtractor", "StatePrototypes", "average_neighbor"]
