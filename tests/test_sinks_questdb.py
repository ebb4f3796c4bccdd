"""The QuestDB sink through the real ``questdb`` client, checked by what it really sends."""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    QuestDBPool,
    make_config,
    qdb_wait,
    run_recorder,
    start_recorder,
    write_config,
)
from simulated import SimulatorThread
from truth import check_trades, last_bars, snapshot_key

from recorder.batching import Batch
from recorder.exceptions import ConfigError, SinkError, SinkIncompatible
from recorder.feed import TRADES
from recorder.gaps import Gap, GapCause, GapUnit
from recorder.protocol import NS, Stream, Trade
from recorder.schema import TABLES, Table, questdb_minimum
from recorder.sim.ilp import IlpServer, parse_ilp
from recorder.sim.questdb import QuestDB
from recorder.sinks.questdb import QuestDBSink, parse_conf

SimFactory = Callable[..., SimulatorThread]
TOO_OLD = "7.4.2"  # VARCHAR dedup keys came in 8.1.1


def _ts(value: Any) -> int:
    assert isinstance(value, tuple) and value[0] == "ts_ns", value
    return int(value[1])


def test_records_from_the_simulator_arrive_row_for_row(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=20, seed=4)
    codes = ["US:AAPL", "CF:BTCUSDT", "HK:700"]
    with IlpServer() as ilp:
        config = make_config(
            sim,
            tmp_path,
            codes,
            sink={"kind": "questdb", "questdb": ilp.conf},
            subscribe={"klines": codes[:1], "kline_types": [1]},
        )
        recorder = run_recorder(
            config, until=lambda r: r.status().frames[Stream.TRADES] >= 200, timeout=30
        )
        state = ilp.state
    # the version first, then the DDL, over /exec, for every table, each followed by the
    # reading of its columns (the stand-in lists none: nothing to migrate)
    ddl = [t.questdb_ddl() for t in TABLES]
    assert state.statements[0] == "SELECT build()"
    assert state.statements[1 : 2 * len(ddl) + 1 : 2] == ddl
    assert all("table_columns" in q for q in state.statements[2 : 2 * len(ddl) + 1 : 2])
    # the recorder received exactly the first frames sent (TCP keeps order)
    sent = sim.call(lambda: list(sim.sim.sent_frames()))[: sum(recorder.status().frames.values())]

    trades = state.table("trades")
    for row in trades:
        assert set(row.symbols) == {"code", "market", "source"}
        assert isinstance(row.fields["price"], float) and isinstance(row.fields["size"], float)
        assert isinstance(row.fields["side"], int) and isinstance(row.fields["k"], int)
        assert isinstance(row.fields["recv_ts"], int) and row.ts is not None
        assert row.ts % NS == 0 and row.symbols["market"] == row.symbols["code"].split(":")[0]
        assert row.fields["recv_ts"] >= row.ts  # received after the exchange second began
    check_trades(
        [
            (
                r.symbols["code"],
                r.ts,
                r.fields["price"],
                r.fields["size"],
                r.fields["side"],
                r.fields["k"],
            )
            for r in trades
        ],
        [f for f in sent if f["tp"] == "T"],
    )

    snaps = state.table("snapshots")
    assert sorted(
        (r.symbols["code"], r.ts, r.fields["volume"], r.fields["last"]) for r in snaps
    ) == sorted(snapshot_key(f) for f in sent if f["tp"] == "S")
    us = next(r for r in snaps if r.symbols["code"] == "US:AAPL")
    assert json.loads(us.fields["extended"])["pq"][0] > 0 and us.fields["session"] == 3

    depth = state.table("depth")
    assert len(depth) == sum(1 for f in sent if f["tp"] == "D")
    for row in depth:
        bids = json.loads(row.fields["bids"])
        assert row.fields["bid_px"] == bids[0][0] and row.fields["levels"] == 5

    bars = last_bars([f for f in sent if f["tp"] == "K"])
    got = {(r.symbols["code"], r.fields["kt"], r.ts): r for r in state.table("klines")}
    for key, frame in bars.items():
        assert got[key].fields["close"] == float(frame["cl"])
    assert recorder.status().lost_rows == 0


