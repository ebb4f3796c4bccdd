"""The dead-letter file: every frame that could not be decoded, kept as NDJSON.

The frame loop only appends a line to a bounded buffer (no file I/O on the loop); the
file stays open and :meth:`DeadLetter.run` writes the buffer out from a worker thread once
a second, and :meth:`DeadLetter.close` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO

import orjson

from .exceptions import DecodeError


class DeadLetter:
    """Appends ``{"recv_ts", "reason", "frame"}`` lines; stops writing past ``max_bytes``
    (the frames are still counted) so a flood of garbage cannot fill the disk. At most
    ``buffer_bytes`` wait in memory for the next write; beyond that frames are counted in
    ``not_kept`` instead."""

    def __init__(self, path: Path, max_bytes: int = 100 << 20, buffer_bytes: int = 4 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.buffer_bytes = buffer_bytes
        self._over_buffer = 0  # counted by the loop
        self._size = path.stat().st_size if path.exists() else 0
        self._lines: deque[bytes] = deque()
        # bytes put in by the loop and taken out by the writing thread: one writer each
        self._queued = 0
        self._taken = 0
        self._file: BinaryIO | None = None
        self._write_lock = threading.Lock()  # flush from run() and close() never overlap
        self._lost_in_writing = 0

    def keep(self, error: DecodeError, recv_ts: int) -> None:
        """Buffer one bad frame (the frame loop's side: no I/O)."""
        line = (
            orjson.dumps(
                {
                    "recv_ts": recv_ts,
                    "reason": error.reason,
                    "frame": error.frame.decode("utf-8", errors="replace"),
                }
            )
            + b"\n"
        )
        if self._queued - self._taken + len(line) > self.buffer_bytes:
            self._over_buffer += 1
            return
        self._queued += len(line)
        self._lines.append(line)

    @property
    def not_kept(self) -> int:
        """Frames counted but not written (the file full or unwritable, or the buffer
        full); reported in status."""
        return self._over_buffer + self._lost_in_writing

    def flush(self) -> None:
        """Write what is buffered (blocking: from a worker thread or at shutdown)."""
        with self._write_lock:
            while self._lines:
                line = self._lines.popleft()
                self._taken += len(line)
                if self._size + len(line) > self.max_bytes:
                    self._lost_in_writing += 1
                    continue
                try:
                    if self._file is None:
                        self._file = self.path.open("ab")
                    self._file.write(line)
                except OSError:
                    self._lost_in_writing += 1
                    continue
                self._size += len(line)
            if self._file is not None:
                try:
                    self._file.flush()
                except OSError:
                    self._file = None  # a full disk: the lines in its buffer are gone

    async def run(self, period: float = 1.0) -> None:
        """Write the buffer out every ``period`` seconds, off the event loop."""
        while True:
            await asyncio.sleep(period)
            if self._lines:
                await asyncio.to_thread(self.flush)

    def close(self) -> None:
        """Write out what is left and close the file."""
        self.flush()
        with self._write_lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
