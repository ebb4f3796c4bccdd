"""The QuestDB paths against the real server (#18): every pinned version for the paths, the
newest for the faults. Rows are written through the sink as the writer writes them."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from conftest import make_config, qdb_wait, run_recorder, wait_for
from hypothesis import given, settings
from prometheus_client import generate_latest
from shapes import canonical, exact_frames, pushes
from simulated import SimulatorThread
from truth import check_trades

from recorder.batching import Batch
from recorder.config import Config
from recorder.daemon import Recorder
from recorder.exceptions import SinkError
from recorder.protocol import NS, Record, Stream, decode
from recorder.replay import frames, replay
from recorder.schema import Row
from recorder.sim.questdb import QuestDB
from recorder.sinks.questdb import QuestDBSink
from recorder.store import open_source

SimFactory = Callable[..., SimulatorThread]
DAY0 = 1_767_225_600 * NS  # 2026-01-01, a midnight
CODES = ("US:AAPL", "HK:700")


def _trades(seconds: range, source: str = "live") -> list[Row]:
    """Two trades a second per code; the second one a tie of the first (k = 1)."""
    out: list[Row] = []
    for second in seconds:
        for code in CODES:
            ts = DAY0 + second * 3600 * NS  # an hour apart: three days in 72 of them
            for k in (0, 1):
                out.append((ts, code, code[:2], 10.25, 1.0, 1, k, source, ts + 5))
    return out


def _applied(server: QuestDB, table: str) -> bool:
    """Every transaction the server took for ``table`` is applied (WAL)."""
    got = server.rows(
        f"SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = '{table}'"
    )
    return bool(got) and got[0][0] == got[0][1] and not got[0][2]


def _count(server: QuestDB, table: str) -> int:
    return int(server.rows(f"SELECT count() FROM {table}")[0][0])


def _settled(server: QuestDB, table: str, want: int, timeout: float = 30) -> int:
    """The row count of ``table`` once it reaches ``want`` with every transaction applied
    (or the count when ``timeout`` passes): a later extra row would have to be in a
    transaction still pending, and none is."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            count = _count(server, table)
            if count >= want and _applied(server, table):
                return _count(server, table)
        except ValueError:  # not created yet
            count = 0
        if time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def _into(
    server: QuestDB, sim: SimulatorThread, tmp: Path, codes: list[str], **sections: Any
) -> Config:
    """A config recording ``codes`` of ``sim`` into ``server``."""
    return make_config(
        sim, tmp, codes, sink={"kind": "questdb", "questdb": server.conf}, **sections
    )


def _sink(server: QuestDB, transport: str) -> QuestDBSink:
    if transport == "tcp":
        return QuestDBSink(server.tcp_conf, http=server.url)
    return QuestDBSink(server.conf)


@pytest.mark.parametrize("transport", ["http", "tcp"])
def test_resent_segments_and_an_overlapping_backfill_are_stored_once(
    questdb: QuestDB, transport: str
) -> None:
    sink = _sink(questdb, transport)
    live = _trades(range(0, 48))
    backfill = _trades(range(40, 72), source="rest")  # 8 hours overlap the live rows
    try:
        sink.write(Batch({"trades": live}, seq=1))
        sink.write(Batch({"trades": live}, seq=1))  # the spool segment sent again
        sink.write(Batch({"trades": backfill}, seq=2))
    finally:
        sink.close()
    want = len(_trades(range(0, 72)))
    assert _settled(questdb, "trades", want) == want
    # the overlap holds one row per identity, the later write's (the upsert keeps the last)
    got = questdb.rows(
        "SELECT source, count() FROM trades GROUP BY source ORDER BY source",
    )
    assert got == [["live", len(_trades(range(0, 40)))], ["rest", len(backfill)]]


def _gap(status: str, end: int | None, backfilled: int) -> Row:
    start = DAY0 + 100 * NS
    return (start, end, "US:AAPL", "US", "trades", "disconnect", start, backfilled, 3.0,
            "trades", status, None, 2.5, 1)  # fmt: skip


