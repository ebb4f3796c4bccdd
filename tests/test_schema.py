"""Every DDL statement and SQL example we ship, checked with QuestDB's own grammar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from recorder.protocol import NS, Depth, Kline, SessionQuote, Snapshot, Trade
from recorder.schema import TABLES, depth_row, kline_row, record_of, snapshot_row, trade_row
from recorder.sinks.questdb import after_sql, anchor_sql, drop_partitions_sql
from recorder.store import questdb as store_questdb

ROOT = Path(__file__).parent.parent
CHECKER = ROOT / "tests" / "sqlcheck"


def _readme_sql() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    statements = [s.strip() + ";" for block in blocks for s in block.split(";") if s.strip()]
    return [s for s in statements if not s.startswith("--") or "\n" in s]


def _check(statements: list[str]) -> list[dict[str, object]]:
    if shutil.which("node") is None:
        pytest.fail("node is needed to check SQL with @questdb/sql-parser")
    if not (CHECKER / "node_modules" / "@questdb" / "sql-parser").is_dir():
        pytest.fail("@questdb/sql-parser is not installed: run ./scripts/test (it installs it)")
    out = subprocess.run(
        ["node", str(CHECKER / "check.cjs")],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[dict[str, object]] = json.loads(out.stdout)
    return result


def test_the_checker_rejects_bad_sql() -> None:
    (result,) = _check(["SELECT FROM WHERE trades (("])
    assert result["errors"]


def test_ddl_and_readme_sql_parse_with_questdb_grammar() -> None:
    migrations = [s for t in TABLES for s in t.questdb_migrations()]
    # depth n + keys; snapshots n, dp, digits + keys; trades and klines dp, digits; gaps' two
    assert len(migrations) == 12
    queries = [
        anchor_sql("US:AAPL"),
        after_sql("US:AAPL", 1_795_618_800_000_000, 17),
        drop_partitions_sql("depth", 1_795_618_800 * NS),
        *store_questdb.statements(),  # every statement the QuestDB reader sends
    ]
    statements = [t.questdb_ddl() for t in TABLES] + migrations + queries + _readme_sql()
    assert len(statements) >= len(TABLES) + 8
    for result in _check(statements):
        assert result["errors"] == [] and result["statements"] == 1, result


def test_readme_ships_the_exact_ddl() -> None:
    readme = (ROOT / "README.md").read_text()
    for table in TABLES:
        assert table.questdb_ddl() in readme, f"README DDL for {table.name} is stale"


def test_every_table_has_a_designated_timestamp_and_dedup_keys() -> None:
    for table in TABLES:
        ddl = table.questdb_ddl()
        assert "TIMESTAMP(ts) PARTITION BY DAY WAL" in ddl and "DEDUP UPSERT KEYS(ts," in ddl
        assert table.columns[0] == ("ts", "ts")
        assert set(table.keys) <= set(table.names)


def test_rows_turn_back_into_the_same_records() -> None:
    records = [
        Trade("US:AAPL", 5, 1.5, 100.0, 2, 9, 3, "backfill", ("1.50", "100")),
        Depth(
            "HK:700",
            5,
            ((1.0, 2.0), (0.9, 3.0)),
            ((1.1, 4.0),),
            9,
            bid_text=(("1.0", "2"), ("0.90", "3")),
            ask_text=(("1.1", "4"),),
        ),
        Snapshot(
            "US:AAPL",
            5,
            1.0,
            2.0,
            3.0,
            4.0,
            0.5,
            10.0,
            20.0,
            0,
            3,
            9,
            {
                "pq": SessionQuote(
                    1.0, 2.0, 3.0, 0.5, 4, 5.0, 6.0, ("1", "2", "3", "0.5", "5", "6.0")
                )
            },
            text=("1.0", "2", "3.00", "4", "0.5", "10", "20.000000000000000001"),
        ),
        Kline("CF:BTCUSDT", 1001, 5, 1.0, 2.0, 3.0, 0.5, 7.0, 9, text=("1", "2", "3", "0.5", "7")),
    ]
    for record, (table, row_of) in zip(
        records,
        [
            ("trades", trade_row),
            ("depth", depth_row),
            ("snapshots", snapshot_row),
            ("klines", kline_row),
        ],
        strict=True,
    ):
        assert record_of(table, row_of(record)) == record  # type: ignore[operator]
