"""``zsad import``: released official checkpoints as zsad checkpoints bound to each method's official preset.

One module per method registers its :class:`~zsad.importers.base.ReleasedFormat`; importing this package registers
them all.
"""

from zsad.importers.base import IMPORTERS, ReleasedFormat, import_checkpoint, register_format, released_format

__all__ = ["IMPORTERS", "ReleasedFormat", "import_checkpoint", "register_format", "released_format"]
from zsad.importers import (
    anomalyclip,  # noqa: F401 (registers the format)
    cops,  # noqa: F401 (registers the format)
    dapo,  # noqa: F401 (registers the format)
    vip,  # noqa: F401 (registers the format)
)
