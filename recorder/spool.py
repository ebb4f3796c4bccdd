"""An on-disk spool of batches the database has not acknowledged.

Append-only segment files ``<seq>.seg`` in one directory, named by the sequence number of
their first batch. Batches usually arrive newest last and are appended to the active
segment; one older than something already spooled (a batch that waited in the writer's
queue while newer ones overflowed to disk) gets a segment of its own. The drain merges all
segments by sequence number, one entry per segment in memory, so batches reach the
database in the order they were cut. Each entry is a 4-byte length, a
4-byte CRC32 and the batch; a torn or corrupt tail (a crash mid-write) ends the segment's
readable part and is reported, never silently skipped in the middle. A segment is deleted
only after every batch in it was acknowledged by the sink. The total size is bounded: a
full spool raises :class:`~recorder.exceptions.SpoolError` and never overwrites old data.
"""

from __future__ import annotations

import heapq
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from .batching import Batch
from .config import FsyncPolicy
from .exceptions import SpoolError

_HEADER = struct.Struct("<II")


class Spool:
    """Thread-safe: the writer thread drains while the event loop may append overflow."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: FsyncPolicy = "always",
    ) -> None:
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
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._last_sync = time.monotonic()
        self._max_seq = int(self._segments[-1].stem) if self._segments else -1
        self.corrupt_entries = 0
        self.rejected_rows = 0

    @property
    def total_bytes(self) -> int:
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
                if batch.seq <= self._max_seq:
                    self._write_alone(batch.seq, entry)
                else:
                    if self._fd is None or self._active_size >= self.segment_bytes:
                        self._rotate(batch.seq)
                    assert self._fd is not None
                    os.write(self._fd, entry)
                    self._active_size += len(entry)
                    self._max_seq = batch.seq
                    if self.fsync == "always" or (
                        self.fsync == "interval" and time.monotonic() - self._last_sync >= 1.0
                    ):
                        os.fsync(self._fd)
                        self._last_sync = time.monotonic()
            except OSError as exc:
                self.rejected_rows += len(batch)
                raise SpoolError(f"spool {self.dir}: cannot write: {exc.strerror}") from None
            self._bytes += len(entry)

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}.seg"

    def _rotate(self, seq: int) -> None:
        self._close_active()
        path = self._path(seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active, self._active_size = path, 0
        self._segments.append(path)
        self._sync_dir()

    def _write_alone(self, seq: int, entry: bytes) -> None:
        """An older batch than the newest spooled: its own segment, sorted into place."""
        path = self._path(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, entry)
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        if path not in self._segments:
            self._segments.append(path)
            self._segments.sort()
        self._sync_dir()

    def _sync_dir(self) -> None:
        # make a new file's directory entry durable too
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
            self._active = None

    def drain(self) -> Iterator[tuple[Path, Batch, bool]]:
        """Every spooled batch in sequence order, as ``(segment, batch, last_of_segment)``.

        The active segment is closed first, so what is appended meanwhile waits for the
        next drain. Delete a segment with :meth:`remove` once its last batch is written.
        """
        with self._lock:
            self._close_active()
            segments = list(self._segments)
        streams = [self._tagged(path) for path in segments]
        for _seq, _n, path, batch, last in heapq.merge(*streams):
            yield path, batch, last

    def _tagged(self, path: Path) -> Iterator[tuple[int, int, Path, Batch, bool]]:
        entries = self._read(path)
        current = next(entries, None)
        n = 0
        while current is not None:
            following = next(entries, None)
            yield current.seq, n, path, current, following is None
            current, n = following, n + 1
        if n == 0:
            yield -1, 0, path, Batch({}, -1), True  # empty or unreadable: just remove it

    def _read(self, path: Path) -> Iterator[Batch]:
        """A segment's batches, read one entry at a time; stops at a torn or corrupt entry."""
        try:
            source = path.open("rb")
        except OSError as exc:
            raise SpoolError(f"spool segment {path}: cannot read: {exc.strerror}") from None
        with source:
            while header := source.read(_HEADER.size):
                if len(header) < _HEADER.size:
                    self.corrupt_entries += 1
                    return
                size, crc = _HEADER.unpack(header)
                payload = source.read(size)
                if len(payload) < size or zlib.crc32(payload) != crc:
                    self.corrupt_entries += 1
                    return
                try:
                    yield Batch.from_bytes(payload)
                except (ValueError, KeyError):
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
