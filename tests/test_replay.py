"""Replay: the same range comes back in time order, as records, NDJSON, or a QOS server."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket
from conftest import make_config, rows, run_recorder, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from shapes import canonical, exact_frames, pushes
from simulated import SimulatorThread
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from recorder import protocol
from recorder.batching import Batch
from recorder.daemon import Recorder
from recorder.exceptions import ConfigError
from recorder.markets import bar_end
from recorder.protocol import NS, Kline, Stream, Trade
from recorder.replay import frames, pace_time, read_in_thread, replay
from recorder.sim import SimConfig
from recorder.sinks.sqlite import SQLiteSink

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
        SimConfig(
            keys=("test-key-0123456789abcdef",),
            trades_per_second=8,
            seed=41,
            market_hours=False,
        )
    ) as sim:
        # no backfill: the store then holds exactly the live stream that was pushed
        config = make_config(
            sim,
            tmp,
            CODES,
            subscribe={"klines": CODES[:1], "kline_types": [1, 1001]},
            gaps={"backfill": False},
        )
        # until the reference data is stored too, and both K-line types were pushed (the
        # last subscription goes out a few seconds after the first: the gate's spacing)
        recorder = run_recorder(
            config,
            until=lambda r: (
                r.status().frames[Stream.TRADES] >= 90
                and r.status().rows_written.get("instruments", 0) >= len(CODES)
                and sim.call(lambda: {f["kt"] for f in sim.sim.sent_frames("K")}) == {1, 1001}
            ),
            timeout=40,
        )
        # TCP keeps order: the recorder received exactly the first frames that were sent
        # (the simulator may have pushed a few more as it stopped reading)
        received = sum(recorder.status().frames.values())
        sent = sim.call(lambda: list(sim.sim.sent_frames()))[:received]
        assert recorder.status().decode_errors == 0 and len(sent) == received
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
    # every update is stored (identical ones too, numbered by k and n) and comes back with
    # the strings it was pushed with ("212.30" stays "212.30"), in order, with no extras
    pushed = [f for f in recording.sent if f["tp"] != "K"]
    assert [f for f in lines if f["tp"] != "K"] == pushed
    keys = [f["ts"] for f in lines if f["tp"] != "K"]
    assert keys == sorted(keys)  # time order


def test_k_line_pushes_replay_as_they_came_string_for_string(recording: Recording) -> None:
    pushed = [f for f in recording.sent if f["tp"] == "K"]
    assert {f["kt"] for f in pushed} == {1, 1001}
    result = _cli(
        "--source", str(recording.db), "--from", str(recording.start), "--to", str(recording.end)
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # every push, the forming bar's too, in the order and with the strings it came with
    assert [f for f in lines if f["tp"] == "K"] == pushed
    # no look-ahead: each push comes after every trade of its code that came before it live
    sent_at = {orjson.dumps(f): i for i, f in enumerate(recording.sent)}
    for i, line in enumerate(lines):
        if line["tp"] == "K":
            live = sent_at[orjson.dumps(line)]
            before = [f for f in recording.sent[:live] if f["tp"] == "T" and f["c"] == line["c"]]
            assert all(f in lines[:i] for f in before[-20:])


def test_bars_without_pushes_replay_once_at_their_close(
    recording: Recording, tmp_path: Path
) -> None:
    # a recording made before pushes were kept (or bars a backfill brought): no updates
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    source = sqlite3.connect(recording.db)
    source.backup(con)  # what its WAL holds too, which a copy of the file would miss
    source.close()
    con.execute("DROP TABLE kline_updates")
    con.commit()
    con.close()
    final: dict[tuple[str, int, int], dict[str, Any]] = {}
    for frame in recording.sent:  # the last push of each bar is its final version
        if frame["tp"] == "K":
            final[(frame["c"], frame["kt"], frame["ts"])] = frame
    later = recording.end + 2 * 86400  # past the close of every bar recorded (day bars too)
    result = _cli("--source", str(db), "--from", str(recording.start), "--to", str(later))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    bars = [f for f in lines if f["tp"] == "K"]
    # each bar once, with the strings of its final push
    assert {(b["c"], b["kt"], b["ts"]): b for b in bars} == final and len(bars) == len(final)
    for i, line in enumerate(lines):
        if line["tp"] != "K":
            continue
        close = bar_end(line["ts"], line["kt"])
        # no trade of its code from before its close comes after it: a strategy sees a
        # bar's values only once every trade in it has been seen
        assert not any(
            f["tp"] == "T" and f["c"] == line["c"] and f["ts"] < close for f in lines[i + 1 :]
        )
        assert any(f["tp"] == "T" and f["c"] == line["c"] for f in lines[:i])
    # a bar that opened before --from and closed inside the range is inside it
    minute = max(b["ts"] for b in bars if b["kt"] == 1)
    span = ("--from", str(minute + 30), "--to", str(minute + 61), "--streams", "klines")
    inside = _cli("--source", str(db), *span)
    assert [json.loads(line) for line in inside.stdout.splitlines()] == [
        final[("US:AAPL", 1, minute)]
    ]


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
    ordered = [(r.ts, r.recv_ts) for r in replay(recording.db, start, end) if r.stream != "klines"]
    assert ordered == sorted(ordered)
    bars = list(replay(recording.db, start - 3600 * NS, end + 2 * 86400 * NS, streams=["klines"]))
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


def test_a_closed_pipe_is_a_normal_end_and_serve_options_need_serve(
    recording: Recording,
) -> None:
    args = ["--source", str(recording.db), "--from", str(recording.start)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recorder", "replay", *args, "--to", str(recording.end)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # as `| head` does once it has its lines: every write is EPIPE
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, b"")
    for flag in (["--speed", "max"], ["--settle", "1"], ["--close-at-end"], ["--host", "::"]):
        refused = _cli(*args, "--to", str(recording.end), *flag)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr == (
            f"qos-recorder: error: {flag[0]}: applies to --serve PORT only (NDJSON is not paced)\n"
        )
    with socket.socket() as taken:  # a port in use names the flag that changes it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _cli(*args, "--to", str(recording.end), "--serve", str(port))
    assert busy.returncode == 2 and busy.stderr.endswith(
        "address already in use; choose another port with --serve PORT (0 picks a free one)\n"
    )


def _serve(
    recording: Recording, *extra: str, source: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``qos-recorder replay --serve`` on a free port, listening."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "replay",
            "--source",
            str(source or recording.db),
            "--serve",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    assert wait_for(listening, timeout=20)
    return proc, f"ws://127.0.0.1:{port}/ws"


def test_late_subscriptions_start_at_the_beginning_and_the_socket_stays_open(
    recording: Recording,
) -> None:
    proc, url = _serve(
        recording, "--from", str(recording.start), "--to", str(recording.end), "--speed", "max"
    )
    try:
        with connect(url, additional_headers={"key": "any"}) as ws:
            ws.send(json.dumps({"type": "T", "codes": ["US:AAPL"]}))
            time.sleep(3)  # the vendor's Go example spaces its commands 2-3 s apart
            ws.send(json.dumps({"type": "S", "codes": ["HK:700"]}))
            frames: list[dict[str, Any]] = []
            expected = [
                f
                for f in recording.sent
                if (f["tp"], f["c"]) in (("T", "US:AAPL"), ("S", "HK:700"))
            ]
            while len(frames) < len(expected):
                frame = json.loads(ws.recv(timeout=20))
                if "tp" in frame:
                    frames.append(frame)
            assert frames == expected  # the later subscription too, from the range start
            ws.send(json.dumps({"type": "H", "reqid": 9}))  # after the range: still open
            reply = json.loads(ws.recv(timeout=10))
            assert (reply["type"], reply["msg"], reply["reqid"]) == ("H", "OK", 9)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert b"replay_range_done" in out


def test_a_vendor_style_k_client_sees_the_forming_bar_in_a_replay_shorter_than_a_bar(
    recording: Recording,
) -> None:
    assert recording.end - recording.start < 60  # not one 1-minute bar closed in it
    span = ("--from", str(recording.start), "--to", str(recording.end))
    proc, url = _serve(recording, *span, "--speed", "max", "--settle", "1", "--close-at-end")
    want = [f for f in recording.sent if f["tp"] == "K" and f["kt"] == 1]
    try:  # as the vendor's Python example: websocket-client, the key in the URL, H first
        ws = websocket.create_connection(f"{url}?key=any", timeout=20)
        ws.send(json.dumps({"type": "H"}))
        ws.send(json.dumps({"type": "K", "codes": [CODES[0]], "kt": 1}))
        got: list[dict[str, Any]] = []
        while len(got) < len(want):
            frame = json.loads(ws.recv())
            if "tp" in frame:
                got.append(frame)
        ws.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert want and got == want  # each push of the forming bar, as the live client had it


def test_long_idle_stretches_are_shortened_and_logged(tmp_path: Path) -> None:
    db = tmp_path / "gap.sqlite"
    hour_ago = (int(time.time()) - 3600) * NS
    sink = SQLiteSink(db)
    trades = [Trade("US:AAPL", hour_ago + i * 3000 * NS, 1.5, 10.0, 1, hour_ago) for i in range(2)]
    sink.write(Batch.of(trades, 1))  # two trades 50 minutes apart
    sink.close()
    proc, url = _serve(
        Recording(db, [], 0, 0),
        "--from",
        str(hour_ago // NS),
        "--to",
        str(hour_ago // NS + 3601),
        "--speed",
        "1",
        "--settle",
        "0",
        "--max-idle",
        "1",
    )
    try:
        with connect(url, additional_headers={"key": "any"}) as ws:
            ws.send(json.dumps({"type": "T", "codes": ["US:AAPL"]}))
            got = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert [f.get("p") for f in got if "tp" in f] == ["1.5", "1.5"]  # not 50 minutes later
    assert b"replay_idle_skipped" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("speed", [4.0])
def test_replay_server_plays_the_subscribed_frames_at_speed(
    recording: Recording, speed: float
) -> None:
    proc, url = _serve(
        recording,
        "--from",
        str(recording.start),
        "--to",
        str(recording.end),
        "--speed",
        str(speed),
        "--settle",
        "1",
        "--close-at-end",
    )
    received: list[tuple[float, dict[str, Any]]] = []
    try:
        with connect(url, additional_headers={"key": "any"}) as ws:
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
        if recorder.status().subscribed and not pushed:
            pushed.append(sim.run(sim.sim.push([a, b, a])))

    pushed: list[None] = []
    run_recorder(config, during=push, until=lambda r: r.status().frames[Stream.DEPTH] >= 3)
    db = tmp_path / "ticks.sqlite"
    assert rows(db, "SELECT bid_px, n FROM depth WHERE ts = ? ORDER BY recv_ts", second * NS) == [
        (10.0, 0),
        (10.01, 0),
        (10.0, 1),
    ]
    replayed = [protocol.push_frame(r) for r in replay(db, second * NS, (second + 1) * NS)]
    assert [float(f["b"][0]["p"]) for f in replayed] == [10.0, 10.01, 10.0]


def test_the_archive_replays_the_same_frames_as_the_database(
    recording: Recording, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    span = ("--from", str(recording.start), "--to", str(recording.end + 2 * 86400))
    export = [sys.executable, "-m", "recorder", "export", "--source", str(recording.db), *span]
    refused = subprocess.run([*export, "--out", str(archive)], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "is still being recorded" in refused.stderr and "--partial" in refused.stderr
    done = subprocess.run(
        [*export, "--out", str(archive), "--partial"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    from_db, from_archive = (
        _cli("--source", str(recording.db), *span),
        _cli("--source", str(archive), *span),
    )
    assert from_db.returncode == from_archive.returncode == 0, from_archive.stderr
    lines = [json.loads(line) for line in from_db.stdout.splitlines()]
    assert [f for f in lines if f["tp"] != "K"] == [f for f in recording.sent if f["tp"] != "K"]
    assert from_archive.stdout == from_db.stdout  # string for string
    # --serve plays the archive too
    proc, url = _serve(
        recording, *span, "--speed", "max", "--settle", "0.5", "--close-at-end", source=archive
    )
    served: list[str] = []
    try:
        with connect(url, additional_headers={"key": "any"}) as ws:
            ws.send(json.dumps({"type": "T", "codes": CODES}))
            with pytest.raises(ConnectionClosed):
                while True:
                    text = ws.recv(timeout=30)
                    if '"tp"' in str(text):
                        served.append(str(text))
    finally:
        proc.terminate()
        proc.wait(10)
    trades = [line for line in from_db.stdout.splitlines() if json.loads(line)["tp"] == "T"]
    assert [json.loads(f) for f in served] == [json.loads(t) for t in trades] and trades


# --- exact decimals: what was received comes back digit for digit --------------------------


def store_and_replay(sink: Any, source: str, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``sent`` decoded, through the spool's bytes and ``sink``, then replayed as NDJSON."""
    records = [protocol.decode(orjson.dumps(f), 1_700_000_000 * NS + i) for i, f in enumerate(sent)]
    assert all(isinstance(r, protocol.Record) for r in records)
    batch = Batch.from_bytes(Batch.of(records, seq=1).to_bytes())  # type: ignore[arg-type]  # as the spool keeps it
    sink.write(batch)
    end = (sent[-1]["ts"] + 3600) * NS
    return [orjson.loads(line) for line in frames(replay(source, 0, end))]


