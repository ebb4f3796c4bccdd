"""Every DDL statement and SQL example we ship, checked with QuestDB's own grammar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.feed import DEPTH, SNAPSHOTS, TRADES, Feed, Other
from recorder.gaps import Gap, GapCause, GapStatus, GapUnit
from recorder.protocol import KLINE_TYPES, NS, Depth, Kline, SessionQuote, Snapshot, Trade
from recorder.schema import (
    TABLES,
    depth_row,
    gap_of,
    gap_row,
    kline_row,
    record_of,
    snapshot_row,
    trade_row,
)
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


_FEEDS = st.one_of(
    st.sampled_from([TRADES, DEPTH, SNAPSHOTS, Feed.of(Other.INSTRUMENTS), Feed.of(Other.UNKNOWN)]),
    st.sampled_from(sorted(KLINE_TYPES)).map(Feed.klines),
)
_MAYBE_INT = st.none() | st.integers(min_value=0, max_value=2**62)
_MAYBE_FLOAT = st.none() | st.floats(allow_nan=False, allow_infinity=False)
_GAPS = st.builds(
    Gap,
    start=st.integers(min_value=0, max_value=2**62),
    end=_MAYBE_INT,
    code=st.sampled_from(["US:AAPL", "HK:700", "CF:BTCUSDT", "*"]),
    feed=_FEEDS,
    cause=st.sampled_from(GapCause),
    detected_ts=st.integers(min_value=0, max_value=2**62),
    backfilled=st.integers(min_value=0, max_value=10**6),
    missing=_MAYBE_FLOAT,
    missing_unit=st.none() | st.sampled_from(GapUnit),
    status=st.sampled_from(GapStatus),
    detail=st.none() | st.text(max_size=30),
    lost_volume=_MAYBE_FLOAT,
    lost_trades=_MAYBE_INT,
)


@given(_GAPS)
def test_a_gap_row_holds_the_plain_strings_it_always_held_and_turns_back_into_its_gap(
    gap: Gap,
) -> None:
    row = gap_row(gap)
    # the row as the recorder wrote it when these were strings: the same bytes in the spool
    # and the same values in both sinks (exact str, not an enum a driver might repr)
    kt = "" if gap.feed.kt is None else f":{gap.feed.kt}"
    unit = None if gap.missing_unit is None else gap.missing_unit.value
    texts = (f"{gap.feed.stream.value}{kt}", gap.cause.value, unit, gap.status.value)
    assert (row[4], row[5], row[9], row[10]) == texts
    assert all(type(v) is str for v in texts if v is not None)
    assert all(type(row[i]) is str for i in (4, 5, 10)) and type(row[9]) in (str, type(None))
    plain = (*row[:4], *texts[:2], *row[6:9], texts[2], texts[3], *row[11:])
    assert orjson.dumps(row) == orjson.dumps(plain)
    assert gap_of(row) == gap
    assert gap_of(tuple(orjson.loads(orjson.dumps(row)))) == gap  # back from the spool


@pytest.mark.parametrize(
    ("column", "value"),
    [(4, "klines"), (4, "klines:x"), (4, "gaps"), (5, "lost"), (9, "minutes"), (10, "done")],
)
def test_a_gap_row_that_is_not_ours_is_a_value_error_naming_it(column: int, value: str) -> None:
    gap = Gap(5 * NS, None, "US:AAPL", TRADES, GapCause.DISCONNECT, 6 * NS)
    row = list(gap_row(gap))
    row[column] = value
    with pytest.raises(ValueError, match=rf"gaps row of US:AAPL at {5 * NS}: .*{value}"):
        gap_of(tuple(row))
