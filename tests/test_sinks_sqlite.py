"""The SQLite sink: a database an earlier version made is brought up to date, and rows it
spooled still drain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
from conftest import rows

from recorder.batching import Batch
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