@settings(max_examples=40, deadline=None)
@given(pushes)
def test_every_decimal_string_comes_back_exactly_from_sqlite(drawn: list[dict[str, Any]]) -> None:
    sent = exact_frames(drawn)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ticks.sqlite"
        sink = SQLiteSink(db)
        try:
            got = store_and_replay(sink, str(db), sent)
        finally:
            sink.close()
    # string for string: "212.30" stays "212.30", "147479220.1710000038" keeps its digits
    assert canonical(got) == canonical(sent)


# --- the replay server reads in a thread (#17 item 5) ------------------------------------


def _trades(n: int, fail_at: int | None = None) -> Iterator[Trade]:
    for i in range(n):
        if i == fail_at:
            raise ConfigError(f"source broke at {i}")
        yield Trade("US:AAPL", i * NS, 1.0, float(i), 1, i)


async def _drain(records: Any, limit: int | None = None) -> list[Any]:
    got = []
    async for record in records:
        got.append(record)
        if limit is not None and len(got) >= limit:
            break
    return got


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 700), st.integers(1, 4))
def test_read_in_thread_hands_over_every_record_in_order(n: int, chunk: int, ahead: int) -> None:
    got = asyncio.run(_drain(read_in_thread(lambda: _trades(n), chunk, ahead)))
    assert [r.size for r in got] == list(range(n))


