"""Batches of rows, and the batcher that cuts them by row count or age.

The batcher lives on the event loop and never waits on the database: a cut batch is handed
to :class:`~recorder.writer.Writer`, which writes it from its own thread or spools it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from .gaps import Gap
from .protocol import Depth, Kline, Record, Snapshot, Trade, market_of
from .schema import (
    BY_NAME,
    DEPTH,
    GAPS,
    KLINE_UPDATES,
    KLINES,
    SNAPSHOTS,
    TRADES,
    Row,
    depth_row,
    gap_row,
    kline_row,
    kline_update_row,
    snapshot_row,
    trade_row,
)

_ROW_OF: dict[type, tuple[str, Callable[[Any], Row]]] = {
    Trade: (TRADES.name, trade_row),
    Depth: (DEPTH.name, depth_row),
    Snapshot: (SNAPSHOTS.name, snapshot_row),
    Kline: (KLINES.name, kline_row),
    Gap: (GAPS.name, gap_row),
}


class Batch:
    """Rows per table, in arrival order; the unit the writer acknowledges or spools.

    ``seq`` orders batches by when they were cut (the :class:`Batcher` numbers them); the
    spool drains in that order, so an upserted row (a K-line bar, a gap's status) never
    goes back to an older version.
    """

    __slots__ = ("seq", "tables")

    def __init__(self, tables: dict[str, list[Row]], seq: int) -> None:
        self.tables = tables
        self.seq = seq

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())

    def __iter__(self) -> Iterator[tuple[str, list[Row]]]:
        return iter((t, rows) for t, rows in self.tables.items() if rows)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"seq": self.seq, "tables": self.tables})

    @classmethod
    def from_bytes(cls, data: bytes) -> Batch:
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
            raise ValueError("spooled batch is not an object with tables")
        # rows spooled by an earlier version lack the columns added since: pad them
        tables = {
            t: [BY_NAME[t].pad(tuple(r)) if t in BY_NAME else tuple(r) for r in rows]
            for t, rows in doc["tables"].items()
        }
        return cls(tables, seq=int(doc["seq"]))

    @classmethod
    def of(cls, records: Sequence[Record | Gap], seq: int) -> Batch:
        """A batch holding the given records."""
        batch = cls({}, seq)
        for record in records:
            table, row_of = _ROW_OF[type(record)]
            batch.tables.setdefault(table, []).append(row_of(record))
        return batch


class Batcher:
    """Collects rows and hands a batch to ``submit`` every ``max_rows`` rows or ``max_age``
    seconds, whichever comes first. K-line pushes of one bar coalesce to the latest in
    ``klines``; each live push is kept as it came in ``kline_updates``.

    Batches are numbered by wall-clock nanoseconds, strictly increasing, so the numbers also
    increase across restarts and batches spooled by an earlier run drain first."""

    def __init__(
        self,
        submit: Callable[[Batch], None],
        max_rows: int = 2000,
        max_age: float = 0.05,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._seq = 0
        self.max_rows = max_rows
        self.max_age = max_age
        self._trades: list[Row] = []
        self._depth: list[Row] = []
        self._snapshots: list[Row] = []
        self._klines: dict[tuple[str, int, int], Row] = {}
        self._kline_updates: list[Row] = []
        self._gaps: list[Row] = []
        self._other: dict[str, list[Row]] = {}  # rare tables (reference data)
        self._n = 0
        self._first = 0.0
        self._markets: dict[str, str] = {}

    def add_trade(self, trade: Trade) -> None:
        market = self._markets.get(trade.code)
        if market is None:
            market = self._markets[trade.code] = market_of(trade.code)
        self._trades.append(trade_row(trade, market))
        self._added()

    def add(self, record: Record) -> None:
        """Add any record; the hot path calls the typed methods where it can."""
        if isinstance(record, Trade):
            self._trades.append(trade_row(record))
        elif isinstance(record, Depth):
            self._depth.append(depth_row(record))
        elif isinstance(record, Snapshot):
            self._snapshots.append(snapshot_row(record))
        else:
            self._klines[(record.code, record.kt, record.ts)] = kline_row(record)
            if record.source == "live":
                self._kline_updates.append(kline_update_row(record))
        self._added()

    def add_gap(self, gap: Gap) -> None:
        self._gaps.append(gap_row(gap))
        self._added()

    def add_row(self, table: str, row: Row) -> None:
        """A row of a table with no record type of its own (``instruments``)."""
        self._other.setdefault(table, []).append(row)
        self._added()

    def _added(self) -> None:
        if self._n == 0:
            self._first = time.monotonic()
        self._n += 1
        if self._n >= self.max_rows:
            self.cut()

    def __len__(self) -> int:
        return self._n

    def cut(self) -> None:
        """Hand what is collected to the writer now."""
        if not self._n:
            return
        tables = {
            TRADES.name: self._trades,
            DEPTH.name: self._depth,
            SNAPSHOTS.name: self._snapshots,
            KLINES.name: list(self._klines.values()),
            KLINE_UPDATES.name: self._kline_updates,
            GAPS.name: self._gaps,
            **self._other,
        }
        self._trades, self._depth, self._snapshots, self._gaps = [], [], [], []
        self._kline_updates = []
        self._other = {}
        self._klines = {}
        self._n = 0
        self._seq = max(self._seq + 1, self._clock())
        self._submit(Batch({t: rows for t, rows in tables.items() if rows}, self._seq))

    async def run(self) -> None:
        """Cut by age: the client's own auto-flush timer only fires when a row is added."""
        while True:
            if self._n:
                wait = self._first + self.max_age - time.monotonic()
                if wait <= 0:
                    self.cut()
                    continue
            else:
                wait = self.max_age
            await asyncio.sleep(wait)
