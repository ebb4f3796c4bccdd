"""Backfill from the REST API, in its own task, never in the frame loop.

Gaps queue up here; each round batches them per stream into as few requests as the API
allows (all codes in one ``/trade``, one ``/snapshot``, one ``/depth``, one ``/history``
with a request per code and bar type), under the process's one token bucket.

- trades: ``/trade`` returns the latest 50 per code. They are merged into what was stored
  per (code, second) as multisets (:meth:`TradeCounter.merge`), so nothing is duplicated
  and identical trades are not collapsed. When the oldest trade returned is newer than the
  gap's start and the window was full, the gap is ``partial`` and says which span is lost.
- K-lines: ``/history`` with ``e`` = the gap's end; the bars inside the gap are written.
- snapshots and depth: ``/snapshot`` and ``/depth`` refresh the current state; the states
  during the gap cannot be had, so such a gap is ``unrecoverable``.

Backfilled rows carry ``source = "backfill"``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from .exceptions import DecodeError, UpstreamError
from .gaps import GapDetector
from .identity import TradeCounter
from .protocol import MAX_TRADE_COUNT, NS, Kline, Record, Trade, records_from
from .rest import RestClient
from .schema import Gap

log = structlog.get_logger("recorder.backfill")


class Backfiller:
    def __init__(self, rest: RestClient, counter: TradeCounter, write: Callable[[Record], None],
                 update_gap: Callable[[Gap], None], detector: GapDetector | None = None,
                 trade_count: int = MAX_TRADE_COUNT) -> None:
        self.rest = rest
        self.counter = counter
        self.write = write
        self.update_gap = update_gap
        self.detector = detector
        self.trade_count = min(trade_count, MAX_TRADE_COUNT)
        self._queue: list[Gap] = []
        self._wake = asyncio.Event()
        self.rows = 0
        self.rounds = 0
        self.failed_rounds = 0

    def submit(self, gap: Gap) -> None:
        """Queue a gap whose end is known."""
        self._queue.append(gap)
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            gaps, self._queue = self._queue, []
            if not gaps:
                continue
            try:
                await self.round(gaps)
            except UpstreamError as exc:
                # Still open: they go back in the queue for the next round.
                self.failed_rounds += 1
                log.error("backfill_failed", error=str(exc), gaps=len(gaps))
                self._queue[:0] = gaps
                await asyncio.sleep(self.rest.backoff_initial * 5)
                self._wake.set()

    async def round(self, gaps: list[Gap]) -> None:
        """One pass over a set of gaps: trades first (what can be recovered), then the rest."""
        self.rounds += 1
        by_stream: dict[str, list[Gap]] = {}
        for gap in gaps:
            by_stream.setdefault(gap.stream, []).append(gap)
        if "trades" in by_stream:
            await self._trades(by_stream.pop("trades"))
        klines = {s: g for s, g in by_stream.items() if s.startswith("klines:")}
        if klines:
            await self._klines([g for group in klines.values() for g in group])
        for stream, path, kind in (("snapshots", "/snapshot", "S"), ("depth", "/depth", "D")):
            if stream in by_stream:
                await self._refresh(by_stream[stream], path, kind)

    async def _trades(self, gaps: list[Gap]) -> None:
        codes = sorted({g.code for g in gaps})
        data = await self.rest.post("/trade", {"codes": codes, "count": self.trade_count})
        got = self._decode("T", data)
        by_code: dict[str, list[Trade]] = {}
        for record in got:
            assert isinstance(record, Trade)
            record.source = "backfill"
            by_code.setdefault(record.code, []).append(record)
        for gap in sorted(gaps, key=lambda g: g.start):
            returned = by_code.get(gap.code, [])
            inside = [t for t in returned if gap.start <= t.ts <= gap.end]
            new = self.counter.merge(inside)
            for trade in new:
                self.write(trade)
            if self.detector is not None:
                self.detector.on_backfilled(new)
            gap.backfilled += len(new)
            self.rows += len(new)
            oldest = min((t.ts for t in returned), default=None)
            if len(returned) >= self.trade_count and oldest is not None and oldest > gap.start:
                gap.status = "partial"
                gap.missing = (oldest - gap.start) / NS
                gap.missing_unit = "seconds"
                gap.detail = (f"/trade keeps the latest {self.trade_count} trades; trades from "
                              f"{_iso(gap.start)} to {_iso(oldest)} are not recoverable")
            else:
                gap.status = "filled"
                if gap.cause == "volume" and gap.missing is not None:
                    recovered = sum(t.size for t in new)
                    gap.missing = max(0.0, gap.missing - recovered)
                    if gap.missing > 1e-9:
                        gap.status = "partial"
            self.update_gap(gap)
            log.info("backfilled", code=gap.code, stream="trades", cause=gap.cause,
                     rows=len(new), status=gap.status)

    async def _klines(self, gaps: list[Gap]) -> None:
        reqs = []
        for gap in gaps:
            kt = int(gap.stream.partition(":")[2])
            span = max(1, (gap.end - gap.start) // (60 * NS) + 2)
            reqs.append({"c": gap.code, "co": int(min(span, 1000)), "a": 0, "kt": kt,
                         "e": gap.end // NS})
        data = await self.rest.post("/history", {"kline_reqs": reqs})
        bars = self._decode("K", data)
        for gap in gaps:
            kt = int(gap.stream.partition(":")[2])
            inside = [b for b in bars if isinstance(b, Kline) and b.code == gap.code
                      and b.kt == kt and gap.start <= b.ts <= gap.end]
            for bar in inside:
                bar.source = "backfill"
                self.write(bar)
            gap.backfilled += len(inside)
            self.rows += len(inside)
            gap.status = "filled"
            if gap.missing_unit == "bars":
                gap.missing = 0.0
            self.update_gap(gap)

    async def _refresh(self, gaps: list[Gap], path: str, kind: str) -> None:
        codes = sorted({g.code for g in gaps})
        records = self._decode(kind, await self.rest.post(path, {"codes": codes}))
        for record in records:
            record.source = "backfill"
            self.write(record)
        self.rows += len(records)
        for gap in gaps:
            gap.backfilled += sum(1 for r in records if r.code == gap.code)
            gap.status = "unrecoverable"
            gap.missing = (gap.end - gap.start) / NS
            gap.missing_unit = "seconds"
            gap.detail = f"current state refreshed from {path}; states during the gap are lost"
            self.update_gap(gap)

    @staticmethod
    def _decode(kind: str, data: Any) -> list[Record]:
        if not isinstance(data, list):
            raise UpstreamError(f"REST data for {kind} is not a list")
        try:
            return records_from(kind, data, time.time_ns())
        except DecodeError as exc:
            raise UpstreamError(f"REST data for {kind}: {exc.reason}") from None


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))
