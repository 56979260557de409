"""What the ``zsad`` command prints besides its own output: each warning once, known third-party noise not at all.

Only the command line (:func:`zsad.cli.main`) enters :func:`quiet_console`; importing zsad changes no warning filter
or logger, so a Python user sees everything the libraries say. Inside it:

- third-party notices that say nothing about the user's run are dropped (:data:`NOISE_WARNINGS`,
  :data:`NOISE_LOGS`): Lightning's tensorboardX notice and litlogger tip, torch's ``LeafSpec`` deprecation that
  Lightning triggers, Lightning's "Total length of `list` across ranks is zero" for the empty validation list of a
  protocol without validation data, and its "dirpath has changed" note (every zsad fit has a run folder of its own);
- every other warning is printed once per message, zsad's own as one ``zsad: warning: ...`` line without the source
  line that Python's default format adds;
- zsad's log warnings (e.g. the random-weights warning) print as the same ``zsad: warning:`` lines, once.

Everything is restored on exit, so in-process callers (tests, notebooks) keep their own settings.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

NOISE_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"Starting from v1\.9\.0, `tensorboardX` has been removed", Warning),
    (re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), Warning),
    (r"Total length of `\w+` across ranks is zero", Warning),
    (r"The dirpath has changed from", Warning),
    (r"LightningCLI's args parameter is intended", Warning),  # zsad rewrites argv (registry names) on purpose
)
"""``(message regex, category)`` of third-party warnings the command line drops."""
NOISE_LOGS: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
}
"""Logger name -> message prefixes the command line drops."""
ZSAD_LOGGER = "zsad"
PREFIX = "zsad: warning: "
ZSAD_SOURCE = Path(__file__).resolve().parent


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep the record."""
        return not record.getMessage().startswith(self.prefixes)


class OnceFilter(logging.Filter):
    """Lets each distinct message through once, shared with the warnings printed by :class:`WarningPrinter`."""

    def __init__(self, seen: set[str]) -> None:
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record's message is new (it is remembered)."""
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


class WarningPrinter:
    """``warnings.showwarning`` that prints each message once; zsad's own as one ``zsad: warning:`` line.

    Args:
        seen: Messages already printed (shared with zsad's log warnings).
        fallback: The previous ``showwarning``, which formats third-party warnings.
    """

    def __init__(self, seen: set[str], fallback: Any) -> None:
        self.seen = seen
        self.fallback = fallback

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        """Print a warning unless its message was printed before."""
        text = str(message)
        if text in self.seen:
            return
        self.seen.add(text)
        if is_zsad_source(filename):
            print(f"{PREFIX}{text}", file=file or sys.stderr, flush=True)
        else:
            self.fallback(message, category, filename, lineno, file, line)


def is_zsad_source(filename: str) -> bool:
    """Whether a warning was raised (its ``stacklevel`` pointing) inside the zsad package."""
    try:
        return Path(filename).resolve().is_relative_to(ZSAD_SOURCE)
    except (OSError, ValueError):
        return False


@contextmanager
def quiet_console() -> Iterator[None]:
    """Apply the command line's warning and log rules (module docstring) for the duration of one command."""
    seen: set[str] = set()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
    handler.setLevel(logging.WARNING)
    handler.addFilter(OnceFilter(seen))
    zsad_logger = logging.getLogger(ZSAD_LOGGER)
    propagate = zsad_logger.propagate
    noise_filters = [(logging.getLogger(name), DropMessages(prefixes)) for name, prefixes in NOISE_LOGS.items()]
    with warnings.catch_warnings():
        for pattern, category in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        warnings.showwarning = WarningPrinter(seen, warnings.showwarning)
        zsad_logger.addHandler(handler)
        zsad_logger.propagate = False  # the root logger may have a handler too (open_clip's basicConfig)
        for logger, noise in noise_filters:
            logger.addFilter(noise)
        try:
            yield
        finally:
            for logger, noise in noise_filters:
                logger.removeFilter(noise)
            zsad_logger.removeHandler(handler)
            zsad_logger.propagate = propagate
