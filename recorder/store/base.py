"""What every store reader offers: the :class:`Reader` protocol and the orders it keeps.

A reader serves the read side of one source, a SQLite file, a QuestDB server or a Parquet
archive, so report, coverage, replay, demo, export and the read API never ask "which
store?" themselves. Times are integer nanoseconds; rows are full rows of
:mod:`recorder.schema` (ts, code, market, ...), whatever the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from ..schema import BY_NAME, GAPS, Row

if TYPE_CHECKING:
    import pyarrow as pa

#: rows per chunk a reader fetches, and the default size of an Arrow record batch
CHUNK = 2000
BATCH_ROWS = 65_536


def time_order(table: str) -> tuple[str, ...]:
    """The total order of a table's rows in time: ``ts``, ``recv_ts`` (arrival), ``code``,
    then the rest of the dedup keys, which make every stored row unique. Every source
    returns equal rows in this order, so a replay of one range is the same from each."""
    spec = BY_NAME[table]
    head = ("ts", "recv_ts", "code") if "recv_ts" in spec.names else ("ts", "code")
    return head + tuple(k for k in spec.keys if k not in head)


def code_order(table: str) -> tuple[str, ...]:
    """The order of the archive's files: by code, then as :func:`time_order`."""
    rest = time_order(table)
    return ("code", *(c for c in rest if c != "code"))


class Reader(Protocol):
    """The read side of one source. Methods raise SinkError (a source that fails) or
    ConfigError (a source that is not one) with one line naming the source."""

    source: str

    def codes(self, table: str) -> list[str]:
        """The codes ``table`` holds rows of; none where the source has no such table."""

    def kline_types(self, code: str) -> list[int]:
        """The bar types stored for ``code``."""

    def rows(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), kt: int | None = None
    ) -> Iterator[Row]:
        """The rows with ``start <= ts < end`` of ``codes`` (all when empty; for K-lines of
        bar type ``kt``), in :func:`time_order`, read in chunks."""

    def count(self, table: str, code: str, start: int, end: int) -> int:
        """How many rows of ``code`` have ``start <= ts < end``."""

    def minutes(self, table: str, code: str, start: int, end: int) -> list[int]:
        """The minutes since ``start`` in which ``code`` has a row (``ts < end``)."""

    def gaps(self, start: int, end: int, overlapping: bool = False) -> list[Row]:
        """Gaps rows starting in ``[start, end)``, or with ``overlapping`` every gap that
        covers part of it (still open ones included); oldest first."""

    def batches(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), size: int = BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of at most ``size`` rows, in :func:`code_order`."""

    def close(self) -> None:
        """Release what the reader holds."""


def padded(table: str, rows: Iterable[Row]) -> list[Row]:
    """Rows of an older version padded to the columns this one has."""
    spec = BY_NAME[table]
    return [spec.pad(tuple(row)) for row in rows]


def overlaps(row: Row, start: int, end: int) -> bool:
    """Whether a gaps row covers part of ``[start, end)``."""
    ts, end_ts = row[0], row[1]
    return bool(ts < end and (end_ts is None or end_ts >= start))


GAP_NAMES = GAPS.names
