"""Gaps and backfill under the simulator's faults, checked against its ground truth."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    KEY,
    make_config,
    rows,
    run_recorder,
    start_recorder,
    wait_for,
    write_config,
)
from hostile import Answer, Hostile
from simulated import SimulatorThread
from truth import check_trades, trade_key

from recorder.backfill import Backfiller
from recorder.config import Secret, UpstreamConfig
from recorder.daemon import Recorder
from recorder.feed import TRADES, Feed
from recorder.gaps import Gap, GapCause
from recorder.identity import TradeCounter
from recorder.protocol import NS, Record, Stream
from recorder.rest import RestClient
from recorder.sim import Faults

SimFactory = Callable[..., SimulatorThread]
DROP_SECONDS = float(os.environ.get("QOS_DROP_SECONDS", "60"))


def _settled(recorder: Recorder) -> bool:
    """No gap waiting for its end or its backfill, and the batcher handed everything over."""
    now = recorder.status()
    # open_gaps: gaps still lasting (a disconnect's, a silence's) or not backfilled yet
    return now.subscribed and now.open_gaps == 0 and now.gaps_submitted > 0


def _window(sent: list[dict[str, Any]], db: Path) -> tuple[int, int]:
    """Whole seconds from just after the first pushed trade to just before the newest live
    trade stored: every second in between was received whole (TCP keeps order), while
    trades produced after the recorder stopped reading are in the ground truth only."""
    (newest,) = rows(db, "SELECT max(ts) FROM trades WHERE source = 'live'")[0]
    return sent[0]["ts"] + 1, newest // NS - 1


def _truth_in(sim: SimulatorThread, codes: set[str], lo: int, hi: int) -> list[dict[str, Any]]:
    return [f for f in sim.call(lambda: sim.sim.truth_frames("T", codes)) if lo <= f["ts"] <= hi]


def _stored_in(db: Path, lo: int, hi: int) -> list[tuple[Any, ...]]:
    return rows(
        db,
        "SELECT code, ts, price, size, side, k FROM trades WHERE ts BETWEEN ? AND ?",
        lo * NS,
        hi * NS,
    )


def test_connection_dropped_every_few_seconds_loses_nothing(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # every 8 s: 7.5 reconnects a minute, each one /trade request, plus the calendar, stay
    # within the plan's 10 requests a minute (at 6 s the queue grows past /trade's window)
    sim = make_sim(Faults(close_every=8.0), trades_per_second=3, seed=12)
    codes = list(sim.sim.codes)
    config = make_config(sim, tmp_path, codes, subscribe={"depth": [], "snapshots": []})

    def stop_faults(recorder: Recorder, elapsed: float) -> None:
        if elapsed > DROP_SECONDS:
            sim.call(lambda: setattr(sim.sim.faults, "close_every", None))

    recorder = run_recorder(
        config,
        during=stop_faults,
        timeout=DROP_SECONDS + 60,
        until=lambda r: not sim.sim.faults.close_every and _settled(r),
    )
    assert recorder.status().reconnects >= int(DROP_SECONDS / 8) - 1
    db = tmp_path / "ticks.sqlite"
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    lo, hi = _window(sent, db)
    statuses = rows(db, "SELECT code, status, missing FROM gaps WHERE stream = 'trades'")
    assert {s for _, s, _ in statuses} == {"filled"}, statuses  # every outage < 50 trades
    check_trades(_stored_in(db, lo, hi), _truth_in(sim, set(codes), lo, hi))
    # every drop has a row in gaps, for every code
    for code in codes:
        gaps = rows(db, "SELECT status FROM gaps WHERE code = ? AND cause = 'disconnect'", code)
        assert len(gaps) == recorder.status().reconnects, code
        assert {s for (s,) in gaps} == {"filled"}
    (backfilled,) = rows(db, "SELECT count(*) FROM trades WHERE source = 'backfill'")[0]
    assert backfilled > 0  # the live stream alone missed trades that backfill recovered


def test_silently_dropped_frames_are_flagged_and_backfilled(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(Faults(drop_rate=0.05), trades_per_second=4, seed=13)
    codes = ["US:AAPL", "HK:700", "CF:BTCUSDT"]
    config = make_config(sim, tmp_path, codes, subscribe={"depth": []})

    def stop_drops(recorder: Recorder, elapsed: float) -> None:
        if elapsed > 20:
            sim.call(lambda: setattr(sim.sim.faults, "drop_rate", 0.0))

    recorder = run_recorder(
        config,
        during=stop_drops,
        timeout=60,
        until=lambda r: (
            not sim.sim.faults.drop_rate
            and _settled(r)
            and r.status().gaps_ended > 0
            and len(sim.sim.sent) > len(sim.sim.dropped) + 400
        ),
    )
    db = tmp_path / "ticks.sqlite"
    dropped = [f for _, f in sim.call(lambda: list(sim.sim.dropped)) if f["tp"] == "T"]
    assert dropped
    volume_gaps = rows(db, "SELECT code, status, backfilled FROM gaps WHERE cause = 'volume'")
    assert {c for c, _, _ in volume_gaps} == {f["c"] for f in dropped}
    # every dropped trade is stored now, and nothing twice
    stored = Counter(
        tuple(r[:5]) for r in rows(db, "SELECT code, ts, price, size, side FROM trades")
    )
    lost = Counter(trade_key(f) for f in dropped) - stored
    assert not lost, lost
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    lo, hi = _window(sent, db)
    check_trades(_stored_in(db, lo, hi), _truth_in(sim, set(codes), lo, hi))
    assert recorder.status().backfilled_rows >= len(dropped)


def test_http_429_and_500_are_retried_within_the_limit(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(Faults(close_every=3.0), trades_per_second=3)
    config = make_config(sim, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})
    failures = iter([429, 500])

    def inject(recorder: Recorder, elapsed: float) -> None:
        if recorder.status().reconnects >= 1 and sim.sim.faults.close_every:
            sim.call(lambda: setattr(sim.sim.faults, "close_every", None))
        if recorder.status().reconnects >= 1 and sim.sim.faults.http_fail_count in (None, 0):
            status = next(failures, None)
            if status is not None:
                sim.call(lambda: setattr(sim.sim.faults, "http_status", status))
                sim.call(lambda: setattr(sim.sim.faults, "http_fail_count", 2))

    recorder = run_recorder(
        config,
        during=inject,
        timeout=60,
        until=lambda r: r.status().rest_retries >= 4 and _settled(r),
    )
    assert recorder.status().rest_retries >= 4 and recorder.status().backfill_failed_rounds == 0
    db = tmp_path / "ticks.sqlite"
    assert rows(db, "SELECT status FROM gaps WHERE cause = 'disconnect'") == [("filled",)]
    assert not any("limit exceeded" in m for _, _, m in sim.call(lambda: sim.sim.refusals))


def _count(db: Path, sql: str) -> int:
    """A count, or 0 while the recorder has not created the file and its tables yet."""
    try:
        return int(rows(db, sql)[0][0])
    except sqlite3.OperationalError:
        return 0


def test_kill_9_then_restart_recovers_or_accounts_for_everything(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=5, seed=14)
    codes = ", ".join(f'"{c}"' for c in sim.sim.codes)
    config = write_config(
        tmp_path / "recorder.toml",
        sim,
        f"""backoff_initial = 0.2
