"""The recorder end to end: simulator → real Recorder → SQLite, and the real process."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import websockets.asyncio.client
from conftest import (
    KEY,
    make_config,
    rows,
    run_recorder,
    sigterm,
    start_recorder,
    wait_for,
    write_config,
)
from hostile import Hostile
from prometheus_client import generate_latest
from simulated import SimulatorThread
from structlog.testing import capture_logs
from truth import check_trades, depth_key, last_bars, snapshot_key

from recorder.batching import Batch
from recorder.config import Secret
from recorder.daemon import Recorder
from recorder.feed import TRADES
from recorder.gaps import Gap, GapCause
from recorder.protocol import NS, Stream
from recorder.rest import AiohttpTransport, Response
from recorder.schema import GAPS, gap_row
from recorder.sinks.sqlite import SQLiteSink
from recorder.status import Status

SimFactory = Callable[..., SimulatorThread]
E2E_SECONDS = float(os.environ.get("QOS_E2E_SECONDS", "60"))


def test_sixty_seconds_without_faults_store_every_pushed_record_once(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=20, seed=11)
    codes = list(sim.sim.codes)
    config = make_config(
        sim, tmp_path, codes, subscribe={"klines": codes[:2], "kline_types": [1, 5]}
    )
    # until a minute's worth of trades arrived (the simulator pushes exactly 20/s per code)
    expected = E2E_SECONDS * 20 * len(codes)
    recorder = run_recorder(
        config,
        until=lambda r: r.status().frames[Stream.TRADES] >= expected,
        timeout=E2E_SECONDS * 2,
    )
    db = tmp_path / "ticks.sqlite"
    # the recorder received exactly the first frames sent (TCP keeps order)
    sent = sim.call(lambda: list(sim.sim.sent_frames()))[: sum(recorder.status().frames.values())]
    trades = [f for f in sent if f["tp"] == "T"]
    assert len(trades) > E2E_SECONDS * 20 * len(codes) * 0.5

    check_trades(rows(db, "SELECT code, ts, price, size, side, k FROM trades"), trades)
    stored_depth = rows(db, "SELECT code, ts, bids, asks FROM depth")
    # every update is kept, identical ones included (numbered by n)
    assert sorted(stored_depth) == sorted(depth_key(f) for f in sent if f["tp"] == "D")
    stored_snaps = rows(db, "SELECT code, ts, volume, last FROM snapshots")
    assert sorted(stored_snaps) == sorted(snapshot_key(f) for f in sent if f["tp"] == "S")
    # values equal the ground truth, not just the keys
    last = {
        (f["c"], f["ts"] * NS, float(f["v"]), float(f["lp"])): f for f in sent if f["tp"] == "S"
    }
    for code, ts, v, lp, yp, o, h, lo, t in rows(
        db, "SELECT code, ts, volume, last, prev_close, open, high, low, turnover FROM snapshots"
    ):
        frame = last[(code, ts, v, lp)]
        assert (yp, o, h, lo, t) == tuple(float(frame[k]) for k in ("yp", "o", "h", "l", "t"))
    bars = last_bars([f for f in sent if f["tp"] == "K"])
    stored_bars = rows(db, "SELECT code, kt, ts, open, close, high, low, volume FROM klines")
    assert len(stored_bars) == len(bars)
    for code, kt, ts, o, c, h, lo, v in stored_bars:
        f = bars[(code, kt, ts)]
        assert (o, c, h, lo, v) == tuple(float(f[k]) for k in ("o", "cl", "h", "l", "v"))
    assert rows(db, "SELECT DISTINCT source FROM trades") == [("live",)]
    assert recorder.status().decode_errors == 0 and recorder.status().lost_rows == 0
    assert sim.call(lambda: sim.sim.refusals) == []


def test_writing_the_same_batches_twice_duplicates_nothing(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    from recorder.batching import Batch
    from recorder.sinks.sqlite import SQLiteSink

    config = make_config(sim, tmp_path, subscribe={"klines": ["US:AAPL"]})
    batches: list[Batch] = []
    recorder = run_recorder(config, until=lambda r: r.status().batches_written >= 5, timeout=20)
    assert recorder.status().batches_written >= 5
    db = tmp_path / "ticks.sqlite"
    before = {
        t: rows(db, f"SELECT * FROM {t} ORDER BY 1, 2")
        for t in ("trades", "depth", "snapshots", "klines")
    }
    # re-send every stored row as new batches: nothing may change
    for table, stored in before.items():
        batches.append(Batch({table: stored}, len(batches)))
    sink = SQLiteSink(db)
    for batch in batches + batches:
        sink.write(batch)
    sink.close()
    after = {t: rows(db, f"SELECT * FROM {t} ORDER BY 1, 2") for t in before}
    assert after == before


def test_sigterm_under_heavy_traffic_flushes_everything_received(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=400, seed=3)
    codes = ", ".join(f'"{c}"' for c in sim.sim.codes)
    config_path = write_config(
        tmp_path / "recorder.toml",
        sim,
        f"""[subscribe]
