"""The SQLite sink: a database an earlier version made is brought up to date, and rows it
spooled still drain (and replay, in the shortest decimal form they can still give)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import make_config, rows, run_recorder
from simulated import SimulatorThread
from truth import trade_key

from recorder.batching import Batch
from recorder.daemon import Recorder
from recorder.exceptions import SinkReplaced
from recorder.protocol import NS, Stream, Trade, decode
from recorder.replay import frames, replay
from recorder.schema import DEPTH
from recorder.sinks.sqlite import SQLiteSink

# depth as the first release made it: no n, and a key without it
OLD_DEPTH = [
    "CREATE TABLE depth (ts INTEGER NOT NULL, code TEXT, market TEXT, bid_px REAL, bid_sz REAL, "
    "ask_px REAL, ask_sz REAL, levels INTEGER, bids TEXT, asks TEXT, source TEXT, recv_ts INTEGER)",
    "CREATE UNIQUE INDEX depth_key ON depth (code, ts, bids, asks)",
]
OLD_ROW = (5, "HK:700", "HK", 1.0, 2.0, 1.1, 3.0, 1, "[[1.0,2.0]]", "[[1.1,3.0]]", "live", 9)


def test_an_old_database_gets_the_new_columns_and_keys(tmp_path: Path) -> None:
    db = tmp_path / "ticks.sqlite"
    con = sqlite3.connect(db)
    for statement in OLD_DEPTH:
        con.execute(statement)
    con.execute(f"INSERT INTO depth VALUES ({', '.join('?' * len(OLD_ROW))})", OLD_ROW)
    con.commit()
    con.close()
    sink = SQLiteSink(db)
    sink.open()
    # the same book again in the same second, as the second identical update (n = 1)
    sink.write(Batch({"depth": [(*OLD_ROW[:-1], 10, 1)]}, seq=1))
    sink.write(Batch({"depth": [(*OLD_ROW[:-1], 11, 1)]}, seq=2))  # re-sent: no new row
    sink.close()
    assert rows(db, "SELECT recv_ts, n FROM depth ORDER BY recv_ts") == [(9, 0), (10, 1)]
    (key,) = rows(db, "SELECT sql FROM sqlite_master WHERE name = 'depth_key'")
    assert "n)" in key[0]


def test_rows_an_earlier_version_spooled_are_padded(tmp_path: Path) -> None:
    spooled = orjson.dumps({"seq": 3, "tables": {"depth": [list(OLD_ROW)]}})
    batch = Batch.from_bytes(spooled)
    (row,) = batch.tables["depth"]
    assert len(row) == len(DEPTH.columns) and row[-1] == 0
    sink = SQLiteSink(tmp_path / "ticks.sqlite")
    sink.write(batch)
    sink.close()
    assert rows(tmp_path / "ticks.sqlite", "SELECT code, n FROM depth") == [("HK:700", 0)]


# --- #21 item 6: the file deleted or replaced while recording --------------------------------


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_a_file_deleted_or_renamed_while_recording_is_noticed_and_a_new_one_written(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path, how: str
) -> None:
    sim = make_sim(trades_per_second=40, seed=61)
    config = make_config(sim, tmp_path, ["US:AAPL", "HK:700"], subscribe={"depth": []})
    db = tmp_path / "ticks.sqlite"
    pulled: list[int] = []  # trades received when the file went
    summaries: list[dict[str, Any]] = []

    def pull_the_file(recorder: Recorder, elapsed: float) -> None:
        if not pulled and recorder.status().batches_written > 5:
            if how == "renamed":
                db.rename(tmp_path / "moved.sqlite")
            else:
                db.unlink()
            pulled.append(recorder.status().frames[Stream.TRADES])
        summaries.append(recorder.status().health(config.metrics)[1])

    def recovered(recorder: Recorder) -> bool:
        trades = recorder.status().frames[Stream.TRADES]
        return bool(pulled) and trades > pulled[0] + 100 and not recorder.status().spool_segments

    recorder = run_recorder(config, during=pull_the_file, until=recovered, timeout=60)
    assert recovered(recorder)
    assert recorder.status().sink_replaced == 1
    assert summaries[-1]["sink_file_replaced"] == 1
    # every trade received after the file went is in the new file, none twice
    stored = rows(db, "SELECT code, ts, price, size, side, k FROM trades")
    assert len(stored) == len(set(stored))
    received = recorder.status().frames[Stream.TRADES]
    sent = sim.call(lambda: sim.sim.sent_frames("T"))[:received]
    seen: Counter[tuple[Any, ...]] = Counter()
    after = set()
    for i, frame in enumerate(sent):
        key = trade_key(frame)
        if i >= pulled[0]:
            after.add((*key, seen[key]))
        seen[key] += 1
    assert len(after) == received - pulled[0] >= 100
    assert after <= set(stored)


def test_the_sink_refuses_to_acknowledge_a_batch_written_into_a_deleted_file(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ticks.sqlite"
    sink = SQLiteSink(db)
    trade = (1741960243 * NS, "US:AAPL", "US", 1.0, 1.0, 1, 0, "live", 7)
    sink.write(Batch({"trades": [trade]}, 1))
    db.unlink()
    with pytest.raises(SinkReplaced, match="the file was deleted while recording"):
        sink.write(Batch({"trades": [trade]}, 2))
    sink.write(Batch({"trades": [trade]}, 2))  # the next write opens the path anew
    sink.close()
    assert rows(db, "SELECT count(*) FROM trades") == [(1,)]


# trades, snapshots and klines as the release before #19 made them: no dp, no digits
OLD_TABLES = [
    "CREATE TABLE trades (ts INTEGER NOT NULL, code TEXT, market TEXT, price REAL, size REAL, "
    "side INTEGER, k INTEGER, source TEXT, recv_ts INTEGER)",
    "CREATE UNIQUE INDEX trades_key ON trades (code, ts, price, size, side, k)",
    "CREATE TABLE klines (ts INTEGER NOT NULL, code TEXT, market TEXT, kt INTEGER, open REAL, "
    "close REAL, high REAL, low REAL, volume REAL, source TEXT, recv_ts INTEGER)",
    "CREATE UNIQUE INDEX klines_key ON klines (code, ts, kt)",
]
OLD_TRADE = (5 * NS, "CF:ETHUSDT", "CF", 2.5, 0.025, 1, 0, "live", 9)
OLD_BAR = (60 * NS, "CF:ETHUSDT", "CF", 1, 2.5, 2.5, 2.5, 2.5, 0.025, "live", 9)
OLD_SNAPSHOT = (
    *(5 * NS, "US:AAPL", "US", 1.5, 1.4, 1.3, 1.6, 1.2, 100.0, 150.0, 0, 3),
    *('{"pq":[1.5,1.4,1.6,1.2,0,10.0,15.0]}', "live", 9),  # and no n
)


def test_rows_from_before_exact_decimals_drain_and_replay_in_the_shortest_form(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ticks.sqlite"
    con = sqlite3.connect(db)
    for statement in OLD_TABLES:
        con.execute(statement)
    con.execute(f"INSERT INTO trades VALUES ({', '.join('?' * len(OLD_TRADE))})", OLD_TRADE)
    con.commit()
    con.close()
    spooled = orjson.dumps(
        {
            "seq": 3,
            "tables": {
                "klines": [list(OLD_BAR)],
                "snapshots": [list(OLD_SNAPSHOT)],
                "depth": [list(OLD_ROW)],
            },
        }
    )
    sink = SQLiteSink(db)
    sink.write(Batch.from_bytes(spooled))
    # a new trade of the same second, with its strings
    new = decode(b'{"tp":"T","c":"CF:ETHUSDT","p":"2.50","v":"0.0250","ts":5,"d":1}', 10)
    assert isinstance(new, Trade)
    new.k = 1
    sink.write(Batch.of([new], seq=4))
    sink.close()
    assert rows(db, "SELECT k, dp, digits FROM trades ORDER BY k") == [
        (0, None, None),
        (1, 2 + (4 << 5), None),
    ]
    got = [orjson.loads(line) for line in frames(replay(db, 0, 180 * NS))]
    # old rows: numbers in the shortest form of their doubles; the JSON of old books and
    # extended quotes in the digits its doubles were written with
    assert got == [
        {
            "tp": "D",
            "c": "HK:700",
            "b": [{"p": "1.0", "v": "2.0"}],
            "a": [{"p": "1.1", "v": "3.0"}],
            "ts": 0,
        },
        {"tp": "T", "c": "CF:ETHUSDT", "p": "2.5", "v": "0.025", "ts": 5, "d": 1},
        {
            "tp": "S",
            "c": "US:AAPL",
            "lp": "1.5",
            "yp": "1.4",
            "o": "1.3",
            "h": "1.6",
            "l": "1.2",
            "ts": 5,
            "v": "100",
            "t": "150",
            "s": 0,
            "tt": 3,
            "pq": {
                "lp": "1.5",
                "yp": "1.4",
                "h": "1.6",
                "l": "1.2",
                "ts": 0,
                "v": "10.0",
                "t": "15.0",
            },
        },
        {"tp": "T", "c": "CF:ETHUSDT", "p": "2.50", "v": "0.0250", "ts": 5, "d": 1},
        {
            "tp": "K",
            "c": "CF:ETHUSDT",
            "o": "2.5",
            "cl": "2.5",
            "h": "2.5",
            "l": "2.5",
            "v": "0.025",
            "ts": 60,
            "kt": 1,
        },
    ]
