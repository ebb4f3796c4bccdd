"""Gap detection. The protocol has no sequence numbers, so loss shows only as:

- ``disconnect``: from the last frame of a code and stream before the session ended (or
  the last row stored before the recorder started) to the first frame after resubscribing;
- ``silence``: a code with no trade for ``silence_after`` seconds while its market is open;
- ``kline_skip``: a K-line bar whose ``ts`` skips intervals in which the market was open;
- ``dropped``: rows the recorder received and then lost itself (a full spool, a batch the
  database refused set aside, a damaged spool entry), from :class:`DroppedRows`;
- ``volume``: a snapshot's cumulative day volume grew by more than the trades recorded
  for that code since the previous snapshot, and stayed so at the next snapshot (so a
  snapshot that merely overtook its trade on the wire is not a gap).

The volume check needs a first snapshot as its baseline, so a trade lost between the
trades subscription and that snapshot would be invisible: for that span every session
emits an internal ``startup`` sweep (backfilled, not written to the gaps table).

The detector is fed events and calls ``emit`` with a :class:`Gap` when a gap is known; it
does no I/O and reads no clock: "now" comes from the injected ``clock`` and receive times
from the records. Times are integer nanoseconds (exchange time unless said otherwise).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias

from .config import GapsConfig, SubscribeConfig
from .feed import TRADES, Feed
from .markets import Calendar, is_open
from .protocol import NS, STREAMS, Kline, Record, Snapshot, Stream, Trade, market_of

_MINUTE = 60 * NS
_DAY = 86400 * NS
#: how far ahead of the local clock an exchange time may be and still be believed; a time
#: beyond it (a bad clock upstream, a ``ts`` in ms) is stored as received but never becomes
#: the "last time" of a code, so it cannot move later gaps' starts into the future
CLOCK_SKEW = 300 * NS
#: skipped K-line intervals checked one by one against market hours (about 45 ms); a longer
#: skip is one gap whose bar count is not known, so one frame cannot hold the loop
MAX_SCANNED_BARS = 20_000
_VOLUME_UNKNOWN = "lost volume unknown"


class GapCause(StrEnum):
    """Why a gap is one (the ``cause`` column; the module docstring says when each is found)."""

    DISCONNECT = "disconnect"
    SILENCE = "silence"
    KLINE_SKIP = "kline_skip"
    DROPPED = "dropped"
    VOLUME = "volume"
    #: internal sweeps, backfilled but written only when they cannot be filled: the span
    #: after a (re)subscription, and a code a reload added
    STARTUP = "startup"
    ADDED = "added"


class GapStatus(StrEnum):
    """Where a gap stands (the ``status`` column, the ``status`` label of ``qos_gaps``)."""

    OPEN = "open"
    FILLED = "filled"
    PARTIAL = "partial"
    UNRECOVERABLE = "unrecoverable"


#: how a backfilled gap can end (the ``qos_gaps`` counter's statuses)
ENDED: Final = (GapStatus.FILLED, GapStatus.PARTIAL, GapStatus.UNRECOVERABLE)


class GapUnit(StrEnum):
    """What ``missing`` counts (the ``missing_unit`` column)."""

    SECONDS = "seconds"
    VOLUME = "volume"
    BARS = "bars"
    ROWS = "rows"


#: a gap's identity, its row's dedup key: (start, code, feed, cause)
GapKey: TypeAlias = tuple[int, str, Feed, GapCause]


@dataclass(slots=True)
class Gap:
    """A hole in the record: ``[start, end]`` (ns) of one code and feed. ``end`` is None
    while the hole lasts (the row says ``open`` with no end)."""

    start: int
    end: int | None
    code: str
    feed: Feed
    cause: GapCause
    detected_ts: int
    backfilled: int = 0
    missing: float | None = None
    missing_unit: GapUnit | None = None
    status: GapStatus = GapStatus.OPEN
    detail: str | None = None
    #: estimated volume traded inside the hole and not stored, when it can be estimated
    lost_volume: float | None = None
    #: trades traded inside the hole and not stored, where that is known (0 when filled)
    lost_trades: int | None = None
    #: False for an internal sweep that is backfilled but not written to the table
    record: bool = True
    #: volume traded across the hole that the live stream did not deliver (snapshot day
    #: volume on either side minus the live trades between), once both sides are known
    unexplained: float | None = None
    #: volume of the trades the backfill recovered inside the hole
    backfilled_volume: float = 0.0

    @property
    def key(self) -> GapKey:
        """The gap's identity, the dedup key of its row: a later state of the same hole has
        the same key (these four fields never change once the gap is made)."""
        return (self.start, self.code, self.feed, self.cause)

    def note_volume_unknown(self, why: str) -> None:
        """Say why the lost volume cannot be estimated (it stays NULL, never 0); a filled
        gap's loss is known (none), so it says nothing."""
        if self.status is not GapStatus.FILLED:
            self.detail = _join(self.detail, f"{why}: {_VOLUME_UNKNOWN}")

    def settle_volume(self) -> None:
        """``lost_volume`` from what is known: exact 0 once filled, else the estimate."""
        if self.status is GapStatus.FILLED:
            self.lost_volume, self.lost_trades = 0.0, 0
            if self.detail:  # a note that the volume was unknown is no longer so
                kept = [n for n in self.detail.split("; ") if not n.endswith(_VOLUME_UNKNOWN)]
                self.detail = "; ".join(kept) or None
        elif self.unexplained is not None:
            self.lost_volume = max(0.0, self.unexplained - self.backfilled_volume)


