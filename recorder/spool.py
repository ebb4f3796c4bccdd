"""An on-disk spool of batches the database has not acknowledged.

Append-only segment files ``<seq>.seg`` in one directory, named by the sequence number of
their first batch. Batches usually arrive newest last and are appended to the active
segment; one older than something already spooled (a batch that waited in the writer's
queue while newer ones overflowed to disk) gets a segment of its own. The drain merges all
segments by sequence number, one entry per segment in memory, so batches reach the
database in the order they were cut. Each entry is a 4-byte length, a 4-byte CRC32 and
the batch (JSON starting ``{"seq":``). A write is complete or undone: a short write (a full
disk) is continued until all of it is written, and one that fails is cut off again, so
the batch is not counted as spooled. A damaged entry (a flipped bit, a torn tail) is
skipped to the next entry whose length and CRC check out, the segment is kept aside as
``<name>.seg.damaged`` instead of deleted, and what was lost is counted
(``damaged_entries``, ``lost_rows`` where the damaged entry still tells its rows). A
segment is deleted only after every batch in it was acknowledged by the sink. Files in the
directory that are not segments (``backup.seg``) are left alone with a warning. The total
size is bounded: a full spool raises :class:`~recorder.exceptions.SpoolError` and never
overwrites old data.
"""

from __future__ import annotations

import errno
import heapq
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from .batching import Batch
from .config import FsyncPolicy
from .exceptions import SpoolError
from .lockfile import LockFile

log = structlog.get_logger("recorder.spool")

_HEADER = struct.Struct("<II")
#: how every entry's payload starts (``Batch.to_bytes``): where a resync looks for the next
_START = b'{"seq":'
_SEGMENT = re.compile(r"[0-9]{1,20}\.seg")


def segments_in(directory: Path) -> list[Path]:
    """The spool segments in ``directory``, oldest first; other ``*.seg`` files are named
    in a warning and left alone."""
    found = []
    for path in directory.glob("*.seg"):
        if _SEGMENT.fullmatch(path.name) and path.is_file():
            found.append(path)
        else:
            log.warning("spool_file_ignored", path=str(path), reason="not a spool segment")
    return sorted(found, key=lambda p: int(p.stem))


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (it may write less: a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


@dataclass(frozen=True, slots=True)
class SpoolSnapshot:
    """The spool's figures (names as in :class:`~recorder.status.Status`)."""

    spool_bytes: int
    spool_max_bytes: int
    spool_segments: int
    spool_rejected_rows: int
    spool_damaged_entries: int


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
            self._segments = segments_in(self.dir)
            self._bytes = sum(p.stat().st_size for p in self._segments)
        except OSError as exc:
            raise SpoolError(f"spool {self.dir}: {exc.strerror}") from None
        self._held = LockFile(self.dir / "recorder.lock", f"spool directory {self.dir}")
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._last_sync = time.monotonic()
        self._max_seq = int(self._segments[-1].stem) if self._segments else -1
        self.corrupt_entries = 0
        #: rows of damaged entries, where the damaged payload still says how many
        self.lost_rows = 0
        self.rejected_rows = 0
        self._damaged: set[Path] = set()  # segments to keep aside instead of deleting
        self._damage: list[tuple[int, int | None]] = []  # see take_damage

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def segments(self) -> int:
        return len(self._segments)

    def __bool__(self) -> bool:
        """True while anything is waiting to be drained."""
        return bool(self._segments)

    def snapshot(self) -> SpoolSnapshot:
        """The spool's figures now (its lost rows count in the writer's ``lost_rows``)."""
        return SpoolSnapshot(
            spool_bytes=self._bytes,
            spool_max_bytes=self.max_bytes,
            spool_segments=len(self._segments),
            spool_rejected_rows=self.rejected_rows,
            spool_damaged_entries=self.corrupt_entries,
        )

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
                    try:
                        _write_all(self._fd, entry)
                    except OSError:
                        os.ftruncate(self._fd, self._active_size)  # no torn entry behind
                        raise
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
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, entry)
            except OSError:
                os.ftruncate(fd, size)
                raise
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
        """A segment's batches. A damaged entry is skipped to the next one that checks out;
        the segment is then kept aside and the loss counted."""
        try:
            data = path.read_bytes()  # at most segment_bytes and one entry
        except OSError as exc:
            raise SpoolError(f"spool segment {path}: cannot read: {exc.strerror}") from None
        at, seq = 0, int(path.stem)  # a segment is named by its first batch's seq
        while at < len(data):
            batch, end = _entry(data, at)
            if batch is not None:
                yield batch
                at, seq = end, batch.seq
                continue
            resume = _resync(data, at + 1)
            self._count_damage(path, seq, data[at + _HEADER.size : resume], resume - at)
            at = resume

    def take_damage(self) -> list[tuple[int, int | None]]:
        """The damaged entries found since the last call: the seq (cut time, ns) of the
        entry before each, and its rows where the damaged payload still tells them."""
        with self._lock:
            damage, self._damage = self._damage, []
        return damage

    def _count_damage(self, path: Path, seq: int, payload: bytes, skipped: int) -> None:
        self.corrupt_entries += 1
        self._damaged.add(path)
        rows = _rows_in(payload)
        self.lost_rows += rows
        with self._lock:
            self._damage.append((seq, rows or None))
        log.error(
            "spool_entry_damaged",
            segment=str(path),
            skipped_bytes=skipped,
            lost_rows=rows if rows else "unknown",
            kept_as=str(path) + ".damaged",
        )

    def remove(self, path: Path) -> None:
        """Delete a segment whose batches were all acknowledged (a damaged one is renamed
        to ``<name>.damaged`` and kept for a look)."""
        with self._lock:
            size = path.stat().st_size if path.exists() else 0
            if path in self._damaged:
                self._damaged.discard(path)
                path.replace(path.with_name(path.name + ".damaged"))
            else:
                path.unlink(missing_ok=True)
            if path in self._segments:
                self._segments.remove(path)
            self._bytes -= size

    def lock(self) -> None:
        """Hold the directory for this process (``recorder.lock``, released by
        :meth:`close` or the process's end); InUseError naming the other recorder's pid."""
        self._held.acquire()

    def close(self) -> None:
        with self._lock:
            self._close_active()
        self._held.release()


def _entry(data: bytes, at: int) -> tuple[Batch | None, int]:
    """The batch of the entry at ``at`` and where the next starts, or None if damaged."""
    if at + _HEADER.size > len(data):
        return None, at
    size, crc = _HEADER.unpack_from(data, at)
    end = at + _HEADER.size + size
    payload = data[at + _HEADER.size : end]
    if end > len(data) or zlib.crc32(payload) != crc:
        return None, at
    try:
        return Batch.from_bytes(payload), end
    except (ValueError, KeyError, TypeError):
        return None, at


def _resync(data: bytes, at: int) -> int:
    """The offset of the next entry from ``at`` on whose length and CRC check out, or the
    end of the data."""
    while (start := data.find(_START, at + _HEADER.size)) != -1:
        candidate = start - _HEADER.size
        if _entry(data, candidate)[0] is not None:
            return candidate
        at = candidate + 1
    return len(data)


def _rows_in(payload: bytes) -> int:
    """Rows a damaged payload still shows (a flipped bit in a value), else 0 (unknown)."""
    try:
        doc = orjson.loads(payload[: payload.rfind(b"}") + 1])
        return sum(len(rows) for rows in doc["tables"].values())
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return 0
