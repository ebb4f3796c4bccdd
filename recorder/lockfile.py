"""An exclusive hold on a directory or file for one recorder process: ``flock`` on a lock
file that names the holder's pid.

Two recorders on one spool directory or one SQLite file interleave their markets, rewrite
each other's gap rows and drain each other's spool. The lock is released by the kernel
when the process ends, however it ends, so a stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .exceptions import InUseError


class LockFile:
    """``LockFile(path, what).acquire()`` holds ``path`` until :meth:`release` or exit."""

    def __init__(self, path: Path, what: str) -> None:
        """``what`` names the thing held in the error, e.g. ``"spool directory /x"``."""
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (again: a no-op); InUseError naming the holder's pid when another
        process has it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InUseError(
                f"{self.what} is in use by another qos-recorder (pid {holder}, lock "
                f"{self.path}); stop that one, or give this one its own"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, harmless
            self._fd = None
