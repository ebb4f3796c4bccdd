"""The ingest stage, fed records directly: no socket, no simulator, the clock injected."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from recorder.batching import Batch, Batcher
from recorder.clock import Clock
from recorder.config import GapsConfig, SubscribeConfig
from recorder.deadletter import DeadLetter
from recorder.exceptions import DecodeError
from recorder.feed import TRADES as FEED_TRADES
from recorder.gaps import Gap, GapCause
from recorder.ingest import Ingest
from recorder.protocol import NS, Depth, Kline, Record, Snapshot, Stream, Trade
from recorder.schema import DEPTH, GAPS, TRADES, gap_of
from recorder.session import KEY_REFUSED

T0 = int(dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC).timestamp()) * NS  # Wed 10:00 ET
CODES = ("US:AAPL", "HK:700")
SUB = SubscribeConfig(
    trades=CODES, depth=CODES, snapshots=("US:AAPL",), klines=("US:AAPL",), kline_types=(1,)
)


class Backfill:
    """Where the stage sends gaps: kept in lists, as the backfiller would queue them."""

    def __init__(self) -> None:
        self.submitted = 0
        self.resolved = 0
        self.queued: list[Gap] = []
        self.held: list[Gap] = []

    def submit(self, gap: Gap) -> None:
        self.submitted += 1
        self.queued.append(gap)

    def hold(self, gap: Gap) -> None:
        self.held.append(gap)


class Stage:
    """An :class:`Ingest` with a real batcher whose batches are kept, on a set clock."""

    def __init__(self, tmp: Path, sub: SubscribeConfig = SUB, backfill: bool = True) -> None:
        self.batches: list[Batch] = []
        self.now = T0
        self.mono = 100.0
        self.ready = 0
        self.batcher = Batcher(self.batches.append, max_rows=1 << 30, max_age=3600.0)
        self.dead_letter = DeadLetter(tmp / "dead-letter.ndjson")
        clock = Clock(wall_ns=lambda: self.now, wall=lambda: self.now / NS, monotonic=self._mono)
        self.ingest = Ingest(
            sub, GapsConfig(), self.batcher, self.dead_letter, clock=clock, on_ready=self._ready
        )
        self.backfill = Backfill()
        if backfill:
            self.ingest.backfill = self.backfill

    def _mono(self) -> float:
        return self.mono

    def _ready(self) -> None:
        self.ready += 1

    def rows(self, table: str) -> list[tuple[object, ...]]:
        self.batcher.cut()
        return [tuple(row) for batch in self.batches for row in batch.tables.get(table, [])]


def _trade(code: str, second: int, price: float = 10.0, size: float = 1.0, side: int = 1) -> Trade:
    ts = T0 + second * NS
    return Trade(code, ts, price, size, side, ts + NS // 10)


def _depth(code: str, second: int, bid: float) -> Depth:
    ts = T0 + second * NS
    return Depth(code, ts, ((bid, 1.0),), ((bid + 0.1, 1.0),), ts)


def _snapshot(code: str, second: int, volume: float) -> Snapshot:
    ts = T0 + second * NS
    return Snapshot(code, ts, 10.0, 9.0, 9.5, 10.5, 9.0, volume, volume * 10, 0, 3, ts)


trades = st.lists(
    st.builds(
        _trade,
        st.sampled_from(CODES),
        st.integers(0, 5),  # late seconds too: inside the counter's window
        st.sampled_from((10.0, 10.5)),
        st.sampled_from((1.0, 2.0)),
        st.sampled_from((1, 2)),
    ),
    max_size=60,
)


@given(trades)
def test_k_counts_the_earlier_identical_trades_of_the_second(sequence: list[Trade]) -> None:
    stage = Stage(Path("/nonexistent"))
    for trade in sequence:
        stage.ingest.on_record(trade)
    seen: Counter[tuple[object, ...]] = Counter()
    for trade in sequence:
        identity = (trade.code, trade.ts, trade.price, trade.size, trade.side)
        assert trade.k == seen[identity]
        seen[identity] += 1
    # every trade reaches the batch with its k, in the order received; the stored
    # identities (code, ts, price, size, side, k) are all distinct
    names = TRADES.names
    stored = [
        tuple(row[names.index(c)] for c in ("code", "ts", "price", "size", "side", "k"))
        for row in stage.rows("trades")
    ]
    assert stored == [(t.code, t.ts, t.price, t.size, t.side, t.k) for t in sequence]
    assert len(set(stored)) == len(stored)
    assert stage.ingest.snapshot().frames[Stream.TRADES] == len(sequence)


records = st.lists(
    st.one_of(
        st.builds(_trade, st.sampled_from((*CODES, "US:NOPE")), st.integers(0, 3)),
        st.builds(_depth, st.sampled_from((*CODES, "SH:600519")), st.integers(0, 3), st.just(1.0)),
        st.builds(_snapshot, st.sampled_from(CODES), st.integers(0, 3), st.just(5.0)),
        st.builds(
            lambda code, kt, s: Kline(code, kt, T0 + s * NS, 1, 2, 3, 0.5, 9, T0 + s * NS),
            st.sampled_from(CODES),
            st.sampled_from((1, 5)),
            st.integers(0, 3),
        ),
    ),
    max_size=40,
)


def _wanted(record: Record) -> bool:
    if isinstance(record, Kline):
        return record.code in SUB.codes(Stream.KLINES) and record.kt in SUB.kline_types
    return record.code in SUB.codes(record.stream)


@given(records)
def test_only_what_is_subscribed_is_recorded_and_the_rest_is_counted(
    sequence: list[Record],
) -> None:
    stage = Stage(Path("/nonexistent"))
    for record in sequence:
        stage.ingest.on_record(record)
    wanted = [r for r in sequence if _wanted(r)]
    figures = stage.ingest.snapshot()
    assert figures.unsubscribed_frames == len(sequence) - len(wanted)
    for stream in Stream:
        assert figures.frames[stream] == sum(r.stream is stream for r in wanted)
    stored = sum(len(stage.rows(t)) for t in ("trades", "depth", "snapshots"))
    assert stored == sum(not isinstance(r, Kline) for r in wanted)
    assert set(figures.last_frame) == {r.code for r in wanted}


def test_n_counts_identical_books_of_the_second_so_a_b_a_keeps_all_three(
    tmp_path: Path,
) -> None:
    stage = Stage(tmp_path)
    books = [_depth("US:AAPL", 0, b) for b in (1.0, 2.0, 1.0, 1.0)] + [_depth("US:AAPL", 1, 1.0)]
    for book in books:
        stage.ingest.on_record(book)
    assert [b.n for b in books] == [0, 0, 1, 2, 0]
    n = DEPTH.names.index("n")
    assert [row[n] for row in stage.rows("depth")] == [0, 0, 1, 2, 0]
    snaps = [_snapshot("US:AAPL", 0, v) for v in (5.0, 5.0, 6.0)]
    for snap in snaps:
        stage.ingest.on_record(snap)
    assert [s.n for s in snaps] == [0, 1, 0]


def test_a_disconnect_gap_is_recorded_while_it_lasts_and_backfilled_once_it_ends(
    tmp_path: Path,
) -> None:
    stage = Stage(tmp_path, SubscribeConfig(trades=("US:AAPL",)))
    ingest = stage.ingest
    ingest.on_connected()
    ingest.on_subscribed(Stream.TRADES, ["US:AAPL"], None)
    ingest.on_record(_trade("US:AAPL", 1))
    stage.now = T0 + 2 * NS
    ingest.on_disconnected("closed: 1011")
    (held,) = stage.backfill.held  # its backfill will come: the counts it merges are kept
    assert held.cause == "disconnect" and held.end is None and not stage.backfill.queued
    assert ingest.snapshot().open_gaps == 1 and ingest.closing() is False
    lasting = ingest.detector.snapshot()
    assert lasting.oldest_open_gap == T0 + 2 * NS and lasting.gaps_ended == 0
    ingest.on_connected()
    ingest.on_record(_trade("US:AAPL", 9))
    (gap,) = stage.backfill.queued
    assert (gap.start, gap.end) == (T0 + 1 * NS, T0 + 9 * NS)
    # the ledger holds the gap while it lasted and again with its end
    rows = [gap_of(row) for row in stage.rows("gaps")]
    assert [(g.cause, g.end) for g in rows] == [("disconnect", None), ("disconnect", gap.end)]
    assert ingest.snapshot().open_gaps == 1  # ended, not backfilled yet
    ended = ingest.detector.snapshot()
    assert ended.oldest_open_gap is None and ended.gaps_ended == 1
    assert ended.last_trade == {"US:AAPL": T0 + 9 * NS + NS // 10}
    stage.backfill.resolved += 1
    assert ingest.snapshot().open_gaps == 0
    assert len(GAPS.names) == len(stage.batches[-1].tables["gaps"][0])


def test_without_a_backfill_gaps_are_only_recorded(tmp_path: Path) -> None:
    stage = Stage(tmp_path, SubscribeConfig(trades=("US:AAPL",)), backfill=False)
    ingest = stage.ingest
    ingest.on_record(_trade("US:AAPL", 1))
    ingest.on_disconnected("closed")
    ingest.on_record(_trade("US:AAPL", 9))
    ingest.submit(Gap(T0, T0 + NS, "US:AAPL", FEED_TRADES, GapCause.ADDED, T0, record=False))
    assert not stage.backfill.queued and not stage.backfill.held
    assert [gap_of(row).end for row in stage.rows("gaps")] == [None, T0 + 9 * NS]


def test_the_session_figures_follow_its_events_on_the_injected_clock(tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    ingest = stage.ingest
    ingest.on_rejected(KEY_REFUSED, "HTTP 401: the service refused the API key")
    before = ingest.session_snapshot()
    assert before.key_refused is not None and before.rejected_requests == 1
    assert not before.connected and before.frames_rate_window == 0.0
    stage.now = T0 + 5 * NS
    ingest.on_connected()
    for second in range(4):
        ingest.on_record(_trade("US:AAPL", second))
    ingest.on_heartbeat(0.25)
    stage.mono += 2.0
    ingest.sample_rate()
    ingest.on_subscribed(Stream.TRADES, list(CODES), None)
    ingest.on_subscribed(Stream.DEPTH, list(CODES), None)
    now = ingest.session_snapshot()
    assert now.connected and now.subscribed and now.key_refused is None
    assert now.connected_since == (T0 + 5 * NS) / NS and now.heartbeat_rtt == 0.25
    assert now.frames_per_second == 2.0 and now.frames_rate_window == 2.0
    assert stage.ready == 1  # ready once, at the first subscription
    ingest.on_disconnected("connection lost")
    after = ingest.session_snapshot()
    assert not after.connected and not after.subscribed and after.connected_since is None
    assert after.reconnects == 1 and after.last_disconnect_reason == "connection lost"


def test_a_frame_that_does_not_decode_is_counted_and_kept(tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    stage.ingest.on_decode_error(DecodeError("not JSON", b"{nope"))
    stage.ingest.on_unknown()
    figures = stage.ingest.snapshot()
    assert figures.decode_errors == 1 and figures.dead_letter_dropped == 0
    stage.dead_letter.close()
    assert b"{nope" in (tmp_path / "dead-letter.ndjson").read_bytes()