def test_a_read_error_reaches_the_consumer_after_the_records_before_it() -> None:
    got: list[Any] = []

    async def main() -> None:
        async for record in read_in_thread(lambda: _trades(100, fail_at=70), chunk=16):
            got.append(record)

    with pytest.raises(ConfigError, match="source broke at 70"):
        asyncio.run(main())
    assert len(got) == 64  # four whole chunks; the fifth was cut by the error


def test_a_blocked_read_leaves_the_loop_free_and_a_consumer_gone_stops_the_thread() -> None:
    blocked, release = threading.Event(), threading.Event()

    def slow() -> Iterator[Trade]:
        yield from _trades(5)
        blocked.set()
        release.wait(30)  # a source that blocks (a stalled QuestDB, a slow disk)
        yield from _trades(5)

    async def other_work() -> str:
        return "done"

    async def main() -> list[Any]:
        reading = asyncio.create_task(_drain(read_in_thread(slow, chunk=5), limit=7))
        assert await asyncio.to_thread(blocked.wait, 10)  # the read blocks now ...
        # ... and the loop still runs other work to the end meanwhile
        assert await asyncio.create_task(other_work()) == "done" and not reading.done()
        release.set()
        return await reading

    assert len(asyncio.run(main())) == 7  # the consumer stopped early ...

    def reader_gone() -> bool:
        return all(t.name != "replay-reader" for t in threading.enumerate())

    assert wait_for(reader_gone, timeout=10)  # ... and so did the reader
