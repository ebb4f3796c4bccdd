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
from dataclasses import dataclass, field
from typing import Any

import structlog

from .exceptions import DecodeError, UpstreamError
from .feed import DEPTH, SNAPSHOTS, TRADES, Feed
from .gaps import Gap, GapCause, GapKey, GapStatus, GapUnit
from .identity import TradeCounter
from .protocol import MAX_TRADE_COUNT, NS, Kline, Record, Stream, Trade, Wire, records_from
from .rest import Purpose, RestClient
from .retry import Retry, classify_rest

log = structlog.get_logger("recorder.backfill")


#: internal sweeps: the span after a (re)subscription, and a code a reload added
SWEEPS = frozenset({GapCause.STARTUP, GapCause.ADDED})
#: seconds a /trade answer may settle a later gap it covers, instead of a new request
REUSE = 30.0


@dataclass
class _Lane:
    """Gaps waiting for one kind of round, and the event that wakes it."""

    queue: list[Gap] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def gather(self, coming: Callable[[], bool], limit: float) -> None:
        """Wait while more gaps for this round are ``coming()``, at most ``limit`` s."""
        deadline = time.monotonic() + limit
        while coming() and (left := deadline - time.monotonic()) > 0:
            self.wake.clear()
            try:
                async with asyncio.timeout(min(left, 0.1)):
                    await self.wake.wait()
            except TimeoutError:
                pass
        self.wake.set()


class _TradeAnswers:
    """The last ``/trade`` answer per code, and when it came (monotonic)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, list[Trade]]] = {}

    def keep(self, code: str, trades: list[Trade]) -> list[Trade]:
        self._last[code] = (time.monotonic(), trades)
        return trades

    def covering(self, gap: Gap) -> list[Trade] | None:
        """The last ``/trade`` answer for the gap's code when it already covers the gap (a
        trade after the gap's end in it: /trade gives the latest trades, so everything up
        to the end was there), fetched less than ``REUSE`` seconds ago: a round that would
        repeat one that finished is not made."""
        entry = self._last.get(gap.code)
        if entry is None or time.monotonic() - entry[0] > REUSE:
            return None
        trades = entry[1]
        newest = max((t.ts for t in trades), default=None)
        return trades if newest is not None and newest > _end(gap) else None


@dataclass(frozen=True, slots=True)
class BackfillSnapshot:
    """The backfill's figures (names as in :class:`~recorder.status.Status`)."""

    #: recorded gaps backfilled so far, per (table, status)
    gap_outcomes: dict[tuple[str, GapStatus], int]
    backfilled_rows: int
    #: gaps submitted, and those backfilled as far as the API allows
    gaps_submitted: int
    gaps_resolved: int
    backfill_failed_rounds: int