def bar_interval(kt: int, market: str) -> int | None:
    """Nanoseconds between bar opens, where bars must be contiguous; else ``None``."""
    if kt < 1000:
        return kt * _MINUTE
    if kt == 1001 and market == "CF":
        return 1440 * _MINUTE
    return None


@dataclass
class _Volume:
    base: float
    traded: float = 0.0
    prev_excess: float = 0.0
    reported: float = 0.0
    last_v: float = 0.0
    clean_ts: int = 0


class _VolumeCheck:
    """Trades lost where no frame was missed: a code's snapshot day volume grows by more
    than the trades recorded since its first snapshot (beyond ``tolerance``, twice in a
    row); the first snapshot after the trades subscription closes the start-up sweep."""

    def __init__(self, tolerance: float, clock: Callable[[], int]) -> None:
        self.tolerance = tolerance
        self.clock = clock
        #: per code: the baseline and the trades counted since (the detector adds them)
        self.per_code: dict[str, _Volume] = {}

    def check(self, snap: Snapshot, trades_since: int | None) -> Gap | None:
        """A snapshot of a code whose trades and snapshots are both recorded; the first
        one after the trades subscription (``trades_since``) is the start-up sweep."""
        vol = self.per_code.get(snap.code)
        if vol is None or snap.volume < vol.last_v:  # first snapshot, or a new trading day
            self.per_code[snap.code] = _Volume(
                base=snap.volume, last_v=snap.volume, clean_ts=snap.ts
            )
            if vol is None and trades_since is not None:
                return Gap(
                    min(trades_since, snap.ts),
                    snap.ts,
                    snap.code,
                    TRADES,
                    GapCause.STARTUP,
                    self.clock(),
                    record=False,
                )
            return None
        vol.last_v = snap.volume
        excess = (snap.volume - vol.base) - vol.traded
        persistent = min(excess, vol.prev_excess)
        tolerance = self.tolerance * (snap.volume - vol.base) + 1e-9 * snap.volume
        gap = None
        if persistent - vol.reported > tolerance:
            gap = Gap(
                vol.clean_ts,
                snap.ts,
                snap.code,
                TRADES,
                GapCause.VOLUME,
                self.clock(),
                missing=persistent - vol.reported,
                missing_unit=GapUnit.VOLUME,
                detail="snapshot day volume grew by more than the trades recorded",
                unexplained=persistent - vol.reported,
            )
            gap.settle_volume()
            vol.reported = persistent
        if excess <= vol.reported + tolerance:
            vol.clean_ts = snap.ts
        vol.prev_excess = excess
        return gap


