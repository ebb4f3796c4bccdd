"""Replay: the same range comes back in time order, as records, NDJSON, or a QOS server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config, rows, run_recorder, wait_for
from simulated import SimulatorThread
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from recorder import protocol
from recorder.daemon import Recorder
from recorder.exceptions import ConfigError
from recorder.protocol import NS, Kline, Stream, Trade
from recorder.replay import pace_time, replay
from recorder.sim import SimConfig

CODES = ["US:AAPL", "HK:700", "CF:BTCUSDT"]


@dataclass
class Recording:
    db: Path
    sent: list[dict[str, Any]]
    start: int  # unix seconds, inclusive
    end: int  # exclusive


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    tmp = tmp_path_factory.mktemp("replay")
    with SimulatorThread(
        SimConfig(keys=("test-key-0123456789abcdef",), trades_per_second=8, seed=41)
    ) as sim:
        # no backfill: the store then holds exactly the live stream that was pushed
        config = make_config(
            sim,
            tmp,
            CODES,
            subscribe={"klines": CODES[:1], "kline_types": [1]},
            gaps={"backfill": False},
        )
        recorder = run_recorder(
            config, until=lambda r: r.stats.frames[Stream.TRADES] >= 90, timeout=30
        )
        # TCP keeps order: the recorder received exactly the first frames that were sent
        # (the simulator may have pushed a few more as it stopped reading)
        received = sum(recorder.stats.frames.values())
        sent = sim.call(lambda: list(sim.sim.sent_frames()))[:received]
        assert recorder.stats.decode_errors == 0 and len(sent) == received
    yield Recording(tmp / "ticks.sqlite", sent, sent[0]["ts"], sent[-1]["ts"] + 1)


def _record(frame: dict[str, Any]) -> Any:
    return protocol.decode(json.dumps(frame), 0)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ndjson_round_trip_equals_what_was_pushed(recording: Recording) -> None:
    result = _cli(
        "--source", str(recording.db), "--from", str(recording.start), "--to", str(recording.end)
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(line) >= {"tp", "c", "ts"} and isinstance(line["ts"], int) for line in lines)
    replayed = [_record(f) for f in lines if f["tp"] != "K"]
    # every update is stored (identical ones too, numbered by k and n) and comes back
    pushed = [_record(f) for f in recording.sent if f["tp"] != "K"]
    assert replayed == pushed  # field by field, in order, no extras
    # a bar's ts is its open time: ask for the range from the first bar's open
    bars = {(b.code, b.kt, b.ts): b for b in (_record(f) for f in recording.sent if f["tp"] == "K")}
    opened = min(ts for _, _, ts in bars) // NS
    result = _cli(
        "--source",
        str(recording.db),
        "--from",
        str(opened),
        "--to",
        str(recording.end),
        "--streams",
        "klines",
    )
    replayed_bars = [_record(json.loads(line)) for line in result.stdout.splitlines()]
    assert {(b.code, b.kt, b.ts): b for b in replayed_bars} == bars
    assert len(replayed_bars) == len(bars)
    # time order with the documented tie-break
    keys = [(r.ts,) for r in (_record(f) for f in lines)]
    assert keys == sorted(keys)


def test_python_api_filters_codes_and_streams(recording: Recording) -> None:
    start, end = recording.start * NS, recording.end * NS
    records = list(replay(recording.db, start, end, codes=["HK:700"], streams=["trades"]))
    trades = [t for t in records if isinstance(t, Trade) and t.code == "HK:700"]
    assert trades and trades == records
    assert [(t.ts, t.price, t.size, t.side) for t in trades] == [
        (r.ts, r.price, r.size, r.side)
        for r in (_record(f) for f in recording.sent)
        if isinstance(r, Trade) and r.code == "HK:700"
    ]
    ordered = [(r.ts, r.recv_ts) for r in replay(recording.db, start, end)]
    assert ordered == sorted(ordered)
    bars = list(replay(recording.db, start - 3600 * NS, end, streams=["klines"]))
    assert bars and all(isinstance(b, Kline) for b in bars)
    # an hour before the recording: before any bar opened too
    assert list(replay(recording.db, start - 7200 * NS, start - 3600 * NS)) == []


def test_bad_arguments_and_empty_ranges_are_one_line_errors(recording: Recording) -> None:
    with pytest.raises(ConfigError, match="--to must be after --from"):
        list(replay(recording.db, 10, 5))
    with pytest.raises(ConfigError, match="--streams: 'quotes'"):
        list(replay(recording.db, 0, 5, streams=["quotes"]))
    empty = _cli("--source", str(recording.db), "--from", "2020-01-01", "--to", "2020-01-02")
    assert empty.returncode == 1 and empty.stdout == ""
    assert empty.stderr.startswith("qos-recorder: no records in") and empty.stderr.count("\n") == 1
    bad = _cli("--source", str(recording.db), "--from", "yesterday", "--to", "2020-01-02")
    assert bad.returncode == 2 and "--from: 'yesterday' is not a time" in bad.stderr
    missing = _cli("--source", "/nonexistent.sqlite", "--from", "0", "--to", "1")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    code = _cli("--source", str(recording.db), "--from", "0", "--to", "1", "--codes", "XX:1")
    assert code.returncode == 2 and "unknown market 'XX'" in code.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("speed", [4.0])
def test_replay_server_plays_the_subscribed_frames_at_speed(
    recording: Recording, speed: float
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "replay",
            "--source",
            str(recording.db),
            "--from",
            str(recording.start),
            "--to",
            str(recording.end),
            "--serve",
            str(port),
            "--speed",
            str(speed),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    received: list[tuple[float, dict[str, Any]]] = []
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert wait_for(listening, timeout=20)
        with connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"key": "any"}) as ws:
            ws.send(json.dumps({"type": "T", "codes": ["US:AAPL,TS:LA"], "reqid": 1}))
            assert "invalid code" in json.loads(ws.recv(timeout=10))["msg"]
            ws.send(json.dumps({"type": "T", "codes": ["US:AAPL", "CF:BTCUSDT"], "reqid": 2}))
            ws.send(json.dumps({"type": "H"}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = json.loads(ws.recv(timeout=30))
                    if "tp" in frame:
                        received.append((time.monotonic(), frame))
                    else:
                        assert frame["msg"] == "OK"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "replay finished"
    finally:
        proc.terminate()
        proc.wait(10)
    frames = [f for _, f in received]
    expected = [f for f in recording.sent if f["tp"] == "T" and f["c"] in ("US:AAPL", "CF:BTCUSDT")]
    assert [_record(f) for f in frames] == [_record(f) for f in expected]
    # paced: wall time is the recorded span divided by the speed
    stored = list(
        replay(
            recording.db,
            recording.start * NS,
            recording.end * NS,
            codes=["US:AAPL", "CF:BTCUSDT"],
            streams=["trades"],
        )
    )
    span = (pace_time(stored[-1]) - pace_time(stored[0])) / NS
    wall = received[-1][0] - received[0][0]
    assert abs(wall - span / speed) < 0.25 * span / speed + 0.3, (wall, span)


def test_identical_depth_updates_in_one_second_are_all_kept_in_order(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=0)  # no market: only the frames pushed here
    config = make_config(sim, tmp_path, ["US:AAPL"], subscribe={"trades": [], "snapshots": []})
    second = 1_700_000_000

    def book(bid: str) -> dict[str, Any]:
        return {
            "tp": "D",
            "c": "US:AAPL",
            "b": [{"p": bid, "v": "100"}],
            "a": [{"p": "10.05", "v": "200"}],
            "ts": second,
        }

    a, b = book("10.00"), book("10.01")

    def push(recorder: Recorder, elapsed: float) -> None:
        if recorder.stats.subscribed and not pushed:
            pushed.append(sim.run(sim.sim.push([a, b, a])))

    pushed: list[None] = []
    run_recorder(config, during=push, until=lambda r: r.stats.frames[Stream.DEPTH] >= 3)
    db = tmp_path / "ticks.sqlite"
    assert rows(db, "SELECT bid_px, n FROM depth WHERE ts = ? ORDER BY recv_ts", second * NS) == [
        (10.0, 0),
        (10.01, 0),
        (10.0, 1),
    ]
    replayed = [protocol.push_frame(r) for r in replay(db, second * NS, (second + 1) * NS)]
    assert [float(f["b"][0]["p"]) for f in replayed] == [10.0, 10.01, 10.0]
