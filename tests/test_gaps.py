"""The gap detector, fed events directly (it is pure), and market hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.config import GapsConfig, SubscribeConfig
from recorder.feed import TRADES
from recorder.gaps import CLOCK_SKEW, MAX_SCANNED_BARS, Gap, GapCause, GapDetector, GapStatus
from recorder.markets import Calendar, is_open
from recorder.protocol import NS, Depth, Kline, Snapshot, Trade

T0 = int(dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC).timestamp()) * NS  # Wed 10:00 ET


def _detector(
    gaps: GapsConfig | None = None,
    subscribe: SubscribeConfig | None = None,
    clock: Callable[[], int] = lambda: T0,
    updated: list[Gap] | None = None,
) -> tuple[GapDetector, list[Gap]]:
    emitted: list[Gap] = []
    subscribe = subscribe or SubscribeConfig(
        trades=("US:AAPL", "CF:BTCUSDT"), snapshots=("US:AAPL",), depth=("US:AAPL",)
    )
    update = updated.append if updated is not None else lambda gap: None
    detector = GapDetector(
        gaps or GapsConfig(), subscribe, emitted.append, clock=clock, update=update
    )
    return detector, emitted


def _trade(code: str, s: int, size: float = 100.0) -> Trade:
    return Trade(code, T0 + s * NS, 10.0, size, 1, T0 + s * NS)


def _snap(code: str, s: int, volume: float) -> Snapshot:
    return Snapshot(code, T0 + s * NS, 10.0, 9.0, 9.5, 10.5, 9.0, volume, volume * 10, 0, 3, 0)


def test_a_disconnect_is_a_gap_for_every_code_and_stream() -> None:
    det, out = _detector()
    det.on_record(_trade("US:AAPL", 1))
    det.on_record(_trade("CF:BTCUSDT", 2))
    det.on_record(Depth("US:AAPL", T0 + 3 * NS, (), (), 0))
    det.on_disconnect("closed: 1011")
    assert out == [] and len(det.pending) == 4  # trades x2, snapshots, depth
    det.on_record(_trade("US:AAPL", 9))
    det.on_record(_trade("US:AAPL", 9))
    (gap,) = out
    assert (gap.code, gap.feed.key, gap.cause, gap.start, gap.end) == (
        "US:AAPL",
        "trades",
        "disconnect",
        T0 + 1 * NS,
        T0 + 9 * NS,
    )
    assert gap.detail == "closed: 1011" and gap.status == "open"
    # a code never seen before the disconnect starts its gap at the disconnect
    det.on_record(_snap("US:AAPL", 10, 500))
    assert out[-1].feed.key == "snapshots" and out[-1].start == T0


def test_two_disconnects_before_data_keep_the_first_start() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",)))
    det.on_record(_trade("US:AAPL", 1))
    det.on_disconnect()
    det.on_disconnect()
    det.on_record(_trade("US:AAPL", 20))
    assert [(g.start, g.end) for g in out] == [(T0 + NS, T0 + 20 * NS)]


def test_restart_gap_from_the_last_stored_row() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",)))
    det.seed({("US:AAPL", "trades"): T0 - 600 * NS})
    det.on_record(_trade("US:AAPL", 5))
    (gap,) = out
    assert gap.start == T0 - 600 * NS
    assert (
        gap.detail == "the recorder was not running; no snapshots subscribed: lost volume unknown"
    )


def test_volume_that_trades_do_not_explain_is_a_gap() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_snap("US:AAPL", 0, 1000))
    det.on_record(_trade("US:AAPL", 1, 100))
    det.on_record(_snap("US:AAPL", 1, 1100))  # explained
    # a 300-share trade never arrives
    det.on_record(_trade("US:AAPL", 2, 50))
    det.on_record(_snap("US:AAPL", 2, 1450))
    assert out == []  # one snapshot alone could be a frame that overtook its trade
    det.on_record(_snap("US:AAPL", 3, 1450))
    (gap,) = out
    assert (gap.cause, gap.missing, gap.missing_unit) == ("volume", 300.0, "volume")
    assert (gap.start, gap.end) == (T0 + 1 * NS, T0 + 3 * NS)
    det.on_record(_snap("US:AAPL", 4, 1450))
    assert len(out) == 1  # reported once


def test_a_snapshot_that_overtakes_its_trade_is_not_a_gap() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_snap("US:AAPL", 0, 1000))
    det.on_record(_snap("US:AAPL", 1, 1200))
    det.on_record(_trade("US:AAPL", 1, 200))
    det.on_record(_snap("US:AAPL", 2, 1200))
    assert out == []


def test_volume_tolerance_and_new_day() -> None:
    det, out = _detector(
        GapsConfig(volume_tolerance=0.1),
        SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)),
    )
    det.on_record(_snap("US:AAPL", 0, 1000))
    det.on_record(_snap("US:AAPL", 1, 1050))
    det.on_record(_snap("US:AAPL", 2, 1050))  # 50 unexplained of 50: beyond 10 %...
    assert len(out) == 1
    det.on_record(_snap("US:AAPL", 3, 10))  # a new trading day resets the baseline
    det.on_record(_snap("US:AAPL", 4, 10))
    assert len(out) == 1


def test_skipped_kline_bars_while_open_are_a_gap() -> None:
    det, out = _detector(
        subscribe=SubscribeConfig(klines=("CF:BTCUSDT", "HK:700")), clock=lambda: T0 + 3600 * NS
    )

    def bar(code: str, m: int) -> Kline:
        return Kline(code, 1, T0 + m * 60 * NS, 1, 1, 1, 1, 1, 0)

    det.on_record(bar("CF:BTCUSDT", 0))
    det.on_record(bar("CF:BTCUSDT", 0))  # the same bar again is an update, not a skip
    det.on_record(bar("CF:BTCUSDT", 1))
    det.on_record(bar("CF:BTCUSDT", 4))
    (gap,) = out
    assert (gap.feed.key, gap.cause, gap.missing, gap.start) == (
        "klines:1",
        "kline_skip",
        2,
        T0 + 2 * 60 * NS,
    )
    # HK at 23:00 local: closed, so skipped minutes are not a gap
    det.on_record(bar("HK:700", 0))
    det.on_record(bar("HK:700", 30))
    assert len(out) == 1


def test_silence_while_open_is_an_open_gap_that_ends_with_the_next_trade() -> None:
    now = [T0]
    opened: list[Gap] = []
    det, out = _detector(
        GapsConfig(silence_after=5),
        SubscribeConfig(trades=("CF:BTCUSDT", "HK:700")),
        clock=lambda: now[0],
        updated=opened,
    )
    det.on_subscribed(TRADES)
    det.on_record(_trade("CF:BTCUSDT", 1))  # received at T0 + 1 s
    now[0] = T0 + 6 * NS
    det.check()
    assert opened == []  # 5 s without a trade is not more than silence_after
    now[0] += 1
    det.check()
    (gap,) = opened  # HK is closed at this hour (the clock says 23:00 in Hong Kong)
    assert (gap.code, gap.cause, gap.start, gap.end) == ("CF:BTCUSDT", "silence", T0 + NS, None)
    det.check()
    assert len(opened) == 1 and out == []
    det.on_record(_trade("CF:BTCUSDT", 30))
    assert out == [gap] and gap.end == T0 + 30 * NS


def _ns(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=dt.UTC).timestamp()) * NS


def test_market_hours() -> None:
    assert is_open("CF", _ns(2026, 11, 29, 3, 0)) is True  # crypto on a Sunday night
    assert is_open("HK", _ns(2026, 11, 25, 2, 0)) is True  # 10:00 HKT Wednesday
    assert is_open("HK", _ns(2026, 11, 25, 4, 30)) is False  # 12:30 HKT lunch
    assert is_open("SH", _ns(2026, 11, 25, 6, 0)) is True  # 14:00 CST
    assert is_open("SH", _ns(2026, 11, 25, 7, 30)) is False  # 15:30 CST
    assert is_open("US", _ns(2026, 11, 25, 15, 0)) is True  # 10:00 EST
    assert is_open("US", _ns(2026, 11, 28, 15, 0)) is False  # Saturday
    assert is_open("US", _ns(2026, 11, 25, 8, 55)) is False  # 03:55 EST, between sessions
    assert is_open("IX", _ns(2026, 11, 25, 15, 0)) is None
    assert is_open("FX", _ns(2026, 11, 28, 20, 0)) is False  # Sunday 04:00 HKT
    assert is_open("FX", _ns(2026, 11, 25, 20, 0)) is True
    holiday = Calendar()
    holiday.load({"HK": ["20261124,F", "20261126,H"]})
    assert is_open("HK", _ns(2026, 11, 25, 2, 0), holiday) is False
    assert holiday.known("HK") and not holiday.known("US")


def test_each_session_sweeps_the_span_before_the_first_snapshot() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_subscribed(TRADES)
    det.on_record(_trade("US:AAPL", 1))
    det.on_record(_snap("US:AAPL", 2, 1000))
    (sweep,) = out
    assert (sweep.cause, sweep.record, sweep.start, sweep.end) == (
        "startup",
        False,
        T0 - NS,
        T0 + 2 * NS,
    )
    det.on_record(_snap("US:AAPL", 3, 1000))
    assert len(out) == 1  # once per session


def test_a_disconnect_is_in_the_ledger_at_once_and_ends_with_the_subscription() -> None:
    now = [T0]
    opened: list[Gap] = []
    det, out = _detector(
        subscribe=SubscribeConfig(trades=("US:AAPL", "HK:700"), snapshots=("US:AAPL",)),
        clock=lambda: now[0],
        updated=opened,
    )
    det.on_record(_trade("US:AAPL", -5))
    det.on_disconnect("closed: 1006")
    # written as open, with no end, before any frame comes back
    assert sorted((g.code, g.feed.key, g.end, g.status) for g in opened) == [
        ("HK:700", "trades", None, "open"),
        ("US:AAPL", "snapshots", None, "open"),
        ("US:AAPL", "trades", None, "open"),
    ]
    assert out == [] and len(det.open_gaps()) == 3
    now[0] = T0 + 30 * NS
    det.on_subscribed(TRADES)  # a quiet market: no trade needed to end the hole
    assert sorted((g.code, g.start, g.end) for g in out) == [
        ("HK:700", T0, T0 + 30 * NS),
        ("US:AAPL", T0 - 5 * NS, T0 + 30 * NS),
    ]
    assert [g.feed.key for g in det.open_gaps()] == ["snapshots"]
    det.on_record(_trade("US:AAPL", 31))
    assert len(out) == 2  # already ended


def test_a_gap_left_open_by_the_last_run_stays_the_gap_of_its_code() -> None:
    left = Gap(T0 - 100 * NS, None, "US:AAPL", TRADES, GapCause.DISCONNECT, T0 - 99 * NS)
    opened: list[Gap] = []
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",)), updated=opened)
    det.seed({("US:AAPL", "trades"): T0 - 100 * NS}, [left])
    assert det.open_gaps() == [left] and opened == []  # no second row for the same hole
    det.on_subscribed(TRADES)
    assert out == [left] and left.end == T0


def test_lost_volume_is_the_snapshot_volume_the_trades_do_not_explain() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_trade("US:AAPL", 1, 100))
    det.on_record(_snap("US:AAPL", 1, 1000))  # the side before the hole
    det.on_record(_trade("US:AAPL", 2, 40))  # recorded after that snapshot
    det.on_disconnect()
    det.on_subscribed(TRADES)
    (gap,) = out
    assert gap.lost_volume is None  # the side after is not known yet
    det.on_record(_trade("US:AAPL", 9, 60))  # live again
    det.on_record(_snap("US:AAPL", 9, 1500))  # 500 traded since: 100 recorded, 400 lost
    assert gap.unexplained == 400.0 and _lost(gap) == (400.0, None)
    gap.backfilled_volume = 250.0  # what the backfill recovered inside the hole
    gap.settle_volume()
    assert _lost(gap) == (150.0, None)
    gap.status = GapStatus.FILLED
    gap.settle_volume()
    assert _lost(gap) == (0.0, 0)  # exact once filled


def test_lost_volume_across_a_restart_counts_what_the_store_holds() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    # stored: a snapshot at 1000 and 70 shares of trades after it
    det.seed({("US:AAPL", "trades"): T0}, anchors={"US:AAPL": (1000.0, T0, -70.0)})
    det.on_subscribed(TRADES)
    det.on_record(_trade("US:AAPL", 5, 30))
    det.on_record(_snap("US:AAPL", 5, 1300))
    (gap,) = [g for g in out if g.feed == TRADES and g.cause == "disconnect"]
    assert gap.lost_volume == 200.0  # 300 traded, 70 stored before and 30 live after


@pytest.mark.parametrize(
    "after, why",
    [
        (2, "the day volume went down across the hole: lost volume unknown"),  # restarted
        (9 * 3600 + 2, "a new trading day began: lost volume unknown"),  # past 00:00 UTC
    ],
)
def test_a_day_volume_that_starts_again_says_why_the_volume_is_unknown(
    after: int, why: str
) -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_snap("US:AAPL", 1, 1000))
    det.on_disconnect()
    det.on_subscribed(TRADES)
    det.on_record(_snap("US:AAPL", after, 10))  # the day volume started again
    (gap,) = [g for g in out if g.feed == TRADES and g.cause == "disconnect"]
    assert gap.lost_volume is None and gap.detail == why


def test_a_filled_gap_never_says_its_volume_is_unknown() -> None:
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_snap("US:AAPL", 1, 1000))
    det.on_disconnect()
    det.on_subscribed(TRADES)
    det.on_record(_snap("US:AAPL", 2, 10))
    (gap,) = [g for g in out if g.feed == TRADES and g.cause == "disconnect"]
    gap.status = GapStatus.FILLED  # the backfill proved every trade of the span stored
    gap.settle_volume()
    assert (gap.lost_volume, gap.detail) == (0.0, None)


def _lost(gap: Gap) -> tuple[float | None, int | None]:
    return gap.lost_volume, gap.lost_trades


def _bar(code: str, ts: int) -> Kline:
    return Kline(code, 1, ts, 1, 1, 1, 1, 1, 0)


def test_a_bar_far_ahead_of_the_clock_neither_hangs_nor_hides_later_skips() -> None:
    det, out = _detector(subscribe=SubscribeConfig(klines=("CF:BTCUSDT",)))
    det.on_record(_bar("CF:BTCUSDT", T0 - 60 * NS))
    det.on_record(_bar("CF:BTCUSDT", 1741960243000 * NS))  # ts in ms: year 57000
    assert out == []
    det.on_record(_bar("CF:BTCUSDT", T0 + 120 * NS))  # two bars skipped since T0 - 60 s
    (gap,) = out
    assert (gap.start, gap.end, gap.missing) == (T0, T0 + 120 * NS, 2)


def test_a_skip_too_long_to_count_is_one_gap_of_unknown_bars() -> None:
    det, out = _detector(subscribe=SubscribeConfig(klines=("CF:BTCUSDT",)))
    year_ago = T0 - 365 * 86400 * NS
    det.on_record(_bar("CF:BTCUSDT", year_ago))
    det.on_record(_bar("CF:BTCUSDT", T0))
    (gap,) = out
    assert (gap.start, gap.end, gap.cause, gap.missing) == (
        year_ago + 60 * NS,
        T0,
        "kline_skip",
        None,
    )
    assert gap.detail is not None and str(MAX_SCANNED_BARS) in gap.detail


@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=8))
def test_any_bar_times_give_gaps_inside_the_pushed_range(times: list[int]) -> None:
    det, out = _detector(subscribe=SubscribeConfig(klines=("CF:BTCUSDT",)))
    for ts in times:
        det.on_record(_bar("CF:BTCUSDT", ts))
    believed = [t for t in times if t <= T0 + CLOCK_SKEW]
    for gap in out:
        assert gap.end is not None and min(believed) < gap.start <= gap.end <= max(believed)


def test_a_calendar_of_another_year_leaves_silence_detection_on() -> None:
    # T0 is Wed 2026-11-25 10:00 ET; the calendar lists only days of 2025
    calendar = Calendar()
    assert calendar.load({"US": ["20250102", "20250110,H"]}) == ["US"]
    assert is_open("US", T0, calendar) is True and calendar.uncovered == {"US"}
    inside = int(dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC).timestamp()) * NS
    not_listed = inside + 86400 * NS * 5  # 2025-01-07: inside the span, not a listed day
    assert is_open("US", inside, calendar) is True
    assert is_open("US", not_listed, calendar) is False
    now = [T0]
    opened: list[Gap] = []
    det = GapDetector(
        GapsConfig(silence_after=5),
        SubscribeConfig(trades=("US:AAPL",)),
        lambda gap: None,
        calendar,
        clock=lambda: now[0],
        update=opened.append,
    )
    det.on_subscribed(TRADES)
    now[0] += 6 * NS
    det.check()
    assert [(g.code, g.cause) for g in opened] == [("US:AAPL", "silence")]


def test_two_holes_from_the_same_last_trade_share_a_key_and_each_gets_its_volume() -> None:
    # no trade between two disconnects: the second hole starts where the first did, so the
    # two gaps have one key (one row); each keeps its own before-side until the snapshot
    det, out = _detector(subscribe=SubscribeConfig(trades=("US:AAPL",), snapshots=("US:AAPL",)))
    det.on_record(_trade("US:AAPL", 1, 100))
    det.on_record(_snap("US:AAPL", 1, 1000))
    det.on_disconnect()
    det.on_subscribed(TRADES)
    det.on_disconnect()
    det.on_subscribed(TRADES)
    first, second = [g for g in out if g.feed == TRADES]
    assert first is not second and first.key == second.key
    assert first.lost_volume is None and second.lost_volume is None  # waiting for a snapshot
    det.on_record(_snap("US:AAPL", 9, 1300))
    assert first.lost_volume == second.lost_volume == 300.0