class _BarSkips:
    """K-line bars the service never pushed: between two pushes of a code and K-line
    type, every interval the market was open in is a bar that should have come."""

    def __init__(self, calendar: Calendar, clock: Callable[[], int]) -> None:
        self.calendar = calendar
        self.clock = clock
        self.bars: dict[tuple[str, int], int] = {}  # (code, kt) -> last bar's ts

    def check(self, bar: Kline, horizon: int) -> Gap | None:
        """A pushed bar: the gap of the open-market bars skipped since the code's last
        one, if any; bars later than ``horizon`` (the exchange time believed "now") are
        not tracked."""
        if bar.ts > horizon:
            return None  # not a bar of now: tracking it would hide every later skip
        key = (bar.code, bar.kt)
        last = self.bars.get(key)
        if last is None or bar.ts > last:
            self.bars[key] = bar.ts
        if last is None or bar.ts <= last:
            return None
        market = market_of(bar.code)
        step = bar_interval(bar.kt, market)
        if step is None:
            return None
        feed = Feed.klines(bar.kt)
        if (bar.ts - last) // step > MAX_SCANNED_BARS:
            return Gap(
                last + step,
                bar.ts,
                bar.code,
                feed,
                GapCause.KLINE_SKIP,
                self.clock(),
                detail=f"more than {MAX_SCANNED_BARS} intervals between two pushes",
            )
        skipped = [
            t for t in range(last + step, bar.ts, step) if is_open(market, t, self.calendar) is True
        ]
        if not skipped:
            return None
        return Gap(
            skipped[0],
            bar.ts,
            bar.code,
            feed,
            GapCause.KLINE_SKIP,
            self.clock(),
            missing=len(skipped),
            missing_unit=GapUnit.BARS,
            detail=f"{len(skipped)} bar(s) missing between two pushes",
        )


@dataclass(frozen=True, slots=True)
class DetectorSnapshot:
    """The detector's figures (names as in :class:`~recorder.status.Status`)."""

    #: receive time (wall-clock ns) of the last trade per code
    last_trade: dict[str, int]
    #: when the oldest gap that still lasts was found
    oldest_open_gap: int | None
    #: gaps whose end became known
    gaps_ended: int