class Backfiller:
    """Backfills the gaps it is given, in two lanes: trades (whose trades leave ``/trade``'s
    window within seconds on a busy code) and the rest (K-line history, snapshot and depth
    refreshes), so a slow refresh never holds up the next trades gap. The REST scheduler
    puts every trades request first; reference data waits while anything here is pending.
    """

    def __init__(
        self,
        rest: RestClient,
        counter: TradeCounter,
        write: Callable[[Record], None],
        update_gap: Callable[[Gap], None],
        trade_count: int = MAX_TRADE_COUNT,
        settle: float = 1.0,
        sweep_due: Callable[[], bool] = lambda: False,
        sweep_wait: float = 3.0,
        closing: Callable[[], bool] = lambda: False,
        closing_wait: float = 15.0,
    ) -> None:
        """``sweep_due()``: a start-up sweep is about to be submitted (the session has
        subscribed trades, the first snapshot has not come): a trades round waits for it up
        to ``sweep_wait`` seconds, so one ``/trade`` serves both. ``closing()``: gaps of a
        disconnect still wait for their stream's resubscription (one a second): a round of
        the other streams, which is not urgent, waits for them up to ``closing_wait``
        seconds, so one ``/history`` serves every K-line type."""
        self.rest = rest
        self.counter = counter
        self.write = write
        self.update_gap = update_gap
        self.trade_count = min(trade_count, MAX_TRADE_COUNT)
        self.settle = settle
        self.sweep_due = sweep_due
        self.sweep_wait = sweep_wait
        self.closing = closing
        self.closing_wait = closing_wait
        self._trades_lane = _Lane()
        self._other_lane = _Lane()
        #: gaps not backfilled yet, by key: two live gaps can share one (no trade between two
        #: disconnects, so the second starts where the first did), and each holds its own
        self._held: dict[GapKey, list[Gap]] = {}
        self._in_round = 0  # gaps taken by a round that has not ended
        #: recorded gaps backfilled so far, per (table, status)
        self.outcomes: dict[tuple[str, GapStatus], int] = {}
        self.rows = 0
        self.failed_rounds = 0
        self.submitted = 0
        self.resolved = 0
        #: records an answer carried for codes that were not asked for (ignored)
        self.unasked = 0
        self._answers = _TradeAnswers()
        rest.scheduler.backlog = self.pending

    def pending(self) -> bool:
        """A backfill is pending: gaps held for it, queued, or in a round."""
        lanes = (self._trades_lane, self._other_lane)
        return bool(self._held) or self._in_round > 0 or any(lane.queue for lane in lanes)

    def hold(self, gap: Gap) -> None:
        """A gap whose backfill will come (its end is not known yet): it counts as pending,
        and for a trades gap the trade counts its backfill will merge against are kept
        until it ran (they would otherwise leave the counter's window)."""
        held = self._held.setdefault(gap.key, [])
        if not any(g is gap for g in held):
            held.append(gap)
            if gap.feed == TRADES:
                self.counter.hold(gap.code, gap.start)

    def _release(self, gap: Gap) -> None:
        key = gap.key
        held = self._held.get(key, [])
        if any(g is gap for g in held):
            held[:] = [g for g in held if g is not gap]
            if not held:
                del self._held[key]
            if gap.feed == TRADES:
                self.counter.release(gap.code, gap.start)

    def submit(self, gap: Gap) -> None:
        """Queue a gap whose end is known."""
        self.hold(gap)
        self.submitted += 1
        lane = self._trades_lane if gap.feed == TRADES else self._other_lane
        lane.queue.append(gap)
        lane.wake.set()

    @property
    def idle(self) -> bool:
        """Every gap submitted so far was backfilled as far as the API allows."""
        return self.resolved == self.submitted

    def snapshot(self) -> BackfillSnapshot:
        return BackfillSnapshot(
            gap_outcomes=dict(self.outcomes),
            backfilled_rows=self.rows,
            gaps_submitted=self.submitted,
            gaps_resolved=self.resolved,
            backfill_failed_rounds=self.failed_rounds,
        )

    def _resolved(self, gap: Gap) -> None:
        self.resolved += 1
        if gap.record:  # how the holes ended, for the alerts: by table and status
            key = (gap.feed.table, gap.status)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.update_gap(gap)
        self._release(gap)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._serve(self._trades_lane))
            tg.create_task(self._serve(self._other_lane))

    async def _serve(self, lane: _Lane) -> None:
        while True:
            await lane.wake.wait()
            # After a reconnect every code's gap closes within a moment: wait for them so
            # one request serves them all (and for the start-up sweep, which comes with the
            # first snapshot). Then wait for the budget before taking the queue, so gaps
            # that arrive meanwhile join this request instead of queueing behind it while
            # /trade's window of 50 moves on.
            await asyncio.sleep(self.settle)
            if lane is self._trades_lane:
                await lane.gather(self.sweep_due, self.sweep_wait)
                if self._thrifty(lane.queue):
                    await asyncio.sleep(2 * self.settle)
            else:
                await lane.gather(self.closing, self.closing_wait)
            await self.rest.scheduler.ready()
            lane.wake.clear()
            taken, lane.queue = lane.queue, []
            if not taken:
                continue
            gaps = self._fold(taken)
            self._in_round += len(taken)
            try:
                await self._round(gaps)
            except UpstreamError as exc:
                left = [g for g in gaps if g.status is GapStatus.OPEN]
                if classify_rest(exc) is Retry.FINAL:
                    self._refused(left, exc)
                else:  # still open: they go back in the queue for the next round
                    self.failed_rounds += 1
                    log.error("backfill_failed", error=str(exc), gaps=len(left))
                    lane.queue[:0] = left
                    await asyncio.sleep(self.rest.backoff_initial * 5)
                    lane.wake.set()
            finally:
                self._in_round -= len(taken)

    def _thrifty(self, queue: list[Gap]) -> bool:
        """Whether a round may wait longer to gather more gaps: only volume gaps (a few
        trades each, found a snapshot or two late, one code at a time) while half the
        budget is spent, so a trickle of them does not spend a request each."""
        limiter = self.rest.limiter
        volume_only = bool(queue) and all(g.cause is GapCause.VOLUME for g in queue)
        return volume_only and limiter.remaining() <= limiter.rate // 2

    def _refused(self, gaps: list[Gap], exc: UpstreamError) -> None:
        """The API refused a round for good (``classify_rest`` says final): the gaps end
        unrecoverable, saying why; one request was spent, not one per retry."""
        log.error("backfill_refused", error=str(exc), gaps=len(gaps))
        for gap in gaps:
            _lost(gap, GapStatus.UNRECOVERABLE, f"backfill refused: {exc}")
            gap.settle_volume()
            self._resolved(gap)

    async def round(self, gaps: list[Gap]) -> None:
        """One pass over a set of gaps: trades first (what can be recovered), then the rest."""
        await self._round(self._fold(gaps))

    def _fold(self, gaps: list[Gap]) -> list[Gap]:
        """Gaps with the same key are one row: the ones folded into another are resolved
        with it."""
        merged = _coalesce(gaps)
        for gap in gaps:
            if not any(gap is m for m in merged):
                self.resolved += 1
                self._release(gap)
        return merged

    async def _round(self, merged: list[Gap]) -> None:
        by_feed: dict[Feed, list[Gap]] = {}
        for gap in merged:
            by_feed.setdefault(gap.feed, []).append(gap)
        if TRADES in by_feed:
            await self._trades(by_feed.pop(TRADES))
        klines = [g for f, group in by_feed.items() if f.stream is Stream.KLINES for g in group]
        if klines:
            await self._klines(klines)
        for feed, path, kind in ((SNAPSHOTS, "/snapshot", "S"), (DEPTH, "/depth", "D")):
            if feed in by_feed:
                await self._refresh(by_feed[feed], path, kind)

    async def _trades(self, gaps: list[Gap]) -> None:
        answers = {g.code: a for g in gaps if (a := self._answers.covering(g)) is not None}
        asking = [g for g in gaps if g.code not in answers]
        if asking:
            codes = sorted({g.code for g in asking})
            urgent = any(g.cause not in SWEEPS for g in asking)
            purpose = Purpose.TRADES if urgent else Purpose.SWEEP
            body = {"codes": codes, "count": self.trade_count}
            data = await self.rest.post("/trade", body, purpose)
            by_code = self._by_code("T", data, codes)
            for code in codes:
                got = [r for r in by_code.get(code, []) if type(r) is Trade]
                answers[code] = self._answers.keep(code, got)
        for gap in sorted(gaps, key=lambda g: g.start):
            self._settle_trades(gap, answers[gap.code])

    def _settle_trades(self, gap: Gap, returned: list[Trade]) -> None:
        """What ``/trade``'s answer for the gap's code proves about the gap."""
        for trade in returned:
            trade.source = "backfill"
        end = _end(gap)
        inside = [t for t in returned if gap.start <= t.ts <= end]
        new = self.counter.merge(inside)
        for trade in new:
            self.write(trade)
        gap.backfilled += len(new)
        gap.backfilled_volume += sum(t.size for t in new)
        self.rows += len(new)
        _judge_trades(gap, returned, self.trade_count)
        gap.settle_volume()
        self._resolved(gap)
        log.info(
            "backfilled",
            code=gap.code,
            stream=TRADES.key,
            cause=gap.cause.value,
            rows=len(new),
            status=gap.status.value,
        )

    def _by_code(self, kind: str, data: Any, codes: list[str]) -> dict[str, list[Record]]:
        """An answer's records by code, for the codes asked for only (an answer may not add
        to the record what was never asked for)."""
        asked = set(codes)
        out: dict[str, list[Record]] = {}
        unasked = 0
        for record in _decode(kind, data):
            if record.code in asked:
                out.setdefault(record.code, []).append(record)
            else:
                unasked += 1
        if unasked:
            self.unasked += unasked
            log.warning("rest_unasked_codes", kind=kind, records=unasked, asked=codes)
        return out

    async def _klines(self, gaps: list[Gap]) -> None:
        reqs = [_history_request(gap) for gap in gaps]
        data = await self.rest.post("/history", {"kline_reqs": reqs}, Purpose.BACKFILL)
        bars = [
            b for group in self._by_code("K", data, [g.code for g in gaps]).values() for b in group
        ]
        for gap in gaps:
            inside = _bars_inside(gap, bars)
            for bar in inside:
                bar.source = "backfill"
                self.write(bar)
            gap.backfilled += len(inside)
            self.rows += len(inside)
            gap.status = GapStatus.FILLED
            if gap.missing_unit is GapUnit.BARS:
                gap.missing = 0.0
            self._resolved(gap)

    async def _refresh(self, gaps: list[Gap], path: str, kind: str) -> None:
        codes = sorted({g.code for g in gaps})
        data = await self.rest.post(path, {"codes": codes}, Purpose.BACKFILL)
        records = [r for group in self._by_code(kind, data, codes).values() for r in group]
        for record in records:
            record.source = "backfill"
            self.write(record)
        self.rows += len(records)
        for gap in gaps:
            gap.backfilled += sum(1 for r in records if r.code == gap.code)
            gap.status = GapStatus.UNRECOVERABLE
            gap.missing = (_end(gap) - gap.start) / NS
            gap.missing_unit = GapUnit.SECONDS
            gap.detail = f"current state refreshed from {path}; states during the gap are lost"
            self._resolved(gap)


