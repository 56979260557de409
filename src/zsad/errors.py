"""Error types that the command line turns into one clear message instead of a traceback."""

from __future__ import annotations


class ZSADError(Exception):
    """Base class for every error that zsad raises on purpose.

    The message always names the offending value (file, key, name) and says what to do about it.
    """


class ConfigError(ZSADError, ValueError):
    """A configuration value is invalid: wrong range, wrong shape, incompatible with another value."""


class UnknownComponentError(ZSADError, LookupError):
    """A registry name is not registered."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(ZSADError, RuntimeError):
    """Pretrained weights could not be loaded (offline, missing file, unknown tag)."""


class DataError(ZSADError, ValueError):
    """A dataset on disk is missing, malformed or inconsistent."""


class CheckpointError(ZSADError, RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


class WriteError(ZSADError, OSError):
    """An output file could not be written (full disk, read-only folder, ...); the message names the file.

    Also an :class:`OSError`, so code that tolerates failed writes (the feature cache) keeps doing so.
    """


class NonFiniteScoreError(ZSADError, ValueError):
    """A model scored an image or a pixel NaN or infinite, so no metric is defined; the message names the image."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def short_reason(error: BaseException) -> str:
    """``"ErrorType: first line of the message"`` of an exception, for one-line messages."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else '-'}"