[subscribe]
trades = [{codes}]
snapshots = [{codes}]
[sink]
sqlite_path = "ticks.sqlite"
""",
    )
    db = tmp_path / "ticks.sqlite"
    first = start_recorder(config)
    try:
        assert wait_for(lambda: _count(db, "SELECT count(*) FROM trades") > 100, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert wait_for(lambda: sim.call(lambda: not sim.sim.conns), timeout=10)
        second = start_recorder(config)
        try:
            closed = (
                "SELECT count(*) FROM gaps WHERE cause = 'disconnect' "
                "AND stream = 'trades' AND status != 'open'"
            )
            assert wait_for(lambda: _count(db, closed) == len(sim.sim.codes), timeout=40)
            second.send_signal(signal.SIGTERM)
            out, _ = second.communicate(timeout=20)
        finally:
            second.kill()
    finally:
        first.kill()
    assert second.returncode == 0
    events = [orjson.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "gap" and e["cause"] == "disconnect" for e in events)
    gaps = rows(db, "SELECT code, status, detail FROM gaps WHERE stream = 'trades'")
    assert len(gaps) == len(sim.sim.codes)
    assert all(d == "the recorder was not running" for _, _, d in gaps)
    (backfilled,) = rows(db, "SELECT count(*) FROM trades WHERE source = 'backfill'")[0]
    assert backfilled > 0  # what happened while the process was down came back
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    lo, hi = _window(sent, db)
    truth = _truth_in(sim, set(sim.sim.codes), lo, hi)
    stored = _stored_in(db, lo, hi)
    if all(s == "filled" for _, s, _ in gaps):
        check_trades(stored, truth)  # everything lost with the process was recovered
    else:  # what is missing lies inside a gap marked partial, with its span
        missing = Counter(trade_key(f) for f in truth) - Counter(tuple(r[:5]) for r in stored)
        partial = {c for c, s, _ in gaps if s == "partial"}
        assert all(key[0] in partial for key in missing)


def test_gaps_left_open_at_stop_are_backfilled_at_the_next_start(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(Faults(close_every=2.0, http_status=500), trades_per_second=3)
    # The failed attempts of the first run count against the budget the second run inherits
    # (the simulator does not count its injected 500s): a larger budget keeps this short.
    config = make_config(
        sim,
        tmp_path,
        ["US:AAPL"],
        subscribe={"depth": [], "snapshots": []},
        upstream={"http_requests_per_minute": 30},
    )
    run_recorder(
        config,
        timeout=30,
        until=lambda r: r.status().reconnects >= 1 and r.status().backfill_failed_rounds >= 1,
    )
    db = tmp_path / "ticks.sqlite"
    left_open = rows(db, "SELECT ts FROM gaps WHERE status = 'open'")
    assert left_open  # the REST API was down, so their backfill could not run
    sim.call(lambda: setattr(sim.sim.faults, "close_every", None))
    sim.call(lambda: setattr(sim.sim.faults, "http_status", None))
    second = run_recorder(config, timeout=30, until=_settled)
    assert second.status().gaps_resolved >= len(left_open)
    still = rows(
        db,
        f"SELECT ts FROM gaps WHERE status = 'open' AND ts IN "
        f"({', '.join(str(ts) for (ts,) in left_open)})",
    )
    assert still == []


OUTAGE_SECONDS = float(os.environ.get("QOS_OUTAGE_SECONDS", "30"))


def test_a_long_outage_is_in_the_ledger_while_it_lasts_and_every_loss_is_inside_it(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # 20 trades/s per code: an outage of 30 s loses far more than /trade's window of 50
    sim = make_sim(trades_per_second=20, seed=17)
    codes = ["US:AAPL", "HK:700", "CF:BTCUSDT"]
    config = make_config(sim, tmp_path, codes)
    db = tmp_path / "ticks.sqlite"
    outage: list[float] = []  # when it began (elapsed seconds)
    during: list[set[tuple[str, str]]] = []  # open gap rows seen while it lasted

    def fault(recorder: Recorder, elapsed: float) -> None:
        if not outage and recorder.status().batches_written > 20:
            outage.append(elapsed)
            sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", True))
            sim.run(sim.sim.disconnect_all("outage"))
        elif len(outage) == 1 and elapsed > outage[0] + OUTAGE_SECONDS / 2 and not during:
            during.append(
                {
                    (code, stream)
                    for code, stream in rows(
                        db, "SELECT code, stream FROM gaps WHERE status = 'open' AND end_ts IS NULL"
                    )
                }
            )
        elif len(outage) == 1 and elapsed > outage[0] + OUTAGE_SECONDS:
            outage.append(elapsed)
            sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", False))

    recorder = run_recorder(
        config,
        during=fault,
        timeout=OUTAGE_SECONDS + 60,
        until=lambda r: (
            len(outage) == 2 and _settled(r) and r.status().frames[Stream.SNAPSHOTS] > 0
        ),
    )
    assert len(outage) == 2 and recorder.status().reconnects >= 1
    # while the outage lasted, every code and stream already had its open row
    assert during == [{(c, s) for c in codes for s in ("trades", "depth", "snapshots")}]
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    lo, hi = _window(sent, db)
    truth = Counter(trade_key(f) for f in _truth_in(sim, set(codes), lo, hi))
    stored = Counter(tuple(r[:5]) for r in _stored_in(db, lo, hi))
    lost = truth - stored
    assert stored - truth == Counter()  # nothing invented, nothing twice
    gaps = rows(
        db,
        "SELECT code, ts, end_ts, status, lost_volume FROM gaps "
        "WHERE stream = 'trades' AND cause = 'disconnect'",
    )
    assert sum(lost.values()) > 100  # the outage did lose trades beyond /trade's window
    for code, ts, *_ in lost:
        assert any(
            c == code and start <= ts <= end and status != "filled"
            for c, start, end, status, _ in gaps
        ), (code, ts)
    for code in codes:
        (gap,) = [g for g in gaps if g[0] == code]
        actual = sum(k[3] * n for k, n in lost.items() if k[0] == code)
        assert gap[3] == "partial" and gap[4] is not None
        assert abs(gap[4] - actual) <= 0.1 * actual, (code, gap[4], actual)


def test_a_full_window_that_starts_in_the_gaps_first_second_is_partial(
    make_sim: SimFactory,
) -> None:
    # /trade's latest 50 reach back into a gap's first second: that second's earlier trades
    # may be cut off, so the gap is partial; a gap starting after that second is filled
    sim = make_sim(trades_per_second=20, seed=19)
    assert wait_for(
        lambda: len(sim.call(lambda: sim.sim.market.recent_trades("US:AAPL", 50))) == 50
    )
    sim.call(lambda: setattr(sim.sim.market, "trades_per_second", 0.0))  # hold the window still
    oldest = sim.call(lambda: sim.sim.market.recent_trades("US:AAPL", 50))[0]["ts"] * NS
    up = UpstreamConfig(http_url=sim.http_url, backoff_initial=0.05)
    written: list[Record] = []

    async def backfill(start: int) -> Gap:
        gap = Gap(start, time.time_ns(), "US:AAPL", TRADES, GapCause.DISCONNECT, start)
        async with RestClient(up, Secret(KEY)) as rest:
            await Backfiller(rest, TradeCounter(), written.append, lambda g: None).round([gap])
        return gap

    at_oldest = asyncio.run(backfill(oldest))
    after_oldest = asyncio.run(backfill(oldest + NS))
    assert at_oldest.status == "partial" and after_oldest.status == "filled"
    assert written  # both merged what the window had


def _trade(code: str, ts: int, price: str = "1.5") -> dict[str, Any]:
    return {"c": code, "p": price, "v": "10", "ts": ts, "d": 1}


def test_trades_of_codes_not_asked_for_are_ignored_and_prove_nothing() -> None:
    now = int(time.time())
    written: list[Record] = []
    with Hostile() as up:
        # /trade answers only another code's trades, all inside the gap's span
        up.http["/trade"] = Answer.ok([_trade("HK:700", now - 5 + i % 5) for i in range(20)])

        async def backfill() -> tuple[Gap, Backfiller]:
            gap = Gap((now - 10) * NS, now * NS, "US:AAPL", TRADES, GapCause.DISCONNECT, now * NS)
            up_config = UpstreamConfig(http_url=up.http_url, backoff_initial=0.05)
            async with RestClient(up_config, Secret(KEY)) as rest:
                backfiller = Backfiller(rest, TradeCounter(), written.append, lambda g: None)
                await backfiller.round([gap])
            return gap, backfiller

        gap, backfiller = asyncio.run(backfill())
    assert written == []  # nothing of HK:700 was asked for
    assert backfiller.unasked == 20
    assert gap.status != "filled" and gap.lost_trades is None
    assert gap.detail is not None and "US:AAPL" in gap.detail


@pytest.mark.parametrize(
    ("stream", "path", "answer", "why"),
    [
        ("trades", "/trade", Answer.json({"msg": "invalid code: US:AAPL"}), "invalid code"),
        ("snapshots", "/snapshot", Answer.ok(5), "REST data for S is not a list"),
        ("trades", "/trade", Answer.ok({"US:AAPL": []}), "REST data for T is not a list"),
    ],
)
def test_a_refused_or_malformed_answer_spends_one_request_and_the_gap_says_why(
    stream: str, path: str, answer: Answer, why: str
) -> None:
    now = int(time.time())
    updated: list[Gap] = []
    with Hostile() as up:
        up.http[path] = answer

        async def backfill() -> Backfiller:
            feed, cause = Feed.parse(stream), GapCause.DISCONNECT
            gap = Gap((now - 10) * NS, now * NS, "US:AAPL", feed, cause, now * NS)
            up_config = UpstreamConfig(http_url=up.http_url, backoff_initial=0.05)
            async with RestClient(up_config, Secret(KEY)) as rest:
                resolved = asyncio.Event()

                def update(gap: Gap) -> None:
                    updated.append(gap)
                    resolved.set()

                backfiller = Backfiller(rest, TradeCounter(), lambda r: None, update, settle=0)
                backfiller.submit(gap)
                task = asyncio.create_task(backfiller.run())
                await resolved.wait()
                task.cancel()
                assert backfiller.idle
            return backfiller

        backfiller = asyncio.run(asyncio.wait_for(backfill(), 20))
        assert [r.path for r in up.requests] == [path]  # once, not five times
    assert backfiller.failed_rounds == 0
    (gap,) = updated
    assert gap.status == "unrecoverable"
    assert gap.detail is not None and gap.detail.startswith("backfill refused: ")
    assert why in gap.detail


def test_two_disconnects_6_s_apart_on_10_requests_a_minute_recover_every_trade(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # 8.5 trades a second per code fill /trade's window of 50 in 6 s: a backfill that waits
    # behind reference data (or a repeated start-up round) for the budget loses trades
    sim = make_sim(trades_per_second=8.5, seed=23)
    codes = ["US:AAPL", "HK:700", "CF:BTCUSDT"]
    config = make_config(sim, tmp_path, codes)  # trades, depth, snapshots; 10 a minute
    assert config.upstream.http_requests_per_minute == 10
    drops: list[float] = []  # when each outage began (elapsed seconds)

    def disconnect(recorder: Recorder, elapsed: float) -> None:
        swept = recorder.status().gaps_resolved >= len(codes) and recorder.status().backfill_idle()
        if (not drops and swept) or (len(drops) == 1 and elapsed >= drops[0] + 6.0):
            drops.append(elapsed)
            sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", True))
            sim.run(sim.sim.disconnect_all("injected"))
        elif drops and elapsed >= drops[-1] + 1.0 and sim.sim.faults.refuse_connections:
            # an outage of 1-2 s (the backoff adds to it): a dozen trades a code that only
            # the backfill can recover
            sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", False))

    recorder = run_recorder(
        config,
        during=disconnect,
        timeout=60,
        until=lambda r: len(drops) == 2 and not sim.sim.faults.refuse_connections and _settled(r),
    )
    assert len(drops) == 2 and recorder.status().reconnects >= 2
    db = tmp_path / "ticks.sqlite"
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    lo, hi = _window(sent, db)
    truth = _truth_in(sim, set(codes), lo, hi)
    stored = _stored_in(db, lo, hi)
    by_purpose = {p: n for p, n in recorder.status().rest_requests_by_purpose.items() if n}
    print(f"trades expected {len(truth)}, stored {len(stored)}; requests {by_purpose}")
    check_trades(stored, truth)  # every trade recovered, none twice
    statuses = rows(db, "SELECT status FROM gaps WHERE stream = 'trades'")
    # filled; under a heavy load a window of 50 that begins inside a gap's first second
    # makes it partial (that second might have been cut), though every trade came back
    assert len(statuses) == 2 * len(codes) and {s for (s,) in statuses} <= {"filled", "partial"}
    (backfilled,) = rows(db, "SELECT count(*) FROM trades WHERE source = 'backfill'")[0]
    assert backfilled > 2 * len(codes) * 5  # the outages did lose trades, and they came back
    # one /trade per disconnect (its start-up sweep rides along) and one at start-up
    assert by_purpose.get("trades", 0) + by_purpose.get("sweep", 0) == 3
    assert sum(by_purpose.values()) <= 10
    assert sim.call(lambda: list(sim.sim.http_over_limit)) == []


def test_after_a_reconnect_one_history_request_serves_every_kline_type(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=4, seed=29)
    codes = ["US:AAPL", "CF:BTCUSDT"]
    config = make_config(
        sim, tmp_path, codes, subscribe={"depth": [], "klines": codes, "kline_types": [1, 5, 15]}
    )
    dropped: list[int] = []  # HTTP requests made before the disconnect

    def disconnect(recorder: Recorder, elapsed: float) -> None:
        now = recorder.status()
        if (
            not dropped
            and now.subscribed
            and now.gaps_submitted > 0
            and now.backfill_idle()
            and not recorder.ingest.detector.pending
        ):
            dropped.append(sim.call(lambda: len(sim.sim.http_requests)))
            sim.run(sim.sim.disconnect_all("injected"))

    recorder = run_recorder(
        config,
        during=disconnect,
        timeout=40,
        until=lambda r: bool(dropped) and r.status().reconnects == 1 and _settled(r),
    )
    assert recorder.status().reconnects == 1
    paths = [p for _, p in sim.call(lambda: list(sim.sim.http_requests))[dropped[0] :]]
    # three K-line types resubscribed a second apart: their gaps share one /history
    assert paths.count("/history") == 1, paths
    assert paths.count("/trade") == 1, paths
    gaps = rows(tmp_path / "ticks.sqlite", "SELECT stream FROM gaps WHERE cause = 'disconnect'")
    assert {s for (s,) in gaps} >= {"klines:1", "klines:5", "klines:15"}


def test_a_round_an_earlier_answer_already_covers_makes_no_request() -> None:
    now = int(time.time())
    written: list[Record] = []
    with Hostile() as up:
        up.http["/trade"] = Answer.ok([_trade("US:AAPL", now - 20 + i) for i in range(20)])

        def gap(start: int, end: int) -> Gap:
            return Gap(start * NS, end * NS, "US:AAPL", TRADES, GapCause.DISCONNECT, now * NS)

        async def backfill() -> list[Gap]:
            up_config = UpstreamConfig(http_url=up.http_url, backoff_initial=0.05)
            gaps = [gap(now - 15, now - 10), gap(now - 8, now - 5), gap(now - 3, now)]
            async with RestClient(up_config, Secret(KEY)) as rest:
                backfiller = Backfiller(rest, TradeCounter(), written.append, lambda g: None)
                for one in gaps:
                    await backfiller.round([one])
            return gaps

        first, covered, later = asyncio.run(backfill())
        # the second gap ended before the newest trade of the first answer: no request;
        # the third ends after it: the answer cannot show its end, so it asks again
        assert len(up.requests) == 2
    assert [g.status for g in (first, covered, later)] == ["filled"] * 3
    assert (first.backfilled, covered.backfilled) == (6, 4)
    assert len(written) == 6 + 4 + 3  # each trade once


def test_a_gap_resolved_leaves_another_live_gap_of_the_same_key_held() -> None:
    # two gaps of one row (no trade between two disconnects): the first one's backfill
    # must not release what the second one still needs (keyed by identity, not id())
    now = int(time.time())
    written: list[Record] = []
    with Hostile() as up:
        up.http["/trade"] = Answer.ok([_trade("US:AAPL", now - 30 + i) for i in range(30)])

        async def backfill() -> list[bool]:
            start = (now - 10) * NS
            lasting = Gap(start, None, "US:AAPL", TRADES, GapCause.DISCONNECT, start)
            ended = Gap(start, now * NS, "US:AAPL", TRADES, GapCause.DISCONNECT, start)
            assert lasting.key == ended.key
            up_config = UpstreamConfig(http_url=up.http_url, backoff_initial=0.05)
            async with RestClient(up_config, Secret(KEY)) as rest:
                backfiller = Backfiller(rest, TradeCounter(), written.append, lambda g: None)
                backfiller.hold(lasting)
                backfiller.hold(lasting)  # held twice is held once
                await backfiller.round([ended])
                pending = [backfiller.pending()]
                lasting.end = now * NS
                await backfiller.round([lasting])
                return [*pending, backfiller.pending()]

        assert asyncio.run(asyncio.wait_for(backfill(), 20)) == [True, False]
