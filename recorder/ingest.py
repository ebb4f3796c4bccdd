"""The ingest stage: the session's record handler, without I/O.

Every record the session decodes comes to :meth:`Ingest.on_record`: a record of a code (or
K-line type) not subscribed is counted and dropped; the others get their identity (``k``
for trades from the :class:`~recorder.identity.TradeCounter`, ``n`` for depth and
snapshots), go to the batcher and feed the gap detector. The detector's gaps go to the
batcher (the ledger) as they are found and change, and once their end is known to the
backfill (any :class:`GapWork`). The session's events (connected, subscribed, heartbeat,
rejected, disconnected) are counted here too. The clock is injected; nothing here touches
a socket or a file, so tests feed records straight in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from .batching import Batcher
from .clock import SYSTEM, Clock
from .config import GapsConfig, SubscribeConfig
from .deadletter import DeadLetter
from .exceptions import DecodeError
from .feed import Feed
from .gaps import Gap, GapDetector
from .identity import Ordinals, TradeCounter
from .markets import Calendar
from .protocol import STREAMS, Depth, Kline, Record, Snapshot, Stream, Trade
from .session import KEY_REFUSED
from .status import RateMeter

log = structlog.get_logger("recorder")


class GapWork(Protocol):
    """Where gaps go to be filled (the :class:`~recorder.backfill.Backfiller`)."""

    submitted: int
    resolved: int

    def submit(self, gap: Gap) -> None: ...
    def hold(self, gap: Gap) -> None: ...


@dataclass
class _Counts:
    """What the hot path and the session's callbacks bump (plain attributes: cheap)."""

    frames: dict[Stream, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    decode_errors: int = 0
    #: frames for a code (or K-line type) not subscribed on their stream, dropped
    unsubscribed: int = 0
    unknown_frames: int = 0
    rejected: int = 0
    reconnects: int = 0
    connected: bool = False
    connected_since: float | None = None
    subscribed: bool = False
    heartbeat_rtt: float | None = None
    #: receive time (wall-clock ns) of the last frame per code
    last_frame: dict[str, int] = field(default_factory=dict)
    last_disconnect_reason: str | None = None
    #: why the service refuses the API key, while it does (no handshake since succeeded)
    key_refused: str | None = None


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """The upstream session's figures (names as in :class:`~recorder.status.Status`)."""

    connected: bool
    connected_since: float | None
    subscribed: bool
    last_disconnect_reason: str | None
    key_refused: str | None
    reconnects: int
    heartbeat_rtt: float | None
    rejected_requests: int
    frames_per_second: float
    frames_rate_window: float


@dataclass(frozen=True, slots=True)
class IngestSnapshot:
    """What came in and where it went: frames per stream, what was refused, the gaps
    open (the detector's own figures are its :class:`~recorder.gaps.DetectorSnapshot`)."""

    frames: dict[Stream, int]
    decode_errors: int
    unsubscribed_frames: int
    dead_letter_dropped: int
    last_frame: dict[str, int]
    batcher_rows: int
    #: gaps still lasting (the detector's), or ended and not backfilled yet
    open_gaps: int
    #: trade identities the counter holds (its window, and seconds held for a backfill)
    trade_identities: int


class Ingest:
    """The session's :class:`~recorder.session.Handler`: identity, batching, gap detection
    and the gaps' way to the ledger and the backfill."""

    def __init__(
        self,
        subscribe: SubscribeConfig,
        gaps: GapsConfig,
        batcher: Batcher,
        dead_letter: DeadLetter,
        calendar: Calendar | None = None,
        *,
        clock: Clock = SYSTEM,
        counter: TradeCounter | None = None,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_ready()`` is called at the first subscription; gaps are backfilled once a
        :attr:`backfill` is set (none: they are only recorded)."""
        self.clock = clock
        self.batcher = batcher
        self.dead_letter = dead_letter
        self.counts = _Counts()
        # Live k needs only the current second (10 s covers late frames and the volume
        # check's detection delay); the seconds a trades gap's backfill will merge are held
        # until it ran. Memory is this window times the distinct trades per second.
        self.counter = counter if counter is not None else TradeCounter(window_s=10.0)
        self.ordinals = Ordinals(window_s=10.0)  # n of depth and snapshot rows
        self.bar_ordinals = Ordinals(window_s=10.0)  # n of K-line pushes, per bar
        self.rate = RateMeter()
        self.detector = GapDetector(
            gaps, subscribe, self._on_gap, calendar, clock.wall_ns, update=self._on_gap_opened
        )
        #: where ended gaps go to be filled; set by the composition root (the backfiller
        #: needs this stage's counter and detector, so it is built after it)
        self.backfill: GapWork | None = None
        self._on_ready = on_ready
        self._ready = False
        self.want(subscribe)

    def want(self, sub: SubscribeConfig) -> None:
        """What is recorded: (code, feed) pairs."""
        self._trade_codes = frozenset(sub.codes(Stream.TRADES))
        self._wanted = frozenset(
            (code, Feed.of(stream, kt))
            for stream in STREAMS
            for kt in (sub.kline_types if stream is Stream.KLINES else (None,))
            for code in sub.codes(stream)
        )

    # --- Handler --------------------------------------------------------------------

    def on_record(self, record: Record) -> None:
        # the hot path: plain counters, receive times from the record, no clock calls
        counts = self.counts
        if type(record) is Trade:
            if record.code not in self._trade_codes:
                counts.unsubscribed += 1  # nothing per code: invented codes cost nothing
                return
        elif (record.code, Feed.of_record(record)) not in self._wanted:
            counts.unsubscribed += 1
            return
        counts.last_frame[record.code] = record.recv_ts
        counts.frames[record.stream] += 1
        if type(record) is Trade:
            self.counter.assign(record)
            self.batcher.add_trade(record)
            self.detector.on_trade(record)
            return
        if type(record) is Depth:
            record.n = self.ordinals.assign(record.code, record.ts, (record.bids, record.asks))
        elif type(record) is Snapshot:
            record.n = self.ordinals.assign(record.code, record.ts, (record.volume, record.last))
        elif type(record) is Kline:
            bar = (record.open, record.close, record.high, record.low, record.volume)
            record.n = self.bar_ordinals.assign(f"{record.code}:{record.kt}", record.ts, bar)
        self.batcher.add(record)
        self.detector.on_record(record)

    def on_decode_error(self, error: DecodeError) -> None:
        counts = self.counts
        counts.decode_errors += 1
        self.dead_letter.keep(error, self.clock.wall_ns())
        if counts.decode_errors <= 10 or counts.decode_errors % 1000 == 0:
            log.warning(
                "decode_error",
                reason=error.reason,
                count=counts.decode_errors,
                dead_letter=str(self.dead_letter.path),
            )

    def on_unknown(self) -> None:
        self.counts.unknown_frames += 1

    def on_connected(self) -> None:
        counts = self.counts
        counts.connected = True
        counts.connected_since = self.clock.wall()
        counts.subscribed = False
        counts.key_refused = None
        # the rate is measured over this connection only, from its first second
        self.rate.reset()
        self.sample_rate()

    def on_subscribed(self, stream: Stream, codes: list[str], kt: int | None) -> None:
        self.counts.subscribed = True
        self.detector.on_subscribed(Feed.of(stream, kt), codes)
        if not self._ready:
            self._ready = True
            self._on_ready()

    def on_rejected(self, what: str, msg: str) -> None:
        self.counts.rejected += 1
        if what == KEY_REFUSED:  # until a handshake succeeds
            self.counts.key_refused = msg
        log.error("request_rejected", what=what, msg=msg)

    def on_heartbeat(self, rtt: float) -> None:
        self.counts.heartbeat_rtt = rtt

    def on_disconnected(self, reason: str) -> None:
        counts = self.counts
        counts.connected = False
        counts.connected_since = None
        counts.subscribed = False
        counts.reconnects += 1
        counts.last_disconnect_reason = reason
        self.detector.on_disconnect(reason)
        self.hold_pending()

    # --- gaps -----------------------------------------------------------------------

    def _on_gap(self, gap: Gap) -> None:
        """A gap's end is known: record it, and backfill it."""
        self.record_gap(gap, "gap")
        if self.backfill is not None:
            self.backfill.submit(gap)

    def _on_gap_opened(self, gap: Gap) -> None:
        """A gap was found while it lasts, or its row changed (its lost volume became known):
        the ledger shows it now."""
        # logged when found, not at a later change
        self.record_gap(gap, "gap_open" if gap.end is None else None)

    def record_gap(self, gap: Gap, event: str | None = None) -> None:
        """The gap's row, as it is now, to the ``gaps`` table (unless it is not recorded);
        ``event``: logged first, if given."""
        if event is not None:
            log_gap(event, gap)
        if gap.record:
            self.batcher.add_gap(gap)

    def submit(self, gap: Gap) -> None:
        """A gap found elsewhere (a restart, a reload) to be backfilled, if gaps are."""
        if self.backfill is not None:
            self.backfill.submit(gap)

    def hold_pending(self) -> None:
        """Disconnect gaps wait for their end; keep what their backfill will need."""
        if self.backfill is not None:
            for gap in self.detector.pending.values():
                self.backfill.hold(gap)

    def closing(self) -> bool:
        """Gaps of a disconnect still wait for their stream's resubscription."""
        return bool(self.detector.pending) and self.counts.connected

    # --- figures --------------------------------------------------------------------

    def sample_rate(self) -> None:
        """One sample of the frame count for the rate (every second)."""
        self.rate.sample(self.clock.monotonic(), sum(self.counts.frames.values()))

    def session_snapshot(self) -> SessionSnapshot:
        c = self.counts
        return SessionSnapshot(
            connected=c.connected,
            connected_since=c.connected_since,
            subscribed=c.subscribed,
            last_disconnect_reason=c.last_disconnect_reason,
            key_refused=c.key_refused,
            reconnects=c.reconnects,
            heartbeat_rtt=c.heartbeat_rtt,
            rejected_requests=c.rejected,
            frames_per_second=self.rate.rate(),
            frames_rate_window=self.rate.window(),
        )

    def snapshot(self) -> IngestSnapshot:
        c, bf = self.counts, self.backfill
        lasting = len(self.detector.pending) + len(self.detector.silent)
        return IngestSnapshot(
            frames=dict(c.frames),
            decode_errors=c.decode_errors,
            unsubscribed_frames=c.unsubscribed,
            dead_letter_dropped=self.dead_letter.not_kept,
            last_frame=dict(c.last_frame),
            batcher_rows=len(self.batcher),
            open_gaps=lasting + (bf.submitted - bf.resolved if bf is not None else 0),
            trade_identities=len(self.counter),
        )


def log_gap(event: str, gap: Gap) -> None:
    """A gap the ledger records, in the log too."""
    if gap.record:
        log.warning(
            event,
            code=gap.code,
            stream=gap.feed.key,
            cause=gap.cause.value,
            start=gap.start,
            end=gap.end,
            status=gap.status.value,
        )
