"""Backfill from the REST API, in its own task, never in the frame loop.

Gaps queue up here; each round batches them per stream into as few requests as the API
allows (all codes in one ``/trade``, one ``/snapshot``, one ``/depth``, one ``/history``
with a request per code and bar type), under the process's one rate limiter.

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
from .gaps import Gap
from .identity import TradeCounter
from .protocol import MAX_TRADE_COUNT, NS, Kline, Record, Trade, records_from
from .rest import RestClient

log = structlog.get_logger("recorder.backfill")


class Backfiller:
    def __init__(
        self,
        rest: RestClient,
        counter: TradeCounter,
        write: Callable[[Record], None],
        update_gap: Callable[[Gap], None],
        trade_count: int = MAX_TRADE_COUNT,
        settle: float = 1.0,
    ) -> None:
        self.rest = rest
        self.counter = counter
        self.write = write
        self.update_gap = update_gap
        self.trade_count = min(trade_count, MAX_TRADE_COUNT)
        self.settle = settle
        self._queue: list[Gap] = []
        self._held: dict[int, Gap] = {}  # id(gap) -> gap, for trades gaps not backfilled yet
        #: recorded gaps backfilled so far, per (stream, status)
        self.outcomes: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()
        self.rows = 0
        self.failed_rounds = 0
        self.submitted = 0
        self.resolved = 0

    def hold(self, gap: Gap) -> None:
        """Keep the trade counts a trades gap's backfill will merge against until it ran
        (they would otherwise leave the counter's window)."""
        if gap.stream == "trades" and id(gap) not in self._held:
            self._held[id(gap)] = gap
            self.counter.hold(gap.code, gap.start)

    def _release(self, gap: Gap) -> None:
        if self._held.pop(id(gap), None) is not None:
            self.counter.release(gap.code, gap.start)

    def submit(self, gap: Gap) -> None:
        """Queue a gap whose end is known."""
        self.hold(gap)
        self.submitted += 1
        self._queue.append(gap)
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Every gap submitted so far was backfilled as far as the API allows."""
        return self.resolved == self.submitted

    def _resolved(self, gap: Gap) -> None:
        self.resolved += 1
        if gap.record:  # how the holes ended, for the alerts: by stream and status
            key = (gap.stream.partition(":")[0], gap.status)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.update_gap(gap)
        self._release(gap)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            # After a reconnect every code's gap closes within a moment: wait for them so
            # one request serves them all. Then wait for the rate limit before taking the
            # queue, so gaps that arrive meanwhile join this request instead of queueing
            # behind it while /trade's window of 50 moves on.
            await asyncio.sleep(self.settle)
            await self.rest.limiter.ready()
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
        by_stream: dict[str, list[Gap]] = {}
        merged = _coalesce(gaps)
        for gap in gaps:
            if not any(gap is m for m in merged):  # folded into another: resolved with it
                self.resolved += 1
                self._release(gap)
        for gap in merged:
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
            end = _end(gap)
            inside = [t for t in returned if gap.start <= t.ts <= end]
            new = self.counter.merge(inside)
            for trade in new:
                self.write(trade)
            gap.backfilled += len(new)
            gap.backfilled_volume += sum(t.size for t in new)
            self.rows += len(new)
            oldest = min((t.ts for t in returned), default=None)
            # A full window whose oldest trade is in the gap's first second may have cut
            # that second short: its earlier trades could be missing, so only a window
            # reaching back past that second proves the gap filled (found by the chaos run).
            if len(returned) >= self.trade_count and oldest is not None and oldest >= gap.start:
                # an internal sweep that could not be filled is a hole like any other (but a
                # code a reload added was never recorded before: nothing of it was lost)
                gap.record = gap.record or gap.cause != "added"
                gap.status = "partial"
                lost_to = min(oldest, end)  # past the gap's end nothing of it was returned
                gap.missing = (lost_to - gap.start) / NS
                gap.missing_unit = "seconds"
                gap.detail = (
                    f"/trade keeps the latest {self.trade_count} trades; trades from "
                    f"{_iso(gap.start)} to {_iso(lost_to)} are not recoverable"
                )
            else:
                # the window reaches back past the gap's start: every trade of the span is
                # stored now (the merge keeps the union), whatever the estimate said
                gap.status = "filled"
                gap.missing = 0.0 if gap.missing is not None else None
            gap.settle_volume()
            self._resolved(gap)
            log.info(
                "backfilled",
                code=gap.code,
                stream="trades",
                cause=gap.cause,
                rows=len(new),
                status=gap.status,
            )

    async def _klines(self, gaps: list[Gap]) -> None:
        reqs = []
        for gap in gaps:
            kt = int(gap.stream.partition(":")[2])
            end = _end(gap)
            span = max(1, (end - gap.start) // (60 * NS) + 2)
            reqs.append(
                {"c": gap.code, "co": int(min(span, 1000)), "a": 0, "kt": kt, "e": end // NS}
            )
        data = await self.rest.post("/history", {"kline_reqs": reqs})
        bars = self._decode("K", data)
        for gap in gaps:
            kt = int(gap.stream.partition(":")[2])
            inside = [
                b
                for b in bars
                if isinstance(b, Kline)
                and b.code == gap.code
                and b.kt == kt
                and gap.start <= b.ts <= _end(gap)
            ]
            for bar in inside:
                bar.source = "backfill"
                self.write(bar)
            gap.backfilled += len(inside)
            self.rows += len(inside)
            gap.status = "filled"
            if gap.missing_unit == "bars":
                gap.missing = 0.0
            self._resolved(gap)

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
            gap.missing = (_end(gap) - gap.start) / NS
            gap.missing_unit = "seconds"
            gap.detail = f"current state refreshed from {path}; states during the gap are lost"
            self._resolved(gap)

    @staticmethod
    def _decode(kind: str, data: Any) -> list[Record]:
        if not isinstance(data, list):
            raise UpstreamError(f"REST data for {kind} is not a list")
        try:
            return records_from(kind, data, time.time_ns())
        except DecodeError as exc:
            raise UpstreamError(f"REST data for {kind}: {exc.reason}") from None


def _coalesce(gaps: list[Gap]) -> list[Gap]:
    """Gaps with the same key (start second, code, stream, cause) are one row: merge them."""
    merged: dict[tuple[int, str, str, str], Gap] = {}
    for gap in gaps:
        key = (gap.start, gap.code, gap.stream, gap.cause)
        first = merged.setdefault(key, gap)
        if first is not gap:
            first.end = max(_end(first), _end(gap))
            first.backfilled_volume += gap.backfilled_volume
            if gap.missing is not None:
                first.missing = (first.missing or 0.0) + gap.missing
            if gap.unexplained is not None:
                first.unexplained = (first.unexplained or 0.0) + gap.unexplained
            first.record = first.record or gap.record
    return list(merged.values())


def _end(gap: Gap) -> int:
    """The end of a gap handed to the backfill, which only takes gaps that ended."""
    if gap.end is None:
        raise ValueError(f"gap of {gap.code} {gap.stream} has no end yet")
    return gap.end


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))