trades = [{codes}]
depth = [{codes}]
snapshots = [{codes}]
[sink]
kind = "sqlite"
sqlite_path = "ticks.sqlite"
batch_rows = 5000
batch_age = 1.0
""",
    )
    proc = start_recorder(config_path)
    pushed = wait_for(lambda: len(sim.call(lambda: sim.sim.sent_frames("T"))) > 3000, 30)
    stopped, printed = sigterm(proc, timeout=15)
    assert pushed
    assert stopped["clean"] is True and stopped["lost_rows"] == 0
    db = tmp_path / "ticks.sqlite"
    (stored,) = rows(db, "SELECT count(*) FROM trades")[0]
    assert stored == stopped["frames"]["trades"] > 3000
    assert stopped["rows"]["trades"] == stored
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    # what was stored is exactly the first `stored` trades the simulator pushed
    check_trades(rows(db, "SELECT code, ts, price, size, side, k FROM trades"), sent[:stored])
    assert KEY not in printed


def test_restart_keeps_trade_identity_from_the_sink(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(trades_per_second=50, seed=8)
    config = make_config(sim, tmp_path, ["US:AAPL"])
    first = run_recorder(config, until=lambda r: r.status().frames[Stream.TRADES] >= 50, timeout=20)
    second = run_recorder(config, until=lambda r: r.status().trade_identities > 0, timeout=20)
    assert first.status().frames[Stream.TRADES] >= 50
    # the second run learned the first run's identities at start-up
    seeded = rows(
        tmp_path / "ticks.sqlite",
        "SELECT code, ts, price, size, side, count(*) FROM trades GROUP BY 1,2,3,4,5",
    )
    assert seeded and all(
        second.ingest.counter.count((r[0], r[1], r[2], r[3], r[4])) >= r[5] for r in seeded
    )
    started = time.time_ns() - 3600 * NS
    assert all(r[1] > started for r in seeded)


def test_sighup_applies_a_new_subscription_list_on_the_live_session(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=10, seed=12)
    config = tmp_path / "recorder.toml"

    def subscribe(codes: str) -> None:
        write_config(
            config,
            sim,
            f"""[subscribe]
