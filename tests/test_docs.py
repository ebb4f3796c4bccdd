"""The documentation's promises, checked: the README's SQLite cookbook runs against a real
recording and gives what the rows say."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config, run_recorder
from simulated import SimulatorThread

from recorder.feed import Other
from recorder.gaps import ENDED, GapCause, GapStatus, GapUnit
from recorder.protocol import NS, Stream
from recorder.schema import MARKET_TABLES, TABLES
from recorder.schema_doc import markdown, undocumented
from recorder.sim import SimConfig

ROOT = Path(__file__).parent.parent
CODES = ["US:AAPL", "HK:700", "CF:BTCUSDT"]


def sqlite_cookbook() -> list[str]:
    """The README's ```sqlite blocks, one statement each."""
    return re.findall(r"```sqlite\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    tmp = tmp_path_factory.mktemp("cookbook")
    sim_config = SimConfig(
        keys=("test-key-0123456789abcdef",), trades_per_second=6, seed=7, market_hours=False
    )
    with SimulatorThread(sim_config) as sim:
        config = make_config(
            sim, tmp, CODES, subscribe={"klines": ["CF:BTCUSDT"], "kline_types": [1]}
        )
        run_recorder(config, until=_recorded, timeout=40)
        # a second run: the time the recorder was away is a gap of each code and stream,
        # written once its backfill ran
        run_recorder(config, until=_settled, timeout=40)
    db = sqlite3.connect(tmp / "ticks.sqlite")
    yield db
    db.close()


def _recorded(r: Any) -> bool:
    """Trades, books, K-lines (subscribed last) and the reference data are all stored."""
    rows = r.status().rows_written
    return bool(
        r.status().frames[Stream.TRADES] >= 40
        and all(rows.get(t, 0) > 0 for t in ("trades", "depth", "klines", "instruments"))
    )


def _settled(r: Any) -> bool:
    det = r.ingest.detector
    return bool(
        r.status().subscribed
        and not det.pending
        and r.status().gaps_submitted > 0
        and r.status().backfill_idle()
        and r.status().frames[Stream.SNAPSHOTS] > 0
    )


def _run(db: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    (day,) = {t for (t,) in db.execute("SELECT date(min(ts) / 1e9, 'unixepoch') FROM trades")}
    later = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    sql = sql.replace("2026-11-26 14:30:00", now)
    return db.execute(sql.replace("2026-11-26", day).replace("2026-11-27", later)).fetchall()


def test_every_sqlite_query_of_the_readme_gives_what_the_rows_say(
    recorded: sqlite3.Connection,
) -> None:
    db = recorded
    bars, spread, asof, latest, best, level2, ledger, lost, klines, value = sqlite_cookbook()

    trades = db.execute(
        "SELECT ts, price, size, recv_ts FROM trades WHERE code = 'US:AAPL' ORDER BY ts, recv_ts"
    ).fetchall()
    minutes: dict[int, list[tuple[Any, ...]]] = {}
    for t in trades:
        minutes.setdefault(t[0] // (60 * NS), []).append(t)
    expected = [
        (
            dt.datetime.fromtimestamp(m * 60, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "US:AAPL",
            ts[0][1],
            max(t[1] for t in ts),
            min(t[1] for t in ts),
            ts[-1][1],
            sum(t[2] for t in ts),
            len(ts),
        )
        for m, ts in sorted(minutes.items())
    ]
    assert _run(db, bars) == expected and expected

    (n_depth,) = db.execute("SELECT count(*) FROM depth WHERE code = 'US:AAPL'").fetchone()
    spreads = _run(db, spread)
    assert len(spreads) == n_depth > 0 and all(row[4] >= 0 <= row[5] for row in spreads)

    # the as-of join: every trade once, with the newest book at or before it
    books = db.execute(
        "SELECT ts, bid_px, ask_px FROM depth WHERE code = 'US:AAPL' ORDER BY ts, recv_ts"
    ).fetchall()
    joined = _run(db, asof)
    assert [(r[0], r[2], r[3]) for r in joined] == [(t[0], t[1], t[2]) for t in trades]
    for row in joined:
        before = [b for b in books if b[0] <= row[0]]
        assert (row[5], row[6]) == ((before[-1][1], before[-1][2]) if before else (None, None))

    newest = dict(db.execute("SELECT code, max(ts) FROM snapshots GROUP BY code").fetchall())
    assert {(r[0], r[1]) for r in _run(db, latest)} == set(newest.items())
    assert len(newest) == len(CODES)
    books_now = dict(db.execute("SELECT code, max(ts) FROM depth GROUP BY code").fetchall())
    assert {(r[0], r[1]) for r in _run(db, best)} == set(books_now.items())

    second = _run(db, level2)
    assert len(second) == 10 and all(isinstance(r[2], float) and r[3] > 0 for r in second)

    (n_gaps,) = db.execute("SELECT count(*) FROM gaps").fetchone()
    gaps = _run(db, ledger)
    assert len(gaps) == n_gaps > 0
    assert {r[2] for r in gaps if r[3] == "trades" and r[4] == "disconnect"} == set(CODES)
    holes = {r[0]: r[2] for r in _run(db, lost)}
    assert holes == dict(
        db.execute("SELECT code, count(*) FROM gaps WHERE stream = 'trades' GROUP BY code")
    )

    (n_bars,) = db.execute("SELECT count(*) FROM klines WHERE code = 'CF:BTCUSDT'").fetchone()
    assert len(_run(db, klines)) == n_bars > 0

    sums = dict(db.execute("SELECT code, sum(price * size) FROM trades GROUP BY code"))
    values = {r[0]: r[3] for r in _run(db, value)}
    assert values.keys() == sums.keys() and all(values[c] == pytest.approx(sums[c]) for c in values)


def test_every_column_is_explained() -> None:
    assert undocumented() == [], (
        "describe these columns in recorder/schema_doc.py, then run "
        "`qos-recorder schema --markdown > docs/schema.md`"
    )


def test_docs_schema_md_is_generated_from_the_schema() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "recorder", "schema", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == markdown()
    assert (ROOT / "docs" / "schema.md").read_text() == printed, (
        "docs/schema.md is stale: run `qos-recorder schema --markdown > docs/schema.md`"
    )
    for table in TABLES:  # every table and column is there, with its dedup keys
        section = printed.split(f"## {table.name}\n", 1)[1].split("\n## ", 1)[0]
        assert all(f"| `{name}`" in section for name in table.names)
        assert f"Dedup keys: {', '.join(f'`{k}`' for k in table.keys)}" in section


def test_the_gap_values_are_the_strings_the_store_the_docs_and_the_alerts_hold() -> None:
    # the strings every release wrote: a changed enum value would split the ledger in two
    assert [c.value for c in GapCause] == [
        *("disconnect", "silence", "kline_skip", "dropped", "volume", "startup", "added")
    ]
    assert [s.value for s in GapStatus] == ["open", "filled", "partial", "unrecoverable"]
    assert [s.value for s in ENDED] == ["filled", "partial", "unrecoverable"]
    assert [u.value for u in GapUnit] == ["seconds", "volume", "bars", "rows"]
    page = (ROOT / "docs" / "schema.md").read_text()
    cells = dict(
        re.findall(
            r"^\| `(stream|cause|missing_unit|status)` (?:\(key\) )?\|.*\| (.*) \|$",
            page,
            flags=re.M,
        )
    )
    for column, values in [
        ("stream", [*(s.value for s in Stream if s is not Stream.KLINES), "klines:<kt>", *Other]),
        ("cause", list(GapCause)),
        ("missing_unit", list(GapUnit)),
        ("status", list(GapStatus)),
    ]:
        assert re.findall(r"(?:^|\), )`([^`]+)` \(", cells[column]) == list(values), column
    # the alerts and their unit tests name only streams and end states the metric has
    labels = []
    for name in ("alerts.yml", "alerts.test.yml"):
        text = (ROOT / "config" / "prometheus" / name).read_text()
        labels += re.findall(r"qos_gaps_total\{([^}]*)\}", text)
    assert labels
    for found in labels:
        streams = re.search(r'stream=~?"([^"]+)"', found)
        status = re.search(r'status="([^"]+)"', found)
        assert streams and status, found
        assert set(streams.group(1).split("|")) <= set(MARKET_TABLES), found
        assert status.group(1) in ENDED, found
    # the README's table of causes
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| cause | when |")[1].split("\n\n")[0]
    causes = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert causes and set(causes) <= set(GapCause)