def test_the_gaps_ledger_instruments_and_retention_on_the_real_server(
    questdb: QuestDB,
) -> None:
    sink = QuestDBSink(questdb.conf)
    try:
        # one gap opened, closed, then backfilled: one row, its last state
        sink.write(Batch({"gaps": [_gap("open", None, 0)]}, seq=1))
        sink.write(Batch({"gaps": [_gap("closed", DAY0 + 200 * NS, 0)]}, seq=2))
        sink.write(Batch({"gaps": [_gap("filled", DAY0 + 200 * NS, 3)]}, seq=3))
        instruments = [
            (DAY0, "US:AAPL", "US", "NASDAQ", "USD", None, "Apple", 1, 0, 0, 0.0, 0.0, 0.0,
             None, None, None, DAY0),
            (DAY0, "US:AAPL", "US", "NASDAQ", "USD", None, "Apple Inc", 1, 0, 0, 0.0, 0.0, 0.0,
             None, None, None, DAY0 + 1),
        ]  # fmt: skip
        sink.write(Batch({"instruments": instruments, "trades": _trades(range(0, 72))}, seq=4))
        assert _settled(questdb, "gaps", 1) == 1
        got = questdb.rows("SELECT status, backfilled, cast(end_ts AS LONG) FROM gaps")
        assert got == [["filled", 3, (DAY0 + 200 * NS) // 1000]]
        assert sink.open_gaps() == []
        assert _settled(questdb, "instruments", 1) == 1
        assert questdb.rows("SELECT name_en FROM instruments") == [["Apple Inc"]]
        # retention: the two oldest day partitions go, the third stays whole
        assert _settled(questdb, "trades", 288) == 288
        sink.expire("trades", DAY0 + 2 * 86400 * NS)
        assert qdb_wait(questdb, "SELECT count() FROM trades", lambda r: r == [[96]]) == [[96]]
        first = questdb.rows("SELECT cast(min(ts) AS LONG) FROM trades")[0][0]
        assert first == (DAY0 + 48 * 3600 * NS) // 1000
    finally:
        sink.close()


def test_ws_needs_a_server_with_qwp(questdb_newest: QuestDB) -> None:
    """No pinned release has the QWP WebSocket endpoint yet: ``ws::`` is one clear line."""
    sink = QuestDBSink(f"ws::addr={questdb_newest.http};")
    with pytest.raises(SinkError, match=r"questdb: cannot connect: .*404"):
        sink.open()


# --- faults of the real server (newest pinned version) -----------------------------------


def _record_through(
    make_sim: SimFactory,
    tmp_path: Path,
    server: QuestDB,
    fault: Callable[[], None],
    after: float,
) -> tuple[Recorder, list[dict[str, Any]], float]:
    """Record trades into ``server``; ``after`` seconds in, ``fault`` runs in a thread.
    Short client timeouts (2 s per request, 1 s of retries) so a fault outlasts them."""
    sim = make_sim(trades_per_second=30, seed=8)
    conf = f"http::addr={server.http};request_timeout=2000;retry_timeout=1000;"
    config = make_config(sim, tmp_path, list(CODES), sink={"kind": "questdb", "questdb": conf})
    fired: list[threading.Thread] = []
    began = time.monotonic()

    def during(recorder: Recorder, elapsed: float) -> None:
        if elapsed >= after and not fired:
            fired.append(threading.Thread(target=fault, daemon=True))
            fired[0].start()

    def until(recorder: Recorder) -> bool:
        return (
            bool(fired)
            and not fired[0].is_alive()
            and recorder.status().sink_healthy
            and recorder.status().spool_segments == 0
            and recorder.status().frames[Stream.TRADES] > 0
        )

    recorder = run_recorder(config, until=until, during=during, timeout=90)
    took = time.monotonic() - began
    sent = sim.call(lambda: list(sim.sim.sent_frames("T")))
    return recorder, sent, took


def _stored_trades(server: QuestDB, want: int) -> list[tuple[Any, ...]]:
    _settled(server, "trades", want, timeout=60)
    return [
        tuple(r)
        for r in server.rows(
            "SELECT code, cast(ts AS LONG) * 1000, price, size, side, k FROM trades"
        )
    ]


def test_a_server_stalled_longer_than_the_client_timeouts_loses_nothing(
    make_sim: SimFactory, tmp_path: Path, questdb_newest: QuestDB
) -> None:
    server = questdb_newest

    def stall() -> None:
        server.pause()
        time.sleep(6)  # the fault itself: three request timeouts of the client
        server.resume()

    recorder, sent, _ = _record_through(make_sim, tmp_path, server, stall, after=2)
    assert recorder.status().sink_failures > 0  # the stall was felt, and spooled
    stored = _stored_trades(server, len(sent))
    check_trades(stored, sent)
    print(f"stalled 6 s: {len(stored)} of {len(sent)} trades, each once")


@pytest.mark.parametrize("how", ["kill -9", "clean stop"])
def test_a_server_stopped_and_restarted_loses_nothing(
    make_sim: SimFactory, tmp_path: Path, questdb_newest: QuestDB, how: str
) -> None:
    server = questdb_newest

    def crash() -> None:
        if how == "kill -9":
            server.kill()
        else:
            server.stop()
        time.sleep(3)  # the fault itself: the server stays down a while
        server.start()

    recorder, sent, _ = _record_through(make_sim, tmp_path, server, crash, after=2)
    assert recorder.status().sink_failures > 0
    stored = _stored_trades(server, len(sent))
    check_trades(stored, sent)
    print(f"{how} and restart: {len(stored)} of {len(sent)} trades, each once")


_WAL = "SELECT name, suspended, writerTxn, sequencerTxn, errorTag FROM wal_tables()"


def test_a_suspended_wal_table_is_reported_and_its_rows_applied_once_resumed(
    make_sim: SimFactory, tmp_path: Path, questdb_newest: QuestDB
) -> None:
    server = questdb_newest
    sim = make_sim(trades_per_second=20, seed=9)
    config = make_config(
        sim, tmp_path, list(CODES), sink={"kind": "questdb", "questdb": server.conf}
    )
    seen: dict[str, Any] = {}

    def suspend_then_resume(recorder: Recorder, elapsed: float) -> None:
        if "suspended" not in seen and recorder.status().rows_written.get("depth", 0) > 5:
            server.sql("ALTER TABLE depth SUSPEND WAL WITH 24, 'disk full'")
            seen["suspended"] = elapsed
        status = recorder.status()
        if status.suspended_tables and "health" not in seen:
            seen["health"] = status.health(config.metrics)
            seen["metrics"] = generate_latest(recorder.metrics.registry).decode()
            server.sql("ALTER TABLE depth RESUME WAL")
        if "health" in seen and not status.suspended_tables:
            seen["after"] = status.health(config.metrics)

    with structlog.testing.capture_logs() as logs:
        recorder = run_recorder(
            config, during=suspend_then_resume, until=lambda r: "after" in seen, timeout=60
        )
    assert "health" in seen, (seen, recorder.status().rows_written, server.rows(_WAL))
    ok, summary = seen["health"]
    (reason,) = [r for r in summary["reasons"] if "suspended" in r]
    assert not ok and reason == (
        "QuestDB suspended the WAL of table depth (TOO MANY OPEN FILES: disk full): its rows "
        "are not applied until ALTER TABLE depth RESUME WAL"
    )
    assert summary["suspended_tables"] == {"depth": "TOO MANY OPEN FILES: disk full"}
    assert "qos_sink_tables_suspended 1.0" in seen["metrics"]
    assert [e["table"] for e in logs if e["event"] == "questdb_wal_suspended"] == ["depth"]
    assert not any("suspended" in r for r in seen["after"][1]["reasons"])
    # the rows sent while it was suspended were kept in its WAL and applied on resume
    written = recorder.status().rows_written["depth"]
    assert _settled(server, "depth", written) == written


def _questdb_cookbook() -> list[str]:
    """The README's ```sql blocks after its DDL: the QuestDB query cookbook."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    return [b for b in re.findall(r"```sql\n(.*?)```", text, flags=re.S) if "SELECT" in b[:10]]


def test_every_questdb_query_of_the_readme_returns_rows_of_a_recorded_day(
    make_sim: SimFactory, tmp_path: Path, questdb: QuestDB
) -> None:
    sim = make_sim(trades_per_second=10, seed=4, market_hours=False)
    codes = ["US:AAPL", "HK:700", "CF:BTCUSDT"]
    subscribe = {"klines": ["CF:BTCUSDT"], "kline_types": [1]}
    config = _into(questdb, sim, tmp_path, codes, subscribe=subscribe)
    tables = ("trades", "depth", "klines", "instruments", "snapshots")

    def recorded(r: Recorder) -> bool:
        return all(r.status().rows_written.get(t, 0) > 0 for t in tables)

    run_recorder(config, until=recorded, timeout=40)
    # a second run: the time it was away is a gap, written once found
    run_recorder(config, until=lambda r: r.status().rows_written.get("gaps", 0) > 0, timeout=40)
    for table in (*tables, "gaps"):
        assert _settled(questdb, table, 1) > 0, table
    day = questdb.rows("SELECT to_str(min(ts), 'yyyy-MM-dd') FROM trades")[0][0]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    blocks = _questdb_cookbook()
    assert len(blocks) >= 9
    for block in blocks:
        sql = block.replace("2026-11-26T14:30:00.000000Z", now).replace("2026-11-26", day)
        assert questdb.rows(sql.strip().rstrip(";")), sql
    # the gaps and coverage commands read the same server
    cli = [sys.executable, "-m", "recorder"]
    gaps = subprocess.run([*cli, "gaps", "--source", questdb.url], capture_output=True, text=True)
    assert gaps.returncode == 0, gaps.stderr
    stored_gaps = questdb.rows("SELECT code, stream FROM gaps")
    assert all(code in gaps.stdout for code, _ in stored_gaps), gaps.stdout
    html = tmp_path / "coverage.html"
    cov = subprocess.run(
        [*cli, "coverage", "--source", questdb.url, "--day", day, "--out", str(html)],
        capture_output=True,
        text=True,
    )
    assert cov.returncode == 0, cov.stderr
    page = html.read_text()
    assert all(code in page for code in codes)


def test_a_batch_the_server_refuses_for_good_is_rejected_not_retried(
    questdb: QuestDB,
) -> None:
    from recorder.exceptions import SinkRejected

    sink = QuestDBSink(questdb.conf)
    good = _trades(range(0, 2))
    bad = [(*good[0][:3], "not a price", *good[0][4:])]  # a string into the DOUBLE column
    try:
        with pytest.raises(
            SinkRejected, match=r"questdb: batch refused: .*column: price; cast error"
        ):
            sink.write(Batch({"trades": bad}, seq=1))
        sink.write(Batch({"trades": good}, seq=2))  # the next batch goes in as before
    finally:
        sink.close()
    assert _settled(questdb, "trades", len(good)) == len(good)


# --- exact decimals from the real server (#19 item 1) ----------------------------------------

#: decimal strings of every shape the API uses, in every numeric field of every stream
SHAPES = ("0.025", "212.30", "147479220.1710000038", "0", "100", "1.25", "0.00001000")


def _shaped_frames() -> list[dict[str, Any]]:
    base = 1_700_000_040
    out: list[dict[str, Any]] = []
    for i, x in enumerate(SHAPES):
        y = SHAPES[(i + 3) % len(SHAPES)]
        quote = {"lp": x, "yp": y, "h": x, "l": y, "ts": base, "v": y, "t": x}
        out += [
            {"tp": "T", "c": "US:AAPL", "p": x, "v": y, "ts": base + i, "d": 1},
            {"tp": "D", "c": "US:AAPL", "b": [{"p": x, "v": y}], "a": [{"p": y, "v": x}]}
            | {"ts": base + i},
            {"tp": "S", "c": "US:AAPL", "lp": x, "yp": y, "o": x, "h": y, "l": x, "v": y}
            | {"t": x, "s": 0, "tt": 1, "pq": quote, "ts": base + i},
            {"tp": "K", "c": "US:AAPL", "o": x, "cl": y, "h": x, "l": y, "v": x, "kt": 1}
            | {"ts": base + 60 * (i + 1)},
        ]
    return out


def _canonical(frames: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(f, option=orjson.OPT_SORT_KEYS) for f in frames)


def _replayed(source: str, start: int, end: int) -> list[dict[str, Any]]:
    span = ("--from", str(start), "--to", str(end))
    got = subprocess.run(
        [sys.executable, "-m", "recorder", "replay", "--source", source, *span],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    return [orjson.loads(line) for line in got.stdout.splitlines()]


@pytest.mark.parametrize("transport", ["http", "tcp"])
def test_every_decimal_string_comes_back_exactly_from_the_real_server(
    questdb: QuestDB, transport: str
) -> None:
    sent = _shaped_frames()
    records = [decode(orjson.dumps(f), 1_700_000_000 * NS + i) for i, f in enumerate(sent)]
    assert all(isinstance(r, Record) for r in records)
    batch = Batch.from_bytes(Batch.of(records, seq=1).to_bytes())  # type: ignore[arg-type]
    sink = _sink(questdb, transport)
    try:
        sink.write(batch)
    finally:
        sink.close()
    for table in ("trades", "depth", "snapshots", "klines"):
        assert _settled(questdb, table, len(SHAPES)) == len(SHAPES), table
    got = _replayed(questdb.url, 1_700_000_000, 1_700_001_000)
    # string for string: "212.30" stays "212.30", "147479220.1710000038" keeps its digits
    assert _canonical(got) == _canonical(sent)


def _code(n: int) -> str:
    """A crypto code of its own for the ``n``-th example (CF:EAAUSDT, CF:EABUSDT, ...)."""
    return f"CF:E{chr(65 + n // 26 % 26)}{chr(65 + n % 26)}USDT"


def test_any_decimal_strings_come_back_exactly_from_the_real_server(
    questdb_newest: QuestDB,
) -> None:
    """Hypothesis draws, each under a code of its own, through decode, the spool's bytes,
    the real server and replay."""
    examples = iter(range(10_000))

    @settings(max_examples=12, deadline=None)
    @given(pushes)
    def round_trip(drawn: list[dict[str, Any]]) -> None:
        code = _code(next(examples))
        sent = exact_frames(drawn, code)
        records = [decode(orjson.dumps(f), 1_700_000_000 * NS + i) for i, f in enumerate(sent)]
        batch = Batch.from_bytes(Batch.of(records, seq=1).to_bytes())  # type: ignore[arg-type]
        sink = QuestDBSink(questdb_newest.conf)
        try:
            sink.write(batch)
        finally:
            sink.close()
        reader = open_source(questdb_newest.url)
        want = {s.value: sum(f["tp"] == s.tp for f in sent) for s in Stream}

        def stored() -> dict[str, int]:
            return {t: reader.count(t, code, 0, 2**62) if want[t] else 0 for t in want}

        assert wait_for(lambda: stored() == want, timeout=30), (stored(), want)
        end = (sent[-1]["ts"] + 3600) * NS
        got = [orjson.loads(line) for line in frames(replay(reader, 0, end, codes=[code]))]
        assert canonical(got) == canonical(sent)

    round_trip()


def test_a_recording_replays_from_the_real_server_string_for_string(
    make_sim: SimFactory, tmp_path: Path, questdb: QuestDB
) -> None:
    sim = make_sim(trades_per_second=10, seed=19, market_hours=False)
    codes = ["US:AAPL", "HK:700", "CF:ETHUSDT"]
    # no backfill: the store then holds exactly the live stream
    subscribe = {"klines": ["CF:ETHUSDT"], "kline_types": [1]}
    config = _into(questdb, sim, tmp_path, codes, gaps={"backfill": False}, subscribe=subscribe)
    recorder = run_recorder(
        config,
        until=lambda r: (
            r.status().frames[Stream.TRADES] >= 120 and r.status().frames[Stream.KLINES] >= 5
        ),
        timeout=40,
    )
    received = sum(recorder.status().frames.values())
    sent = sim.call(lambda: list(sim.sim.sent_frames()))[:received]
    assert recorder.status().decode_errors == 0 and len(sent) == received
    for table, tps in (
        ("trades", "T"),
        ("depth", "D"),
        ("snapshots", "S"),
        ("kline_updates", "K"),
    ):
        want = sum(f["tp"] in tps for f in sent)
        assert _settled(questdb, table, want) == want, table
    first = min(f["ts"] for f in sent if f["tp"] != "K")  # a K push's ts is its bar's open
    got = _replayed(questdb.url, first - 1, int(time.time()) + 1)
    # every update with the strings it was pushed with, in the order it was pushed; the
    # K-line pushes too, each as it came (the forming bar)
    assert [f for f in got if f["tp"] != "K"] == [f for f in sent if f["tp"] != "K"]
    assert [f for f in got if f["tp"] == "K"] == [f for f in sent if f["tp"] == "K"]
