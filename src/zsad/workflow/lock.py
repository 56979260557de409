"""An exclusive lock on an output folder, so that two zsad processes never write (or empty) the same runs.

The lock is an ``flock`` on a file inside the folder: the kernel releases it when the process that holds it dies,
however it dies, so a crashed or killed run never leaves a stale lock behind. The file holds the holder's pid, for
the message that the second process gives. Where ``fcntl`` is missing (Windows) no lock is taken.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from zsad.errors import ConfigError
from zsad.workflow.atomic import write_error

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".zsad.lock"


class FolderLock:
    """An exclusive, non-blocking lock on a folder (created when missing), held until :meth:`release` or exit.

    Usage: ``with FolderLock(out, "zsad grid"): ...``. Child processes started with ``pass_fds=(lock.fileno(),)``
    hold it too, so the folder stays locked while a run the holder started is still writing into it.

    Args:
        folder: The folder to lock.
        holder: What holds it, for the other process's message (e.g. ``"zsad grid"``).
    """

    def __init__(self, folder: str | Path, holder: str) -> None:
        self.folder = Path(folder)
        self.holder = holder
        self.path = self.folder / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock.

        Raises:
            ConfigError: Another process holds it, naming the folder and that process's pid.
            WriteError: The folder or the lock file cannot be created.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(self.path, error) from error
        if fcntl is None:
            self._descriptor = descriptor
            return self
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise ConfigError(
                f"Output folder '{self.folder}' is in use by another {self.holder} (pid {other}, or a run it started), "
                "whose files this one would delete or overwrite. Wait for it to end (or stop it), or give another "
                "--out."
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        return self

    def fileno(self) -> int:
        """The lock file's descriptor (for ``pass_fds``); the lock must be held."""
        if self._descriptor is None:
            raise RuntimeError("the lock is not held")
        return self._descriptor

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases the flock); the lock file stays."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
