"""The store readers: one quoting function for QuestDB SQL, and the SQLite reader's rows,
orders, gaps, counts and Arrow batches checked against the rows written."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.batching import Batch
from recorder.exceptions import ConfigError
from recorder.protocol import NS
from recorder.schema import BY_NAME, Row
from recorder.sim.questdb import QuestDB
from recorder.sinks.sqlite import SQLiteSink
from recorder.store import code_order, open_source, time_order
from recorder.store.arrow import to_rows
from recorder.store.questdb import QuestDBHttp, QuestDBReader
from recorder.store.quote import At, Name, bind, literal

DAY0 = 1_795_651_200 * NS  # 2026-11-26T00:00:00Z
CODES = ("US:AAPL", "HK:700", "SH:600519")


# --- quoting --------------------------------------------------------------------------


def test_literal_quotes_and_refuses() -> None:
    assert literal("it's") == "'it''s'"
    assert literal(At(1_500)) == "cast(1 AS TIMESTAMP)"
    assert literal(None) == "NULL" and literal(-3) == "-3" and literal(0.5) == "0.5"
    assert literal(Name("trades")) == "trades"
    for bad in (True, float("nan"), float("inf"), 2**63, "a\nb", "\x00", Name("x; DROP"), b"x"):
        with pytest.raises(ValueError):
            literal(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="placeholders"):
        bind("SELECT {} FROM {}", 1)


@given(st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f")))
def test_a_literal_is_one_quoted_string_whatever_the_text(text: str) -> None:
    quoted = literal(text)
    inner = quoted[1:-1]
    assert quoted[0] == quoted[-1] == "'"
    assert "'" not in inner.replace("''", "")  # every quote inside is doubled
    assert inner.replace("''", "'") == text


def test_hostile_texts_stay_one_literal_in_questdb_grammar() -> None:
    from test_schema import _check

    texts = ["'; DROP TABLE trades; --", "a''b", "\\'", "é中文 ☃", "{}", "' OR '1'='1", ""]
    template = "SELECT * FROM trades WHERE code = {} AND ts >= {}"
    for result in _check([bind(template, t, At(NS)) for t in texts]):
        assert result["errors"] == [] and result["statements"] == 1, result


# --- a recording with ties, several codes and gaps --------------------------------------

_trade = st.tuples(
    st.integers(0, 3 * 86400 - 1),  # second of a three-day range
    st.sampled_from(CODES),
    st.sampled_from([10.0, 10.5, 11.25]),
    st.sampled_from([1.0, 2.0]),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 2),  # recv offset (ns) within the second, ties included
)


def trade_rows(specs: list[tuple[Any, ...]]) -> list[Row]:
    """Stored trades, ``k`` counting earlier identical trades of the second."""
    seen: dict[tuple[Any, ...], int] = {}
    out = []
    for second, code, price, size, side, recv in specs:
        ts = DAY0 + second * NS
        ident = (code, ts, price, size, side)
        k = seen.get(ident, 0)
        seen[ident] = k + 1
        out.append(
            (ts, code, code.split(":")[0], price, size, side, k, "live", ts + recv, None, None)
        )
    return out


def gap_rows() -> list[Row]:
    def gap(start: int, end: int | None, code: str, status: str, detail: str | None = None) -> Row:
        return (
            start,
            end,
            code,
            "US",
            "trades",
            "disconnect",
            start,
            3,
            1.0,
            "trades",
            status,
            detail,
            2.5,
            1,
        )

    return [
        gap(DAY0 - 3600 * NS, None, "US:AAPL", "open"),  # before the range, still open
        gap(DAY0 + 100 * NS, DAY0 + 200 * NS, "HK:700", "filled", 'a "quoted", back\\slash\\"'),
        gap(DAY0 + 86400 * NS + 5, DAY0 + 86400 * NS + 9, "US:AAPL", "unrecoverable"),
    ]


def instrument_row(code: str, day: int, dp: int | None) -> Row:
    return (day, code, "US", "X", "USD", None, None, 1, 0, 0, 0.0, 0.0, 0.0, dp, dp, dp, day)


def write(path: Path, trades: list[Row]) -> Path:
    sink = SQLiteSink(path)
    sink.write(
        Batch(
            {
                "trades": trades,
                "gaps": gap_rows(),
                "instruments": [
                    instrument_row("US:AAPL", DAY0, 2),
                    instrument_row("US:AAPL", DAY0 + 86400 * NS, 3),
                    instrument_row("HK:700", DAY0, None),
                ],
            },
            seq=1,
        )
    )
    sink.close()
    return path


def ordered(table: str, rows: list[Row], order: tuple[str, ...]) -> list[Row]:
    names = BY_NAME[table].names
    return sorted(rows, key=lambda r: tuple(r[names.index(c)] for c in order))


@settings(max_examples=40)
@given(st.lists(_trade, max_size=60), st.integers(0, 3 * 86400), st.integers(1, 3 * 86400))
def test_sqlite_reader_reads_ranges_in_the_time_order(
    specs: list[tuple[Any, ...]], offset: int, length: int
) -> None:
    trades = trade_rows(specs)
    with tempfile.TemporaryDirectory() as tmp:
        reader = open_source(write(Path(tmp) / "t.sqlite", trades))
        start, end = DAY0 + offset * NS, DAY0 + (offset + length) * NS
        inside = [r for r in trades if start <= r[0] < end]
        assert list(reader.rows("trades", start, end)) == ordered(
            "trades", inside, time_order("trades")
        )
        some = [r for r in inside if r[1] in CODES[:2]]
        assert list(reader.rows("trades", start, end, CODES[:2])) == ordered(
            "trades", some, time_order("trades")
        )
        batches = list(reader.batches("trades", start, end, size=7))
        assert all(b.num_rows <= 7 for b in batches)
        assert [r for b in batches for r in to_rows("trades", b)] == ordered(
            "trades", inside, code_order("trades")
        )
        for code in CODES:
            mine = [r for r in inside if r[1] == code]
            assert reader.count("trades", code, start, end) == len(mine)
            assert sorted(reader.minutes("trades", code, start, end)) == sorted(
                {(r[0] - start) // (60 * NS) for r in mine}
            )
        reader.close()


def test_sqlite_reader_gaps_and_codes(tmp_path: Path) -> None:
    reader = open_source(write(tmp_path / "t.sqlite", trade_rows([(5, "HK:700", 1.0, 1.0, 1, 0)])))
    day = (DAY0, DAY0 + 86400 * NS)
    assert [g[10] for g in reader.gaps(*day)] == ["filled"]
    assert [g[10] for g in reader.gaps(*day, overlapping=True)] == ["open", "filled"]
    assert reader.codes("trades") == ["HK:700"] and reader.codes("depth") == []
    assert list(reader.rows("depth", *day)) == [] and reader.kline_types("HK:700") == []


def test_a_source_that_is_none_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello, not a database\n" * 100)
    cases = {
        tmp_path / "missing.sqlite": "no such file or folder",
        tmp_path / "notes.txt": "not a SQLite database",
        tmp_path: "not an archive",
    }
    for source, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            open_source(source)
        assert "\n" not in str(info.value) and str(source) in str(info.value)


def test_a_database_of_an_older_version_reads_as_the_current_schema(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute(
        "CREATE TABLE depth (ts INTEGER NOT NULL, code TEXT, market TEXT, bid_px REAL, "
        "bid_sz REAL, ask_px REAL, ask_sz REAL, levels INTEGER, bids TEXT, asks TEXT, "
        "source TEXT, recv_ts INTEGER)"
    )
    db.execute("INSERT INTO depth VALUES (5, 'HK:700', 'HK', 1, 2, 3, 4, 1, '[]', '[]', 'live', 9)")
    db.commit()
    db.close()
    (row,) = open_source(tmp_path / "old.sqlite").rows("depth", 0, 10)
    assert len(row) == len(BY_NAME["depth"].columns) and row[:2] == (5, "HK:700")


@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=30),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=30),
    st.lists(st.sampled_from(CODES), max_size=30),
    st.integers(0, 5),
)
def test_values_read_from_buffers_equal_to_pylist(
    ints: list[int | None], floats: list[float | None], codes: list[str], cut: int
) -> None:
    pa = pytest.importorskip("pyarrow")
    from recorder.store.arrow import values

    arrays = [
        pa.array(ints, pa.int64()),
        pa.array([None if i is None else i % 2**31 for i in ints], pa.int32()),
        pa.array(floats, pa.float64()),
        pa.array(codes, pa.string()).dictionary_encode(),
    ]
    for array in arrays:
        for part in (array, array.slice(cut), pa.chunked_array([array, array.slice(cut)])):
            assert values(part) == part.to_pylist()


def test_the_questdb_reader_reads_what_the_sqlite_reader_reads(
    tmp_path: Path, questdb: QuestDB
) -> None:
    import random

    from recorder.sinks.questdb import QuestDBSink

    rng = random.Random(3)
    specs = [
        (rng.randrange(3 * 86400), rng.choice(CODES), rng.choice([10.0, 10.5]), 1.0,
         rng.randrange(3), rng.randrange(3))
        for _ in range(2000)
    ] + [(7, "HK:700", 10.0, 1.0, 1, r % 3) for r in range(40)]  # fmt: skip
    # (and 40 trades in one second: more than a page of the paged reader below)
    db = write(tmp_path / "t.sqlite", trade_rows(specs))
    sink = QuestDBSink(questdb.conf)
    sink.open()
    for table in ("trades", "gaps", "instruments"):  # a clean slate for this test's rows
        sink.execute(bind("TRUNCATE TABLE {}", Name(table)))
    rows = open_source(db)
    batch = {t: list(rows.rows(t, 0, 2**62)) for t in ("trades",)}
    batch["gaps"], batch["instruments"] = (
        gap_rows(),
        [
            instrument_row("US:AAPL", DAY0, 2),
            instrument_row("US:AAPL", DAY0 + 86400 * NS, 3),
            instrument_row("HK:700", DAY0, None),
        ],
    )
    sink.write(Batch(batch, seq=1))
    sink.close()
    quest = open_source(questdb.url)
    # WAL tables apply the rows shortly after the acknowledgement
    assert wait_for(
        lambda: sum(quest.count("trades", c, 0, 2**62) for c in CODES) == len(specs), 30
    )
    start, end = DAY0 + 1000 * NS, DAY0 + 200_000 * NS
    assert list(quest.rows("trades", start, end)) == list(rows.rows("trades", start, end))
    # in pages of a few rows (one second holds more than a page): the same rows, in order
    for page in (1, 7, 33):
        paged = QuestDBReader(QuestDBHttp(questdb.url), page_rows=page)
        assert list(paged.rows("trades", 0, 2**62)) == list(rows.rows("trades", 0, 2**62))
    # text with quotes and backslashes comes back as written (QuestDB's CSV escapes both)
    details = [r[11] for r in rows.rows("gaps", 0, 2**62)]
    assert [r[11] for r in quest.rows("gaps", 0, 2**62)] == details and any(details)
    assert list(quest.rows("trades", start, end, CODES[:1])) == list(
        rows.rows("trades", start, end, CODES[:1])
    )
    got = [r for b in quest.batches("trades", start, end, size=100) for r in to_rows("trades", b)]
    assert got == [r for b in rows.batches("trades", start, end) for r in to_rows("trades", b)]
    for code in CODES:
        assert quest.count("trades", code, start, end) == rows.count("trades", code, start, end)
        assert sorted(quest.minutes("trades", code, start, end)) == sorted(
            rows.minutes("trades", code, start, end)
        )
    for overlapping in (False, True):
        day = (DAY0, DAY0 + 86400 * NS)
        assert quest.gaps(*day, overlapping) == rows.gaps(*day, overlapping)
    assert quest.codes("trades") == rows.codes("trades")
    # a table the server does not have (written by an earlier version) holds nothing, as a
    # SQLite file without it does
    questdb.sql("DROP TABLE kline_updates")
    assert quest.codes("kline_updates") == [] == list(quest.rows("kline_updates", 0, 2**62))