def _judge_trades(gap: Gap, returned: list[Trade], trade_count: int) -> None:
    """What a ``/trade`` answer of ``trade_count`` trades at most proves about the gap: its
    status, and what was lost."""
    oldest = min((t.ts for t in returned), default=None)
    if oldest is None:
        # no trade of this code came back: nothing shows the span complete
        detail = f"/trade returned no trades of {gap.code}: the span cannot be checked"
        _lost(gap, GapStatus.UNRECOVERABLE, detail)
    elif len(returned) >= trade_count and oldest >= gap.start:
        # A full window whose oldest trade is in the gap's first second may have cut
        # that second short: its earlier trades could be missing, so only a window
        # reaching back past that second proves the gap filled (found by the chaos run).
        lost_to = min(oldest, _end(gap))  # past the gap's end nothing of it was returned
        detail = (
            f"/trade keeps the latest {trade_count} trades; trades from "
            f"{_iso(gap.start)} to {_iso(lost_to)} are not recoverable"
        )
        _lost(gap, GapStatus.PARTIAL, detail)
        gap.missing = (lost_to - gap.start) / NS
        gap.missing_unit = GapUnit.SECONDS
    else:
        # the window reaches back past the gap's start (or holds every trade the API
        # has of the code): every trade of the span is stored now (the merge keeps the
        # union), whatever the estimate said
        gap.status = GapStatus.FILLED
        gap.missing = 0.0 if gap.missing is not None else None


