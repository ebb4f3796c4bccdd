"""Reference data: answers of the wrong shape are logged upstream errors, never a crash;
the pollers follow the live subscription target (a SIGHUP reload included)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from conftest import KEY, make_config, rows, run_recorder, start_recorder, wait_for, write_config
from hostile import Answer, Hostile
from simulated import SimulatorThread
from test_markets import BAD

from recorder.config import Secret, UpstreamConfig
from recorder.daemon import Recorder
from recorder.markets import Calendar
from recorder.reference import ReferencePoller
from recorder.rest import RestClient
from recorder.schema import Row


def test_bad_calendar_answers_are_logged_and_tried_again_later() -> None:
    shapes = iter(BAD)
    with Hostile() as up:
        up.http["/market-calendar"] = lambda request: Answer.ok(next(shapes, {"US": ["20261125"]}))
        calendar = Calendar()
        added: list[tuple[str, Row]] = []

        async def go() -> ReferencePoller:
            rest = RestClient(
                UpstreamConfig(http_url=up.http_url, http_requests_per_minute=600), Secret(KEY)
            )
            async with rest:
                poller = ReferencePoller(
                    rest,
                    lambda: ["US:AAPL"],
                    calendar,
                    lambda t, r: added.append((t, r)),
                    retry=0.01,
                )
                task = asyncio.create_task(poller.run())
                while not calendar.known("US"):
                    assert not task.done()  # a bad answer never ends the poller
                    await asyncio.sleep(0.01)
                task.cancel()
                return poller

        poller = asyncio.run(asyncio.wait_for(go(), 30))
    assert poller.failures == len(BAD)
    assert added == []  # /instrument-info answered no instrument


def test_a_recorder_given_bad_reference_answers_keeps_recording(tmp_path: Path) -> None:
    trade = '{"tp":"T","c":"US:AAPL","p":"212.5","v":"3","ts":1741960243,"d":1}'
    with Hostile() as up:
        up.frames.append(trade)
        up.http["/market-calendar"] = Answer.ok({"US": "2025..."})
        up.http["/instrument-info"] = Answer.ok(5)
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})

        def done(recorder: Recorder) -> bool:
            stored = recorder.status().rows_written.get("trades", 0) >= 1
            return stored and recorder.status().reference_failures >= 2

        recorder = run_recorder(config, until=done, timeout=30)
    assert done(recorder)
    assert not recorder.calendar.known("US")  # Mon-Fri is kept, not a calendar of characters
    assert rows(tmp_path / "ticks.sqlite", "SELECT count(*) FROM instruments") == [(0,)]


def _instruments(db: Path) -> set[str]:
    try:
        return {c for (c,) in rows(db, "SELECT code FROM instruments")}
    except sqlite3.OperationalError:
        return set()


def test_codes_a_sighup_adds_get_a_calendar_and_an_instruments_row(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    def subscribe(codes: str) -> Path:
        return write_config(
            tmp_path / "recorder.toml",
            sim,
            f"backoff_initial = 0.2\n[subscribe]\ntrades = [{codes}]\n"
            '[sink]\nsqlite_path = "ticks.sqlite"\n',
        )

    config = subscribe('"US:AAPL"')
    db, log = tmp_path / "ticks.sqlite", tmp_path / "run.log"

    def events(name: str) -> list[dict[str, Any]]:
        lines = log.read_bytes().splitlines()
        return [e for e in map(orjson.loads, lines) if e.get("event") == name]

    proc = start_recorder(config, log=log)
    try:
        assert wait_for(lambda: _instruments(db) == {"US:AAPL"}, timeout=30)
        assert wait_for(lambda: len(events("calendar_refreshed")) == 1, timeout=30)
        subscribe('"US:AAPL", "HK:700", "CF:BTCUSDT"')
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _instruments(db) == {"US:AAPL", "HK:700", "CF:BTCUSDT"}, timeout=30)
        assert wait_for(lambda: len(events("calendar_refreshed")) == 2, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    assert [e["markets"] for e in events("calendar_refreshed")] == [["US"], ["HK"]]
    # one request per endpoint for the codes the reload added, not one per code
    refreshed = [e["codes"] for e in events("instruments_refreshed")]
    assert refreshed == [1, 2]


def test_after_a_restart_reference_data_waits_for_the_backfill_of_the_time_away(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    codes = ["US:AAPL", "HK:700"]
    config = make_config(sim, tmp_path, codes, subscribe={"depth": []})

    def stored(recorder: Recorder) -> bool:
        written = recorder.status().rows_written
        return written.get("instruments", 0) == 2 and written.get("snapshots", 0) > 0

    run_recorder(config, until=stored)
    before = sim.call(lambda: len(sim.sim.http_requests))

    def settled(recorder: Recorder) -> bool:
        return (
            recorder.status().backfill_idle()
            and recorder.status().rows_written.get("instruments", 0) == 2
        )

    # a restart: the time away is a gap of every code and stream, backfilled at once; the
    # calendar and instruments are due again too (a new process), and must wait for it
    second = run_recorder(config, until=settled)
    assert second.status().gaps_resolved >= 2 * len(codes)
    paths = [p for _, p in sim.call(lambda: list(sim.sim.http_requests))[before:]]
    reference = {"/market-calendar", "/instrument-info"}
    first_reference = min(i for i, p in enumerate(paths) if p in reference)
    assert "/trade" in paths[:first_reference], paths
    # the snapshots gaps' refresh too, and one /trade for the time away and the sweep
    assert paths[:first_reference] == ["/trade", "/snapshot"], paths
