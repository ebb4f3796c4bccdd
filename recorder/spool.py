"""An on-disk spool of batches the database has not acknowledged.

Append-only segment files ``<seq>.seg`` in one directory. Each entry is a 4-byte length, a
4-byte CRC32 and the batch; a torn or corrupt tail (a crash mid-write) ends the segment's
readable part and is reported, never silently skipped in the middle. A segment is deleted
only after every batch in it was acknowledged by the sink. The total size is bounded: a
full spool raises :class:`~recorder.exceptions.SpoolError` and never overwrites old data.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .batching import Batch
from .exceptions import SpoolError

_HEADER = struct.Struct("<II")
FsyncPolicy = Literal["always", "interval", "never"]


class Spool:
    """Thread-safe: the writer thread drains while the event loop may append overflow."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 1 << 30,
                 segment_bytes: int = 16 << 20, fsync: FsyncPolicy = "always") -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._segments = sorted(self.dir.glob("*.seg"))
            self._bytes = sum(p.stat().st_size for p in self._segments)
        except OSError as exc:
            raise SpoolError(f"spool {self.dir}: {exc.strerror}") from None
        self._file: os.PathLike[str] | None = None
        self._fd: int | None = None
        self._active_size = 0
        self._last_sync = time.monotonic()
        self._next_seq = int(self._segments[-1].stem) + 1 if self._segments else 1
        self.corrupt_entries = 0
        self.rejected_rows = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def segments(self) -> int:
        return len(self._segments)

    def __bool__(self) -> bool:
        """True while anything is waiting to be drained."""
        return bool(self._segments)

    def append(self, batch: Batch) -> None:
        """Append a batch durably (per the fsync policy); SpoolError when full or failing."""
        payload = batch.to_bytes()
        entry = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._bytes + len(entry) > self.max_bytes:
                self.rejected_rows += len(batch)
                raise SpoolError(
                    f"spool {self.dir} is full ({self._bytes} of {self.max_bytes} bytes): "
                    f"{len(batch)} rows not kept"
                )
            try:
                if self._fd is None or self._active_size >= self.segment_bytes:
                    self._rotate()
                assert self._fd is not None
                os.write(self._fd, entry)
                if self.fsync == "always" or (
                    self.fsync == "interval" and time.monotonic() - self._last_sync >= 1.0
                ):
                    os.fsync(self._fd)
                    self._last_sync = time.monotonic()
            except OSError as exc:
                self.rejected_rows += len(batch)
                raise SpoolError(f"spool {self.dir}: cannot write: {exc.strerror}") from None
            self._active_size += len(entry)
            self._bytes += len(entry)

    def _rotate(self) -> None:
        self._close_active()
        path = self.dir / f"{self._next_seq:016d}.seg"
        self._next_seq += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_size = 0
        self._segments.append(path)
        # make the new file's directory entry durable too
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _close_active(self) -> None:
        if self._fd is not None:
            if self.fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def oldest(self) -> tuple[Path, list[Batch]] | None:
        """The oldest segment and its batches; closes the active segment if it is the one."""
        with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
            if len(self._segments) == 1 and self._fd is not None:
                self._close_active()
        return path, list(self._read(path))

    def _read(self, path: Path) -> Iterator[Batch]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SpoolError(f"spool segment {path}: cannot read: {exc.strerror}") from None
        pos = 0
        while pos + _HEADER.size <= len(data):
            size, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size: pos + _HEADER.size + size]
            if len(payload) < size or zlib.crc32(payload) != crc:
                self.corrupt_entries += 1
                return
            pos += _HEADER.size + size
            try:
                yield Batch.from_bytes(payload)
            except ValueError:
                self.corrupt_entries += 1
        if pos != len(data):
            self.corrupt_entries += 1

    def remove(self, path: Path) -> None:
        """Delete a segment whose batches were all acknowledged."""
        with self._lock:
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            if path in self._segments:
                self._segments.remove(path)
            self._bytes -= size

    def close(self) -> None:
        with self._lock:
            self._close_active()
