"""The dead-letter file: every frame that could not be decoded, kept as NDJSON."""

from __future__ import annotations

from pathlib import Path

import orjson

from .exceptions import DecodeError


class DeadLetter:
    """Appends ``{"recv_ts", "reason", "frame"}`` lines; stops writing past ``max_bytes``
    (the frames are still counted) so a flood of garbage cannot fill the disk."""

    def __init__(self, path: Path, max_bytes: int = 100 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        #: frames counted but not written (the file full or unwritable); reported in status
        self.not_kept = 0
        self._size = path.stat().st_size if path.exists() else 0

    def keep(self, error: DecodeError, recv_ts: int) -> None:
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
        if self._size + len(line) > self.max_bytes:
            self.not_kept += 1
            return
        try:
            with self.path.open("ab") as out:
                out.write(line)
        except OSError:
            self.not_kept += 1
            return
        self._size += len(line)