def _lost(gap: Gap, status: GapStatus, detail: str) -> None:
    """The gap ends with a loss (``status``, saying why); an internal sweep that could not
    be filled is a hole like any other (but a code a reload added was never recorded
    before: nothing of it was lost)."""
    gap.record = gap.record or gap.cause is not GapCause.ADDED
    gap.status = status
    gap.detail = detail


def _history_request(gap: Gap) -> dict[str, int | str]:
    """The ``/history`` request for a K-line gap: bars up to its end, enough to reach back
    past its start (at most 1000)."""
    end = _end(gap)
    span = max(1, (end - gap.start) // (60 * NS) + 2)
    return {
        Wire.CODE: gap.code,
        Wire.COUNT: int(min(span, 1000)),
        Wire.ADJUST: 0,
        Wire.KT: _kt(gap),
        Wire.END: end // NS,
    }


def _bars_inside(gap: Gap, bars: list[Record]) -> list[Kline]:
    """The returned bars of the gap's code and K-line type inside the gap."""
    kt, end = _kt(gap), _end(gap)
    return [
        b
        for b in bars
        if isinstance(b, Kline) and b.code == gap.code and b.kt == kt and gap.start <= b.ts <= end
    ]


def _decode(kind: str, data: Any) -> list[Record]:
    if not isinstance(data, list):
        raise UpstreamError(f"REST data for {kind} is not a list")
    try:
        return records_from(kind, data, time.time_ns())
    except DecodeError as exc:
        raise UpstreamError(f"REST data for {kind}: {exc.reason}") from None


def _coalesce(gaps: list[Gap]) -> list[Gap]:
    """Gaps with the same key (start second, code, stream, cause) are one row: merge them."""
    merged: dict[GapKey, Gap] = {}
    for gap in gaps:
        first = merged.setdefault(gap.key, gap)
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
        raise ValueError(f"gap of {gap.code} {gap.feed} has no end yet")
    return gap.end


def _kt(gap: Gap) -> int:
    """The bar type of a K-line gap."""
    if gap.feed.kt is None:
        raise ValueError(f"gap of {gap.code} {gap.feed} has no K-line type")
    return gap.feed.kt


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))