def test_symbols_strings_and_timestamps_are_escaped_by_the_client() -> None:
    nasty = 'US:A B,C=D\\"E'
    detail = 'line one\nline "two", three=3 \\ end'
    with IlpServer() as ilp:
        sink = QuestDBSink(ilp.conf)
        sink.open()
        trade = Trade(nasty, 1_741_960_243 * NS, 246.39, 100.0, 1, 1_741_960_243_987_654_321, 2)
        gap = Gap(
            1_741_960_000 * NS,
            1_741_960_100 * NS + 1,
            nasty,
            TRADES,
            GapCause.DISCONNECT,
            1_741_960_200_123_456_789,
            missing=3.5,
            missing_unit=GapUnit.SECONDS,
            detail=detail,
        )
        sink.write(Batch.of([trade], 1))
        sink.write(Batch.of([gap], 2))
        sink.close()
        (t,) = ilp.state.table("trades")
        (g,) = ilp.state.table("gaps")
    assert t.symbols["code"] == nasty and t.ts == trade.ts and t.fields["recv_ts"] == trade.recv_ts
    assert t.fields["k"] == 2
    assert g.symbols["code"] == nasty and g.fields["detail"] == detail
    assert _ts(g.fields["end_ts"]) == gap.end and _ts(g.fields["detected_ts"]) == gap.detected_ts
    assert g.ts == gap.start and g.fields["backfilled"] == 0 and g.fields["missing"] == 3.5


def test_a_failing_database_raises_sink_error_and_recovers() -> None:
    with IlpServer(mode="fail") as ilp:
        sink = QuestDBSink(ilp.conf)
        with pytest.raises(SinkError, match="HTTP 503"):
            sink.open()
        ilp.state.mode = "ok"
        sink.open()
        ilp.state.mode = "fail"
        batch = Batch.of([Trade("US:AAPL", NS, 1.0, 1.0, 1, NS)], 1)
        with pytest.raises(SinkError, match="flush failed"):
            sink.write(batch)
        ilp.state.mode = "ok"
        sink.write(batch)
        assert len(ilp.state.table("trades")) == 1
    with pytest.raises(SinkError):
        QuestDBSink(ilp.conf).open()  # nobody listening any more


def test_conf_strings() -> None:
    assert parse_conf("http::addr=h:9000;username=a;password=b;;c;") == (
        "http",
        {"addr": "h:9000", "username": "a", "password": "b;c"},
    )
    sink = QuestDBSink("ws::addr=db:9000;sf_dir=/var/lib/q;")
    assert sink.store_and_forward and sink.exec_url == "http://db:9000/exec"
    assert QuestDBSink("tcp::addr=db:9009;").exec_url == "http://db:9000/exec"
    assert QuestDBSink("tcp::addr=db:9009;").no_ack
    assert not QuestDBSink("ws::addr=db:9000;").store_and_forward
    with pytest.raises(ConfigError, match="auto_flush"):
        QuestDBSink("http::addr=db:9000;auto_flush=off;")
    with pytest.raises(ConfigError, match="not a client conf string"):
        QuestDBSink("localhost:9000")


def test_ilp_parser_reads_text_and_binary_doubles() -> None:
    text = b'trades,code=US:A\\ B sym="x\\"y",n=3i,f=1.5 1000n\n'
    (row,) = parse_ilp(text)
    assert row.symbols == {"code": "US:A B"} and row.fields == {"sym": 'x"y', "n": 3, "f": 1.5}
    binary = b"t,a=b f==\x10" + struct.pack("<d", 2.5) + b" 5n\n"
    (row,) = parse_ilp(binary)
    assert row.fields["f"] == 2.5 and row.ts == 5


# --- against a real QuestDB (#18) -------------------------------------------------------------


def _since(start_ns: int) -> str:
    return f"ts >= cast({start_ns // 1000 - 5_000_000} AS TIMESTAMP)"


def test_tables_on_an_empty_server_then_every_trade_once(
    make_sim: SimFactory, tmp_path: Path, questdb: QuestDB
) -> None:
    sim = make_sim(trades_per_second=20, seed=21)
    codes = ["US:AAPL", "HK:700"]
    config = make_config(sim, tmp_path, codes, sink={"kind": "questdb", "questdb": questdb.conf})
    start = time.time_ns()
    run_recorder(config, until=lambda r: r.status().frames[Stream.TRADES] >= 200, timeout=30)
    sent = sim.call(lambda: list(sim.sim.sent_frames("T")))
    query = (
        "SELECT code, cast(ts AS LONG) * 1000, price, size, side, k FROM trades "
        f"WHERE {_since(start)}"
    )
    stored = qdb_wait(questdb, query, lambda got: len(got) >= len(sent))
    check_trades([tuple(r) for r in stored], sent)
    # every table as the schema says: designated ts, day partitions, WAL, its dedup keys
    made = {
        name: (ts, part, wal, dedup)
        for name, ts, part, wal, dedup in questdb.rows(
            "SELECT table_name, designatedTimestamp, partitionBy, walEnabled, dedup FROM tables()"
        )
    }
    for table in TABLES:
        assert made[table.name] == ("ts", "DAY", True, True), table.name
        columns = questdb.rows(f"SELECT \"column\", upsertKey FROM table_columns('{table.name}')")
        assert [c for c, _ in columns] == list(table.names)
        assert {c for c, key in columns if key} == set(table.keys)
    # replay reads the same rows back through QuestDB's /exp, in time order
    from recorder.replay import replay

    replayed = list(
        replay(questdb.url, start - 5 * NS, time.time_ns(), codes=codes, streams=["trades"])
    )
    assert all(isinstance(t, Trade) for t in replayed)
    check_trades(
        [(t.code, t.ts, t.price, t.size, t.side, t.k) for t in replayed if isinstance(t, Trade)],
        sent,
    )
    assert [t.ts for t in replayed] == sorted(t.ts for t in replayed)


