"""The newest exchange time per code and table, kept in the state directory.

A start while the database is down (or before the spool drained into it) still knows where
the time the recorder was away began: :meth:`LastSeen.save` writes what the gap detector
saw every few seconds and at stop, :meth:`LastSeen.load` reads it back at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import structlog

from .feed import TRADES
from .gaps import CLOCK_SKEW, GapDetector
from .protocol import NS

log = structlog.get_logger("recorder")
#: how far before the last time saved a gap starts when the database cannot say (the
#: batcher and the writer's queue may have held a few seconds of rows at a crash)
LAST_SEEN_MARGIN = 10 * NS


class LastSeen:
    """``last-seen.json``: ``{"clean": bool, "seen": {"code|table": ns}}`` on disk (the
    format every earlier version wrote); ``(code, table)`` keys in the program."""

    def __init__(self, path: Path, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self.clock = clock

    def load(self) -> dict[tuple[str, str], int]:
        """The last times written by :meth:`save`; unless they were saved at a clean stop,
        moved back by a margin for what was received but not yet written when the process
        ended."""
        try:
            doc = orjson.loads(self.path.read_bytes())
            clean = isinstance(doc, dict) and doc.get("clean") is True
            saved = doc["seen"] if isinstance(doc, dict) and "seen" in doc else doc
            margin = 0 if clean else LAST_SEEN_MARGIN
            return believable(
                {
                    (code, table): int(ts) - margin
                    for key, ts in saved.items()
                    for code, _, table in [key.partition("|")]
                },
                self.clock(),
            )
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            return {}

    def seen(self, det: GapDetector) -> dict[tuple[str, str], int]:
        """The newest exchange time per (code, table) (on the event loop: a snapshot)."""
        seen = {(code, TRADES.table): ts for code, ts in det.last_trade.items()}
        for (code, feed), ts in det.last.items():
            key = (code, feed.table)  # one table for every K-line type
            seen[key] = max(ts, seen.get(key, 0))
        return believable(seen, self.clock())

    def save(self, seen: dict[tuple[str, str], int], clean: bool = False) -> None:
        """Keep :meth:`seen`; ``clean``: saved after everything received was written or
        spooled."""
        doc = {
            "clean": clean,
            "seen": {f"{code}|{table}": ts for (code, table), ts in seen.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(doc))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("state_not_saved", path=str(self.path), error=str(exc))


def believable(last: dict[tuple[str, str], int], now: int) -> dict[tuple[str, str], int]:
    """The last times no later than the clock allows (a ``ts`` in 2100 is not "the last")."""
    limit = now + CLOCK_SKEW
    return {key: ts for key, ts in last.items() if ts <= limit}


def newest(*sources: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Per code and table, the newest time any source knows."""
    out: dict[tuple[str, str], int] = {}
    for source in sources:
        for key, ts in source.items():
            out[key] = max(ts, out.get(key, ts))
    return out