trades = [{codes}]
snapshots = [{codes}]
[sink]
sqlite_path = "ticks.sqlite"
""",
        )

    subscribe('"US:AAPL", "HK:700"')
    log = tmp_path / "recorder.log"
    db = tmp_path / "ticks.sqlite"

    def stored(code: str, source: str = "live") -> int:
        try:
            (n,) = rows(
                db, "SELECT count(*) FROM trades WHERE code = ? AND source = ?", code, source
            )
        except sqlite3.OperationalError:  # not created yet
            return 0
        return int(n[0])

    proc = start_recorder(config, log=log)
    try:
        assert wait_for(lambda: stored("US:AAPL") > 20 and stored("HK:700") > 20, timeout=30)
        subscribe('"US:AAPL", "CF:BTCUSDT"')  # HK:700 removed, CF:BTCUSDT added
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: b'"config_reloaded"' in log.read_bytes(), timeout=10)
        # the cancels pass the same 1 request/s gate: HK:700 has stopped a few seconds later
        ended = time.time_ns() + 4 * NS
        assert wait_for(lambda: stored("CF:BTCUSDT") > 20, timeout=30)
        assert stored("CF:BTCUSDT", "backfill") > 0  # it started with its recent trades
        # an invalid edit changes nothing and says so in one line
        config.write_text(config.read_text() + "bogus = 1\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: b'"config_reload_failed"' in log.read_bytes(), timeout=10)
        before = stored("CF:BTCUSDT")
        assert wait_for(lambda: stored("CF:BTCUSDT") > before + 10, timeout=20)

        def newest(code: str) -> int:
            sql = "SELECT max(recv_ts) FROM trades WHERE code = ?"
            return int(rows(db, sql, code)[0][0] or 0)

        # recording goes on well past the moment HK:700 must have stopped
        assert wait_for(lambda: newest("CF:BTCUSDT") > ended + 2 * NS, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    (done,) = [e for e in events if e["event"] == "config_reloaded"]
    assert (done["added"], done["removed"], done["needs_restart"]) == (
        ["CF:BTCUSDT"],
        ["HK:700"],
        [],
    )
    (failed,) = [e for e in events if e["event"] == "config_reload_failed"]
    assert "bogus: unknown key" in failed["error"]
    assert sim.call(lambda: sim.sim.connections_opened) == 1  # one session the whole time
    kinds = sim.call(lambda: [k for _, _, k in sim.sim.commands])
    assert "TC" in kinds and "SC" in kinds  # the removed code was cancelled
    (last_hk,) = rows(db, "SELECT max(recv_ts) FROM trades WHERE code = 'HK:700'")[0]
    assert last_hk < ended  # its recording simply ended...
    assert rows(db, "SELECT code, stream, cause FROM gaps WHERE cause != 'startup'") == []
    # ...and neither it nor the codes kept have a gap


def test_a_routine_progress_line_says_what_came_since_the_last(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path, ["US:AAPL"], log={"progress_interval": 1})
    with capture_logs() as logs:
        run_recorder(
            config,
            until=lambda r: sum(e["event"] == "progress" for e in logs) >= 3,
            timeout=30,
        )
    lines = [e for e in logs if e["event"] == "progress"]
    assert [e["log_level"] for e in lines] == ["info"] * len(lines)
    first, *later = lines
    assert first["seconds"] is None and all(e["seconds"] == 1 for e in later)
    assert {"open_gaps", "spool_bytes", "rest_budget_left", "connected"} <= set(first)
    # each line counts what came since the one before: together, every frame and row
    for key, total in (("frames", "frames_total"), ("rows", "rows_total")):
        assert sum(n for e in lines for n in e[key].values()) == lines[-1][total] > 0
    assert any(e["frames"].get("trades", 0) > 0 for e in later)


def test_a_key_the_websocket_takes_and_rest_refuses_is_a_state_while_it_lasts(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=5, seed=33, market_hours=False)
    sim.call(lambda: setattr(sim.sim.faults, "http_status", 401))  # REST only
    config = make_config(sim, tmp_path, ["US:AAPL"])
    seen: list[tuple[bool, dict[str, Any], str]] = []

    def watch(recorder: Recorder, elapsed: float) -> None:
        status = recorder.status()
        if status.rest_key_refused and not seen:
            text = generate_latest(recorder.metrics.registry).decode()
            seen.append((*status.health(config.metrics), text))
            # the plan renewed: REST takes the key again, and a disconnect's backfill asks
            sim.call(lambda: setattr(sim.sim.faults, "http_status", None))
            sim.run(sim.sim.disconnect_all())
        elif seen and len(seen) == 1 and not status.rest_key_refused:
            seen.append((*status.health(config.metrics), ""))

    run_recorder(config, during=watch, until=lambda r: len(seen) == 2, timeout=40)
    (refused_ok, refused, metrics), (_, after, _) = seen
    assert status_connected_but(refused) and not refused_ok and refused["key_refused"] is True
    assert any(
        r.startswith("the service refuses the key over REST (/") and r.count("HTTP 401") == 1
        for r in refused["reasons"]
    ), refused["reasons"]
    assert "\nqos_key_refused 1.0\n" in metrics
    assert after["key_refused"] is False
    assert not any("refuses the key" in r for r in after["reasons"])


def status_connected_but(summary: dict[str, Any]) -> bool:
    """The WebSocket took the key: connected, and no reason says otherwise."""
    return not any(
        r.startswith(("disconnected", "the service refuses the key (")) for r in summary["reasons"]
    )


def test_a_refused_key_is_a_state_while_it_lasts(sim: SimulatorThread, tmp_path: Path) -> None:
    config = make_config(sim, tmp_path, ["US:AAPL"])
    recorder = Recorder(config, Secret("wrong-key-0123"))
    seen: list[tuple[bool, dict[str, Any]]] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not stop.is_set():
                status = recorder.status()
                if status.key_refused and not seen:
                    seen.append(status.health(config.metrics))
                    text = generate_latest(recorder.metrics.registry).decode()
                    assert "\nqos_key_refused 1.0\n" in text
                    # the service takes the key again (a plan renewed): the state ends
                    sim.sim.config.keys = (*sim.sim.config.keys, "wrong-key-0123")
                refused = status.key_refused or status.rest_key_refused  # REST refused it too
                if seen and status.connected and not refused:
                    seen.append(status.health(config.metrics))
                    stop.set()
                await asyncio.sleep(0.05)
            stop.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch())
            tg.create_task(recorder.run(stop))

    asyncio.run(main())
    (refused_ok, refused), (_, after) = seen
    assert not refused_ok and refused["key_refused"] is True
    assert refused["reasons"][0] == (
        "the service refuses the key (HTTP 401: the service refused the API key): check "
        "upstream.key_env or upstream.key_file, and qos-recorder check-config --online"
    )
    assert after["key_refused"] is False
    assert not any("refuses the key" in r for r in after["reasons"])
    assert "wrong-key-0123" not in repr(seen)


def test_the_root_opens_the_network_only_through_the_connect_and_transport_it_is_given(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """The config names an address nothing listens on; the injected connect and transport
    carry the session and the REST requests to the simulator instead (the network is
    swapped, not the logic)."""
    config = make_config(sim, tmp_path, ["US:AAPL", "CF:BTCUSDT"])
    nowhere = dataclasses.replace(
        config.upstream, ws_url="ws://127.0.0.1:9/ws", http_url="http://127.0.0.1:9"
    )
    config = dataclasses.replace(config, upstream=nowhere)
    opened: list[str] = []
    posted: list[str] = []

    def connect(uri: str, **options: Any) -> websockets.asyncio.client.connect:
        opened.append(uri)
        return websockets.asyncio.client.connect(sim.ws_url, **options)

    class Transport:
        def __init__(self) -> None:
            self.network = AiohttpTransport(10.0, 1 << 20)

        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
            posted.append(url)
            path = url.removeprefix(nowhere.http_url)
            return await self.network.post(sim.http_url.rstrip("/") + path, body, headers)

        async def aclose(self) -> None:
            await self.network.aclose()

    async def main() -> Status:
        recorder = Recorder(config, Secret(KEY), connect=connect, transport=Transport())
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(recorder.run(stop))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = recorder.status()
                if now.frames[Stream.TRADES] >= 10 and now.rest_requests >= 1:
                    break
                await asyncio.sleep(0.02)
            stop.set()
        return recorder.status()

    status = asyncio.run(main())
    assert status.frames[Stream.TRADES] >= 10 and status.decode_errors == 0
    assert opened and set(opened) == {nowhere.ws_url}
    assert len(posted) == status.rest_requests >= 1
    assert all(url.startswith(nowhere.http_url + "/") for url in posted)
    stored = rows(tmp_path / "ticks.sqlite", "SELECT count(*) FROM trades")[0][0]
    assert stored >= 10


def test_an_open_gap_row_that_is_not_ours_is_logged_and_the_others_reopen(tmp_path: Path) -> None:
    with Hostile() as up:
        config = make_config(up, tmp_path, ["US:AAPL", "HK:700"])
    start = time.time_ns() - 60 * NS
    ours = Gap(start, None, "US:AAPL", TRADES, GapCause.DISCONNECT, start)
    theirs = list(gap_row(dataclasses.replace(ours, code="HK:700")))
    theirs[4] = "klines:x"  # a stream no release wrote
    sink = SQLiteSink(tmp_path / "ticks.sqlite")
    sink.open()
    sink.write(Batch({GAPS.name: [gap_row(ours), tuple(theirs)]}, seq=1))
    sink.close()
    recorder = Recorder(config, Secret(KEY))
    with capture_logs() as logs:
        recorder.restore()
    recorder.sink.close()
    (unreadable,) = [e for e in logs if e["event"] == "gap_row_unreadable"]
    assert "HK:700" in unreadable["error"] and "'klines:x'" in unreadable["error"]
    assert recorder.status().open_gaps == 1  # ours lasts on, as the gap of its code