def _as_first_released(table: Table) -> Table:
    """The table as the release before ``added`` columns made it."""
    return dataclasses.replace(
        table,
        columns=tuple(c for c in table.columns if c[0] not in table.added),
        keys=tuple(k for k in table.keys if k not in table.added),
        added=(),
    )


def test_tables_an_earlier_version_made_gain_the_new_columns_and_keys(
    make_sim: SimFactory, tmp_path: Path, questdb: QuestDB
) -> None:
    old = [_as_first_released(t) for t in TABLES if t.added]
    for table in old:
        questdb.sql(table.questdb_ddl())
    day = time.time_ns() // 1000 - 3_600_000_000
    questdb.sql(
        "INSERT INTO depth (ts, code, market, bids, asks, source) VALUES "
        f"(cast({day} AS TIMESTAMP), 'US:AAPL', 'US', '[[1.0,2.0]]', '[[1.1,3.0]]', 'live')"
    )
    sim = make_sim(trades_per_second=20, seed=5)
    config = make_config(
        sim, tmp_path, ["US:AAPL"], sink={"kind": "questdb", "questdb": questdb.conf}
    )
    run_recorder(config, until=lambda r: r.status().rows_written.get("depth", 0) >= 5, timeout=30)
    for table in TABLES:
        columns = questdb.rows(f"SELECT \"column\", upsertKey FROM table_columns('{table.name}')")
        assert [c for c, _ in columns] == list(table.names), table.name
        assert {c for c, key in columns if key} == set(table.keys), table.name
    # the old row is still there beside the new ones, which carry n
    got = qdb_wait(
        questdb, "SELECT n FROM depth ORDER BY ts", lambda rows: len(rows) >= 6, timeout=20
    )
    assert got[0] == [None] and len(got) >= 6 and all(n == [0] or n[0] > 0 for n in got[1:])


def test_a_server_below_the_minimum_stops_the_recorder_with_one_line(
    sim: SimulatorThread, tmp_path: Path, questdb_pool: QuestDBPool
) -> None:
    old = questdb_pool.get(TOO_OLD)
    conf = write_config(
        tmp_path / "recorder.toml",
        sim,
        f'[subscribe]\ntrades = ["US:AAPL"]\n[sink]\nkind = "questdb"\nquestdb = "{old.conf}"\n'
        f'[spool]\ndir = "{tmp_path / "spool"}"\n',
    )
    proc = start_recorder(conf)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2
    (line,) = [ln for ln in err.decode().splitlines() if ln.strip()]
    need, feature = questdb_minimum()
    assert line == (
        f"qos-recorder: error: questdb at {old.url}/exec: version {TOO_OLD} is below "
        f"{'.'.join(map(str, need))}, the oldest the recorder supports ({feature} need it)"
    )
    assert old.rows("SELECT table_name FROM tables() WHERE table_name = 'trades'") == []


def test_a_ddl_the_server_refuses_is_one_fatal_line_quoting_its_error(
    questdb_newest: QuestDB,
) -> None:
    questdb = questdb_newest
    # a trades table made by hand without partitions, so without WAL: dedup keys cannot be
    # enabled on it
    questdb.sql("CREATE TABLE trades (ts TIMESTAMP, code SYMBOL) TIMESTAMP(ts)")
    with pytest.raises(SinkIncompatible) as refused:
        QuestDBSink(questdb.conf).open()
    message = str(refused.value)
    assert "\n" not in message
    assert re.fullmatch(
        rf"questdb at {re.escape(questdb.url)}/exec: QuestDB refused 'ALTER TABLE trades "
        r"DEDUP ENABLE UPSERT KEYS\(ts, code, price, size, side, k\);': .*WAL.* "
        r"\(position \d+\)",
        message,
    ), message
    # a column of another type: named, not retried
    questdb.drop_all_tables()
    questdb.sql(
        "CREATE TABLE trades (ts TIMESTAMP, price VARCHAR) TIMESTAMP(ts) PARTITION BY DAY WAL"
    )
    with pytest.raises(
        SinkIncompatible, match="column price is VARCHAR, the recorder writes DOUBLE"
    ):
        QuestDBSink(questdb.conf).open()
