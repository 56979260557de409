"""zsad checkpoints: reading them safely, what they record about their origin, and what a test may change.

- :mod:`~zsad.checkpoints.files`: read a checkpoint without unsafe pickle, one clear error for anything else;
- :mod:`~zsad.checkpoints.provenance`: where a checkpoint's prompts were trained (auxiliary data, seed, config
  hash, or the released file it was imported from) and the leakage check against test targets;
- :mod:`~zsad.checkpoints.settings`: the rule for settings given at test time (docs/cli.md).
"""

from zsad.checkpoints.files import WEIGHT_SOURCE_KEYS, is_compatible_version, read_checkpoint

__all__ = ["WEIGHT_SOURCE_KEYS", "is_compatible_version", "read_checkpoint"]