class GapDetector:
    """Turns the session's events into gaps.

    ``update(gap)`` is called whenever a gap's row changes while it is open (found, its
    volume estimated); ``emit(gap)`` once its end is known, which is when it can be
    backfilled. Disconnect gaps are found the moment the session ends and end when the
    stream is subscribed again (or its first frame arrives, whichever comes first), so the
    ledger holds a row for the hole during the whole outage.
    """

    def __init__(
        self,
        gaps: GapsConfig,
        subscribe: SubscribeConfig,
        emit: Callable[[Gap], None],
        calendar: Calendar | None = None,
        clock: Callable[[], int] = time.time_ns,
        update: Callable[[Gap], None] = lambda gap: None,
    ) -> None:
        """``clock`` gives wall-clock nanoseconds, the time base of the records' ``recv_ts``."""
        self.config = gaps
        self.emit = emit
        self.update = update
        self.calendar = calendar or Calendar()
        self.clock = clock
        self.feeds: dict[Feed, list[str]] = {}  # feed -> codes
        self._volume_codes: set[str] = set()
        self._watch(subscribe)
        self.last: dict[tuple[str, Feed], int] = {}  # (code, feed) -> exchange ts
        self.last_trade: dict[str, int] = {}  # code -> exchange ts (the trades stream)
        self.last_trade_seen: dict[str, int] = {}  # code -> receive time (ns)
        self.pending: dict[tuple[str, Feed], Gap] = {}  # open disconnect gaps
        self.silent: dict[str, Gap] = {}
        self._bar_skips = _BarSkips(self.calendar, clock)
        self._volume_check = _VolumeCheck(gaps.volume_tolerance, clock)
        #: the volume check's per-code state (the same dict: the hot path adds to it)
        self.volume = self._volume_check.per_code
        #: live trade volume received per code, and at the last snapshot (day volume, ts,
        #: live volume then): the two sides a hole's lost volume is measured between
        self.live_volume: dict[str, float] = {}
        self.anchor: dict[str, tuple[float, int, float]] = {}
        #: open trades gaps' anchors; closed ones wait with theirs for the next snapshot
        self._before: dict[GapKey, tuple[float, int, float]] = {}
        self._awaiting: dict[str, list[tuple[Gap, tuple[float, int, float]]]] = {}
        #: the latest exchange time believed to be "now" (the clock plus CLOCK_SKEW), moved
        #: on by :meth:`check` every second, so the hot path compares instead of reading
        #: the clock: a later time is recorded but never becomes a code's last time
        self.horizon = clock() + CLOCK_SKEW
        self.subscribed_at: int | None = None  # receive-clock ns
        self.trades_since: int | None = None
        self.emitted = 0

    def _watch(self, subscribe: SubscribeConfig) -> None:
        self.feeds = {}
        for stream in STREAMS:
            codes = subscribe.codes(stream)
            if stream is Stream.KLINES:
                for kt in subscribe.kline_types:
                    self.feeds[Feed.klines(kt)] = codes
            elif codes:
                self.feeds[Feed.of(stream)] = codes
        both = set(subscribe.codes(Stream.TRADES)) & set(subscribe.codes(Stream.SNAPSHOTS))
        self._volume_codes = both

    def resubscribe(self, subscribe: SubscribeConfig) -> None:
        """The subscriptions changed (a reload): watch the new ones. A removed code's
        recording simply ends; a hole it had open when it was removed ends now."""
        self._watch(subscribe)
        now = self.clock()
        for key in [k for k in self.pending if k[0] not in self.feeds.get(k[1], ())]:
            self._close(self.pending.pop(key), now)
        for code in [c for c in self.silent if c not in self.feeds.get(TRADES, ())]:
            self._end_silence(code, now)

    def _emit(self, gap: Gap) -> None:
        self.emitted += 1
        self.emit(gap)

    def sweep_due(self) -> bool:
        """A start-up sweep is coming: trades are subscribed and a code the volume check
        watches has had no snapshot since (its first one emits the sweep)."""
        if self.subscribed_at is None or self.trades_since is None:
            return False
        return any(code not in self.volume for code in self._volume_codes)

    def open_gaps(self) -> list[Gap]:
        """Gaps whose end is not known yet."""
        return [*self.pending.values(), *self.silent.values()]

    def snapshot(self) -> DetectorSnapshot:
        return DetectorSnapshot(
            last_trade=dict(self.last_trade_seen),
            oldest_open_gap=min((g.detected_ts for g in self.open_gaps()), default=None),
            gaps_ended=self.emitted,
        )

    # --- events ---------------------------------------------------------------------

    def on_trade(self, trade: Trade) -> None:
        """:meth:`on_record` for a trade, without the dispatch (the hot path)."""
        code = trade.code
        if self.pending:
            gap = self.pending.pop((code, TRADES), None)
            if gap is not None:
                self._close(gap, trade.ts)
        if self.silent and code in self.silent:
            self._end_silence(code, trade.ts)
        self.last_trade_seen[code] = trade.recv_ts
        self.live_volume[code] = self.live_volume.get(code, 0.0) + trade.size
        vol = self.volume.get(code)
        if vol is not None:
            vol.traded += trade.size
        if trade.ts <= self.horizon:
            self.last_trade[code] = trade.ts

    def on_record(self, record: Record) -> None:
        if type(record) is Trade:
            self.on_trade(record)
            return
        code, ts = record.code, record.ts
        key = (code, Feed.of_record(record))
        if self.pending:
            gap = self.pending.pop(key, None)
            if gap is not None:
                self._close(gap, ts)
        found = None
        if type(record) is Snapshot:
            if code in self._volume_codes:
                self._anchor(record)
                found = self._volume_check.check(record, self.trades_since)
        elif type(record) is Kline:
            found = self._bar_skips.check(record, self.horizon)
        if found is not None:
            self._emit(found)
        if ts <= self.horizon:
            self.last[key] = ts

    def on_subscribed(self, feed: Feed, codes: Iterable[str] | None = None) -> None:
        """A feed is subscribed (again) for ``codes`` (all when None): their open
        disconnect gaps end now."""
        now = self.subscribed_at = self.clock()
        only = None if codes is None else set(codes)
        if feed == TRADES:
            # the volume baseline must come after the trades subscription
            self.trades_since = now - NS
            for code in list(self.volume) if only is None else only:
                self.volume.pop(code, None)
        for key in [k for k in self.pending if k[1] == feed and (only is None or k[0] in only)]:
            self._close(self.pending.pop(key), now)

    def on_disconnect(self, detail: str | None = None) -> None:
        """The session ended: every subscribed code and stream has a gap from its last frame,
        written at once as open."""
        now = self.clock()
        self.subscribed_at = None
        for feed, codes in self.feeds.items():
            for code in codes:
                if (code, feed) not in self.pending:
                    start = self._last(code, feed, now)
                    gap = Gap(start, None, code, feed, GapCause.DISCONNECT, now, detail=detail)
                    self._open(gap)
        self.volume.clear()  # trades missed while away must not read as invisible loss

    def seed(
        self,
        last_stored: dict[tuple[str, str], int],
        reopened: Sequence[Gap] = (),
        anchors: dict[str, tuple[float, int, float]] | None = None,
    ) -> None:
        """At start-up: the time the recorder was not running is a disconnect gap. Gaps an
        earlier run left open with no end (``reopened``) stay the gap of their code and
        stream; ``anchors`` are the last stored snapshot per code (day volume, ts, minus the
        live volume stored after it), for the lost-volume estimate."""
        now = self.clock()
        if anchors:
            self.anchor.update(anchors)
        for gap in reopened:
            if gap.end is None and gap.feed in self.feeds:
                self._open(gap, write=False)
        for feed, codes in self.feeds.items():
            for code in codes:
                start = last_stored.get((code, feed.table))
                if start is None or start > now + CLOCK_SKEW:
                    continue
                if feed == TRADES:
                    self.last_trade[code] = start
                else:
                    self.last[(code, feed)] = start
                if (code, feed) not in self.pending:
                    detail = "the recorder was not running"
                    gap = Gap(start, None, code, feed, GapCause.DISCONNECT, now, detail=detail)
                    self._open(gap)

    def check(self) -> None:
        """Periodic: silence while the market is open."""
        now = self.clock()
        self.horizon = now + CLOCK_SKEW
        if self.subscribed_at is None:
            return
        limit = self.config.silence_after
        for code in self.feeds.get(TRADES, ()):
            if code in self.silent or (code, TRADES) in self.pending:
                continue
            seen = max(self.last_trade_seen.get(code, 0), self.subscribed_at)
            if now - seen <= limit * NS:
                continue
            if is_open(market_of(code), now, self.calendar) is not True:
                continue
            start = self._last(code, TRADES, now - int(limit * NS))
            gap = Gap(
                start,
                None,
                code,
                TRADES,
                GapCause.SILENCE,
                now,
                detail=f"no trade for {limit:g} s while the market was open",
            )
            self.silent[code] = gap
            self.update(gap)

    def _last(self, code: str, feed: Feed, default: int) -> int:
        """The exchange time of the last record of a code and feed; ``default`` when
        there is none or it is later than the clock allows (a far-future ``ts`` must not
        start a gap that never ends)."""
        last = self.last_trade.get(code) if feed == TRADES else self.last.get((code, feed))
        if last is None or last > self.clock() + CLOCK_SKEW:
            return default
        return last

    # --- open gaps and their lost volume ----------------------------------------------------

    def _open(self, gap: Gap, write: bool = True) -> None:
        self.pending[(gap.code, gap.feed)] = gap
        if gap.feed == TRADES:
            anchor = self.anchor.get(gap.code)
            if gap.code not in self._volume_codes:
                gap.note_volume_unknown("no snapshots subscribed")
            elif anchor is not None:
                self._before[gap.key] = anchor
        if write:
            self.update(gap)

    def _end_silence(self, code: str, ts: int) -> None:
        gap = self.silent.pop(code)
        gap.end = ts
        self._emit(gap)

    def _close(self, gap: Gap, ts: int) -> None:
        gap.end = max(gap.start, ts)
        # the anchor leaves with the gap: a later hole of the code from the same last trade
        # (no trade between two disconnects) has the same key, and its own anchor
        before = self._before.pop(gap.key, None)
        if before is not None:
            self._awaiting.setdefault(gap.code, []).append((gap, before))
        self._emit(gap)

    def _anchor(self, snap: Snapshot) -> None:
        """A snapshot: the after-side of the gaps waiting for it, the before-side of the
        next ones."""
        live = self.live_volume.get(snap.code, 0.0)
        waiting = self._awaiting.pop(snap.code, None)
        for gap, (v0, ts0, live0) in waiting or ():
            if snap.ts // _DAY != ts0 // _DAY:
                gap.note_volume_unknown("a new trading day began")
            elif snap.volume < v0:
                # the same day: the source's day volume went back (a restarted source)
                gap.note_volume_unknown("the day volume went down across the hole")
            else:
                gap.unexplained = (snap.volume - v0) - (live - live0)
                gap.settle_volume()
            self.update(gap)
        self.anchor[snap.code] = (snap.volume, snap.ts, live)


