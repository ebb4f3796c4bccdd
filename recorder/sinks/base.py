"""The :class:`Sink` protocol every implementation follows, and the constants they share.

A module of its own so that the implementations import it without importing the package
whose :func:`~recorder.sinks.make_sink` imports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..batching import Batch
from ..identity import Identity
from ..schema import Row

#: rows a sink deletes per :meth:`Sink.expire` call, so retention never holds the writer
EXPIRE_ROWS = 5000


class Sink(Protocol):
    name: str

    def open(self) -> None:
        """Connect and create missing tables; SinkError when the database is unreachable."""

    def claim(self) -> None:
        """Hold the store for this recorder process alone (a lock file, for a store that is
        a local file); InUseError naming the holder when another recorder has it. Other
        users of a sink (the archive's retention) do not claim."""

    def write(self, batch: Batch) -> None:
        """Write a batch and wait for the acknowledgement; SinkError otherwise."""

    def trade_counts(self, since_ns: int) -> Iterable[tuple[Identity, int]]:
        """How many trades of each identity are stored since ``since_ns``."""

    def last_times(self) -> dict[tuple[str, str], int]:
        """The newest stored ``ts`` per (code, table) of the market-data tables."""

    def open_gaps(self) -> list[Row]:
        """Rows of the gaps table whose backfill has not run (``status = 'open'``)."""

    def volume_anchors(self, codes: Iterable[str]) -> dict[str, tuple[float, int, float]]:
        """Per code, its newest stored snapshot's day volume and ``ts``, and minus the
        volume of the live trades stored after it: where a lost-volume estimate across
        the time the recorder was not running starts."""

    def expire(self, table: str, before_ns: int) -> int:
        """Delete a slice of the rows of ``table`` older than ``before_ns`` (retention);
        how many went (at most ``EXPIRE_ROWS``: call again while it returns that)."""

    def close(self) -> None:
        """Release connections; pending data was already written or spooled."""
