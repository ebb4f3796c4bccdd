"""Gap detection. The protocol has no sequence numbers, so loss shows only as:

- ``disconnect``: from the last frame of a code and stream before the session ended (or
  the last row stored before the recorder started) to the first frame after resubscribing;
- ``silence``: a code with no trade for ``silence_after`` seconds while its market is open;
- ``kline_skip``: a K-line bar whose ``ts`` skips intervals in which the market was open;
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

import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import GapsConfig, SubscribeConfig
from .markets import Calendar, is_open
from .protocol import NS, STREAMS, Kline, Record, Snapshot, Stream, Trade, market_of

_MINUTE = 60 * NS


@dataclass(slots=True)
class Gap:
    """A hole in the record: ``[start, end]`` (ns) of one code and stream."""

    start: int
    end: int
    code: str
    stream: str
    cause: str
    detected_ts: int
    backfilled: int = 0
    missing: float | None = None
    missing_unit: str | None = None
    status: str = "open"
    detail: str | None = None
    #: False for an internal sweep that is backfilled but not written to the table
    record: bool = True


def stream_name(record: Record) -> str:
    """The gap stream of a record: ``trades``, ``depth``, ``snapshots`` or ``klines:<kt>``."""
    if type(record) is Kline:
        return f"klines:{record.kt}"
    return record.stream.value


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


class GapDetector:
    def __init__(
        self,
        gaps: GapsConfig,
        subscribe: SubscribeConfig,
        emit: Callable[[Gap], None],
        calendar: Calendar | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``clock`` gives wall-clock nanoseconds, the time base of the records' ``recv_ts``."""
        self.config = gaps
        self.emit = emit
        self.calendar = calendar or Calendar()
        self.clock = clock
        self.streams: dict[str, list[str]] = {}  # gap stream -> codes
        for stream in STREAMS:
            codes = subscribe.codes(stream)
            if stream is Stream.KLINES:
                for kt in subscribe.kline_types:
                    self.streams[f"klines:{kt}"] = codes
            elif codes:
                self.streams[stream.value] = codes
        both = set(subscribe.codes(Stream.TRADES)) & set(subscribe.codes(Stream.SNAPSHOTS))
        self._volume_codes = both
        self.last: dict[tuple[str, str], int] = {}  # (code, stream) -> exchange ts
        self.last_trade: dict[str, int] = {}  # code -> exchange ts (the trades stream)
        self.last_trade_seen: dict[str, int] = {}  # code -> receive time (ns)
        self.pending: dict[tuple[str, str], Gap] = {}  # disconnect gaps awaiting a frame
        self.silent: dict[str, Gap] = {}
        self.bars: dict[tuple[str, int], int] = {}
        self.volume: dict[str, _Volume] = {}
        self.subscribed_at: int | None = None  # receive-clock ns
        self.trades_since: int | None = None
        self.emitted = 0

    def _emit(self, gap: Gap) -> None:
        self.emitted += 1
        self.emit(gap)

    # --- events ---------------------------------------------------------------------

    def on_trade(self, trade: Trade) -> None:
        """:meth:`on_record` for a trade, without the dispatch (the hot path)."""
        code = trade.code
        if self.pending:
            gap = self.pending.pop((code, "trades"), None)
            if gap is not None:
                gap.end = max(gap.start, trade.ts)
                self._emit(gap)
        if self.silent:
            silent = self.silent.pop(code, None)
            if silent is not None:
                silent.end = trade.ts
                self._emit(silent)
        self.last_trade_seen[code] = trade.recv_ts
        vol = self.volume.get(code)
        if vol is not None:
            vol.traded += trade.size
        self.last_trade[code] = trade.ts

    def on_record(self, record: Record) -> None:
        if type(record) is Trade:
            self.on_trade(record)
            return
        stream = stream_name(record)
        code, ts = record.code, record.ts
        key = (code, stream)
        if self.pending:
            gap = self.pending.pop(key, None)
            if gap is not None:
                gap.end = max(gap.start, ts)
                self._emit(gap)
        if type(record) is Snapshot:
            if code in self._volume_codes:
                self._check_volume(record)
        elif type(record) is Kline:
            self._check_bar(record)
        self.last[key] = ts

    def on_subscribed(self, stream: str) -> None:
        now = self.subscribed_at = self.clock()
        if stream == "trades":
            # the volume baseline must come after the trades subscription
            self.trades_since = now - NS
            self.volume.clear()

    def on_disconnect(self, detail: str | None = None) -> None:
        """The session ended: every subscribed code and stream has a gap from its last frame."""
        now = self.clock()
        self.subscribed_at = None
        for stream, codes in self.streams.items():
            for code in codes:
                key = (code, stream)
                if key not in self.pending:
                    start = self._last(code, stream, now)
                    self.pending[key] = Gap(
                        start, start, code, stream, "disconnect", now, detail=detail
                    )
        self.volume.clear()  # trades missed while away must not read as invisible loss

    def seed(self, last_stored: dict[tuple[str, str], int]) -> None:
        """At start-up: the time the recorder was not running is a disconnect gap."""
        now = self.clock()
        for stream, codes in self.streams.items():
            table = stream.partition(":")[0]
            for code in codes:
                start = last_stored.get((code, table))
                if start is not None:
                    if stream == "trades":
                        self.last_trade[code] = start
                    else:
                        self.last[(code, stream)] = start
                    self.pending[(code, stream)] = Gap(
                        start,
                        start,
                        code,
                        stream,
                        "disconnect",
                        now,
                        detail="the recorder was not running",
                    )

    def check(self) -> None:
        """Periodic: silence while the market is open."""
        if self.subscribed_at is None:
            return
        now = self.clock()
        limit = self.config.silence_after
        for code in self.streams.get("trades", ()):
            if code in self.silent or (code, "trades") in self.pending:
                continue
            seen = max(self.last_trade_seen.get(code, 0), self.subscribed_at)
            if now - seen <= limit * NS:
                continue
            if is_open(market_of(code), now, self.calendar) is not True:
                continue
            start = self._last(code, "trades", now - int(limit * NS))
            gap = Gap(
                start,
                now,
                code,
                "trades",
                "silence",
                now,
                detail=f"no trade for {limit:g} s while the market was open",
            )
            self.silent[code] = gap
            self._emit(gap)

    def _last(self, code: str, stream: str, default: int) -> int:
        """The exchange time of the last record of a code and stream."""
        if stream == "trades":
            return self.last_trade.get(code, default)
        return self.last.get((code, stream), default)

    # --- checks -----------------------------------------------------------------------

    def _check_volume(self, snap: Snapshot) -> None:
        vol = self.volume.get(snap.code)
        if vol is None or snap.volume < vol.last_v:  # first snapshot, or a new trading day
            self.volume[snap.code] = _Volume(base=snap.volume, last_v=snap.volume, clean_ts=snap.ts)
            if vol is None and self.trades_since is not None:
                self._emit(
                    Gap(
                        min(self.trades_since, snap.ts),
                        snap.ts,
                        snap.code,
                        "trades",
                        "startup",
                        self.clock(),
                        record=False,
                    )
                )
            return
        vol.last_v = snap.volume
        excess = (snap.volume - vol.base) - vol.traded
        persistent = min(excess, vol.prev_excess)
        tolerance = self.config.volume_tolerance * (snap.volume - vol.base) + 1e-9 * snap.volume
        if persistent - vol.reported > tolerance:
            self._emit(
                Gap(
                    vol.clean_ts,
                    snap.ts,
                    snap.code,
                    "trades",
                    "volume",
                    self.clock(),
                    missing=persistent - vol.reported,
                    missing_unit="volume",
                    detail="snapshot day volume grew by more than the trades recorded",
                )
            )
            vol.reported = persistent
        if excess <= vol.reported + tolerance:
            vol.clean_ts = snap.ts
        vol.prev_excess = excess

    def _check_bar(self, bar: Kline) -> None:
        key = (bar.code, bar.kt)
        last = self.bars.get(key)
        if last is None or bar.ts > last:
            self.bars[key] = bar.ts
        if last is None or bar.ts <= last:
            return
        market = market_of(bar.code)
        step = bar_interval(bar.kt, market)
        if step is None:
            return
        skipped = [
            t for t in range(last + step, bar.ts, step) if is_open(market, t, self.calendar) is True
        ]
        if skipped:
            self._emit(
                Gap(
                    skipped[0],
                    bar.ts,
                    bar.code,
                    f"klines:{bar.kt}",
                    "kline_skip",
                    self.clock(),
                    missing=len(skipped),
                    missing_unit="bars",
                    detail=f"{len(skipped)} bar(s) missing between two pushes",
                )
            )