class DroppedRows:
    """Rows the recorder itself lost, as ``dropped`` gaps with the span and count of their
    rows. Drops of one code and feed merge into its current gap while they go on (its
    start, part of the row's key, stays), so each gap row is written again with the growing
    count instead of being replaced by a smaller one. The writer thread adds; the event loop
    takes what changed (so a lock)."""

    #: gaps remembered by key, so a later drop with the same start adds to the same row
    REMEMBER = 10_000

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[tuple[str, Feed, int], Gap] = {}  # oldest first
        self._current: dict[tuple[str, Feed], Gap] = {}
        self._touched: set[tuple[str, Feed]] = set()
        self._changed: dict[tuple[str, Feed, int], Gap] = {}
        #: rows of the gaps table lost too: written again as they were, not as new gaps
        self._again: dict[GapKey, Gap] = {}
        self.rewritten = 0  # how many such rows

    def __bool__(self) -> bool:
        return bool(self._changed or self._again)

    def add(self, code: str, feed: Feed, start: int, end: int, rows: int | None, why: str) -> None:
        """``rows`` (None: unknown) of one code and feed, exchange times ``start``-``end``."""
        now = self.clock()
        # a row's own time may be what made it unwritable: keep the gap's times sane
        start, end = (min(max(t, 0), now + CLOCK_SKEW) for t in (start, end))
        with self._lock:
            gap = self._current.get((code, feed))
            if gap is None or start < gap.start:  # older rows: the gap that starts there
                gap = self._known.get((code, feed, start))
                if gap is None:
                    gap = Gap(start, end, code, feed, GapCause.DROPPED, now, missing=0)
                    gap.missing_unit, gap.status = GapUnit.ROWS, GapStatus.UNRECOVERABLE
                    self._known[(code, feed, start)] = gap
                    if len(self._known) > self.REMEMBER:
                        del self._known[next(iter(self._known))]
                self._current.setdefault((code, feed), gap)
            gap.end = max(gap.end or end, end)
            gap.missing = None if rows is None or gap.missing is None else gap.missing + rows
            if feed == TRADES:
                gap.lost_trades = None if gap.missing is None else int(gap.missing)
            gap.detail = why
            self._touched.add((code, feed))
            self._changed[(code, feed, gap.start)] = gap

    def add_rows(self, tables: Mapping[str, Sequence[Sequence[Any]]], why: str) -> None:
        """Rows of the data tables (``ts`` and ``code`` first), merged per code and feed."""
        spans: dict[tuple[str, Feed], list[int]] = {}
        now = self.clock()
        for table, rows in tables.items():
            for row in rows:
                ts, code = row[0], row[1]
                ts = ts if type(ts) is int else now
                span = spans.setdefault((str(code), Feed.of_row(table, row)), [ts, ts, 0])
                span[0], span[1], span[2] = min(span[0], ts), max(span[1], ts), span[2] + 1
        for (code, feed), (start, end, n) in spans.items():
            self.add(code, feed, start, end, n, why)

    def again(self, gaps: Iterable[Gap], lost: bool = True) -> None:
        """Gap rows that were ``lost`` themselves (or kept by the last run at its stop):
        written again later, the latest state kept."""
        with self._lock:
            for gap in gaps:
                self._again[gap.key] = gap
                self.rewritten += lost

    def take(self) -> list[Gap]:
        """The gaps to write now (copies: the writer thread goes on adding to the
        originals). A code's current gap ends once a take finds no drop since the last."""
        with self._lock:
            out = [*self._again.values(), *map(dataclasses.replace, self._changed.values())]
            self._changed, self._again = {}, {}
            self._current = {k: g for k, g in self._current.items() if k in self._touched}
            self._touched = set()
        return out


def _join(detail: str | None, note: str) -> str:
    return note if not detail else f"{detail}; {note}"
