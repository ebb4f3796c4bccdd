"""The Parquet day archive: what export writes (layout, manifest, atomic re-export, the
partial rule), the archive read back identically to the database through every reader
method, the read API (Arrow, pandas, polars, bars, book_at), other tools reading the files
as they are, an object store through moto's S3 server, and retention that expires only
what the archive holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store import CODES, DAY0, _trade, trade_rows, write

from recorder import data
from recorder.archive import export
from recorder.batching import Batch
from recorder.exceptions import ConfigError
from recorder.protocol import NS, Depth
from recorder.schema import depth_row
from recorder.sinks.sqlite import SQLiteSink
from recorder.store import open_source
from recorder.store.archive import ArchiveReader
from recorder.store.arrow import to_rows

pa = pytest.importorskip("pyarrow")
DAY = 86400 * NS
LATER = DAY0 + 30 * DAY  # "now" for exports: every day of the recording is over
ROOT = Path(__file__).parent.parent


def clock_at(ns: int) -> Any:
    return lambda: ns / NS


def depth(code: str, ts: int, bid: float, recv: int, n: int = 0) -> tuple[Any, ...]:
    return depth_row(Depth(code, ts, ((bid, 1.0),), ((bid + 0.5, 2.0),), recv, "live", n))


def recording(path: Path, specs: list[tuple[Any, ...]]) -> Path:
    write(path, trade_rows(specs))
    sink = SQLiteSink(path)
    books = [depth("US:AAPL", DAY0 + s * NS, 100.0 + s, DAY0 + s * NS + 7) for s in (10, 20, 90000)]
    sink.write(Batch({"depth": books}, seq=2))
    sink.close()
    return path


# --- the archive reads back as the database ---------------------------------------------


@settings(max_examples=25)
@given(st.lists(_trade, max_size=60), st.integers(0, 3 * 86400), st.integers(1, 3 * 86400))
def test_the_archive_reads_back_exactly_as_the_database(
    specs: list[tuple[Any, ...]], offset: int, length: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = open_source(recording(Path(tmp) / "t.sqlite", specs))
        export(db, DAY0, DAY0 + 3 * DAY, f"{tmp}/archive", clock=clock_at(LATER))
        archive = open_source(f"{tmp}/archive")
        streaming = ArchiveReader(f"{tmp}/archive", sort_budget=0)  # a run per code, merged
        start, end = DAY0 + offset * NS, DAY0 + (offset + length) * NS
        for table in ("trades", "depth"):
            for reader in (archive, streaming):
                assert list(reader.rows(table, start, end)) == list(db.rows(table, start, end))
                assert list(reader.rows(table, start, end, CODES[1:])) == list(
                    db.rows(table, start, end, CODES[1:])
                )
            assert archive.codes(table) == db.codes(table)
            for code in CODES:
                assert archive.count(table, code, start, end) == db.count(table, code, start, end)
                assert sorted(archive.minutes(table, code, start, end)) == sorted(
                    db.minutes(table, code, start, end)
                )
        # batches: bounded, typed, and by code then time within each day
        batches = list(archive.batches("trades", start, end, size=5))
        assert all(0 < b.num_rows <= 5 for b in batches)
        got = [r for b in batches for r in to_rows("trades", b)]
        assert sorted(got) == sorted(db.rows("trades", start, end))
        for window in (False, True):
            assert archive.gaps(start, end, window) == db.gaps(start, end, window)


# --- what export writes -------------------------------------------------------------------


def test_layout_manifest_and_atomic_reexport(tmp_path: Path) -> None:
    db = recording(
        tmp_path / "t.sqlite",
        [(5, "HK:700", 1.0, 1.0, 1, 0), (86400 + 7, "US:AAPL", 2.0, 1.0, 0, 0)],
    )
    out = tmp_path / "archive"
    days = export(db, DAY0, DAY0 + 2 * DAY, str(out), clock=clock_at(LATER))
    assert [d.day.isoformat() for d in days] == ["2026-11-26", "2026-11-27"]
    assert days[0].rows == {"trades": 1, "depth": 2, "gaps": 2, "instruments": 2}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert all(f.startswith(("_manifest/date=", "trades/date=", "depth/date=", "gaps/date=",
                             "instruments/date=")) for f in files)  # fmt: skip
    manifest = json.loads((out / "_manifest" / "date=2026-11-26.json").read_text())
    assert manifest["tables"]["trades"]["codes"] == {"HK:700": 1}
    assert manifest["tables"]["depth"]["codes"] == {"US:AAPL": 2}
    assert manifest["partial"] is False and manifest["source"] == str(db)
    assert [(g["code"], g["status"], g["lost_volume"]) for g in manifest["gaps"]] == [
        ("US:AAPL", "open", 2.5),  # began the day before and is still open: it touches the day
        ("HK:700", "filled", 2.5),
    ]
    assert manifest["complete"] is False and manifest["incomplete_because"] == [
        "gaps not filled: 1 open"
    ]
    assert manifest["recorder_version"] and manifest["schema_version"]
    # the file is zstd, sorted by code then time, with the Arrow types
    import pyarrow.parquet as pq

    (path,) = (out / "depth" / "date=2026-11-26").glob("*.parquet")
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(path).field("ts").type == pa.timestamp("ns", tz="UTC")
    # a re-export replaces the day: new file, the manifest names it, the old one is gone
    sink = SQLiteSink(db)
    sink.write(Batch({"depth": [depth("HK:700", DAY0 + 50 * NS, 7.0, DAY0 + 50 * NS + 1)]}, seq=9))
    sink.close()
    export(db, DAY0, DAY0 + DAY, str(out), clock=clock_at(LATER))
    (again,) = (out / "depth" / "date=2026-11-26").glob("*.parquet")
    assert again != path and not path.exists()
    manifest = json.loads((out / "_manifest" / "date=2026-11-26.json").read_text())
    assert manifest["tables"]["depth"]["codes"] == {"HK:700": 1, "US:AAPL": 2}
    assert manifest["tables"]["depth"]["files"] == [again.relative_to(out).as_posix()]
    assert not list(out.rglob(".*tmp"))  # no staging file left


def test_a_day_still_being_recorded_needs_partial(tmp_path: Path) -> None:
    db = recording(tmp_path / "t.sqlite", [(5, "HK:700", 1.0, 1.0, 1, 0)])
    noon = DAY0 + DAY // 2
    with pytest.raises(ConfigError, match=r"2026-11-26 is still being recorded.*--partial"):
        export(db, DAY0, DAY0 + DAY, str(tmp_path / "a"), clock=clock_at(noon))
    assert not (tmp_path / "a").exists()  # refused before writing anything
    (day,) = export(db, DAY0, DAY0 + DAY, str(tmp_path / "a"), partial=True, clock=clock_at(noon))
    manifest = json.loads((tmp_path / "a" / "_manifest" / "date=2026-11-26.json").read_text())
    assert day.partial and manifest["partial"] is True and not manifest["complete"]
    assert "still being recorded" in manifest["incomplete_because"][0]


# --- the read API ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("sources")
    specs = [
        (s, CODES[s % 3], 10.0 + (s % 7), 1.0 + (s % 2), s % 3, 0) for s in range(0, 3 * 86400, 997)
    ]
    db = recording(tmp / "t.sqlite", specs)
    export(db, DAY0, DAY0 + 3 * DAY, str(tmp / "archive"), clock=clock_at(LATER))
    yield db, tmp / "archive"


def test_read_gives_typed_columns_for_pandas_and_polars(sources: tuple[Path, Path]) -> None:
    db, archive = sources
    for source in (db, archive):
        trades = data.read(source, "trades", "2026-11-26", "2026-11-27", "US:AAPL")
        assert trades.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert pa.types.is_dictionary(trades.schema.field("code").type)
        assert set(trades.column("code").to_pylist()) == {"US:AAPL"}
        df = trades.to_pandas()
        assert str(df["ts"].dtype) == "datetime64[ns, UTC]" and str(df["code"].dtype) == "category"
    polars = pytest.importorskip("polars")
    frame = polars.from_arrow(data.read(archive, "trades", DAY0, DAY0 + 3 * DAY))
    assert frame.height == len(list(open_source(db).rows("trades", DAY0, DAY0 + 3 * DAY)))
    assert frame.schema["ts"] == polars.Datetime("ns", "UTC")


def test_bars_of_any_width_match_the_trades(sources: tuple[Path, Path]) -> None:
    db, archive = sources
    rows = list(open_source(db).rows("trades", DAY0, DAY0 + 3 * DAY, ["HK:700"]))
    for width, step in (("1h", 3600), (7200, 7200), (dt.timedelta(minutes=30), 1800)):
        got = data.bars(archive, DAY0, DAY0 + 3 * DAY, width, "HK:700").to_pylist()
        expected: dict[int, list[Any]] = {}
        for r in rows:  # in time order: first is the open, last the close
            bar = r[0] - r[0] % (step * NS)
            expected.setdefault(bar, []).append(r)
        assert [b["ts"].timestamp() * NS for b in got] == list(expected)
        for b, trades in zip(got, expected.values(), strict=True):
            prices = [t[3] for t in trades]
            assert (b["open"], b["high"], b["low"], b["close"]) == (
                prices[0], max(prices), min(prices), prices[-1]
            )  # fmt: skip
            assert b["volume"] == sum(t[4] for t in trades) and b["trades"] == len(trades)
        assert got == data.bars(db, DAY0, DAY0 + 3 * DAY, width, "HK:700").to_pylist()


def test_book_at_is_the_last_depth_at_or_before(sources: tuple[Path, Path]) -> None:
    db, archive = sources
    for source in (db, archive):
        assert data.book_at(source, "US:AAPL", DAY0 + 9 * NS) is None
        book = data.book_at(source, "US:AAPL", DAY0 + 19 * NS)
        assert book is not None and book.bids == ((110.0, 1.0),)
        book = data.book_at(source, "US:AAPL", DAY0 + 20 * NS)  # at: included
        assert book is not None and book.bids == ((120.0, 1.0),)
        book = data.book_at(source, "US:AAPL", "2026-11-27T12:00")  # a day later
        assert book is not None and book.ts == DAY0 + 90000 * NS


def test_bad_input_gets_one_line(sources: tuple[Path, Path], tmp_path: Path) -> None:
    db, archive = sources
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: data.read(db, "ticks", DAY0, DAY0 + DAY), "'ticks' is not a table"),
        (lambda: data.read(archive, "trades", "2025-01-01", "2025-01-02"), "no trades rows"),
        (lambda: data.read(db, "trades", DAY0 + DAY, DAY0), "end of the range"),
        (lambda: data.read(db, "trades", "yesterday", DAY0), "not a time"),
        (lambda: data.read(tmp_path / "x.sqlite", "trades", 0, 1), "no such file or folder"),
        (lambda: data.bars(db, DAY0, DAY0 + DAY, "1 fortnight"), "not a bar width"),
        (lambda: data.read(db, "trades", DAY0, DAY0 + DAY, "AAPL"), "codes:"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_other_tools_read_the_archive_as_it_is(sources: tuple[Path, Path]) -> None:
    db, archive = sources
    total = len(list(open_source(db).rows("trades", DAY0, DAY0 + 3 * DAY)))
    import pyarrow.dataset as ds

    dataset = ds.dataset(archive / "trades", format="parquet", partitioning="hive")
    assert dataset.count_rows() == total
    polars = pytest.importorskip("polars")
    lazy = polars.scan_parquet(f"{archive}/trades/**/*.parquet", hive_partitioning=True)
    assert lazy.filter(polars.col("code") == "HK:700").select(polars.len()).collect().item() == (
        sum(1 for r in open_source(db).rows("trades", DAY0, DAY0 + 3 * DAY, ["HK:700"]))
    )
    duckdb = pytest.importorskip("duckdb")
    ((count, days),) = duckdb.sql(
        f"SELECT count(*), count(DISTINCT date) FROM read_parquet('{archive}/trades/*/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    assert (count, days) == (total, 3)


# --- an object store: moto's S3 server, started here --------------------------------------


@pytest.fixture
def s3() -> Iterator[dict[str, Any]]:
    """A local S3-compatible server (moto's server mode) and the options to reach it."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs the dev extra, which has moto[server] and s3fs: {exc}")
        pytest.skip(f"needs moto[server] and s3fs (pip install -e '.[dev]'): {exc}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": "test",
        "secret": "test",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    try:
        # the bucket made directly, so the test does not lean on s3fs's bucket creation
        import boto3

        boto3.client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket="ticks")
        yield options
    finally:
        server.stop()


def test_an_s3_archive_reads_back_as_the_database(
    sources: tuple[Path, Path], s3: dict[str, Any]
) -> None:
    db, _ = sources
    url = "s3://ticks/archive"
    export(db, DAY0, DAY0 + 3 * DAY, url, storage_options=s3, clock=clock_at(LATER))
    archive = ArchiveReader(url, storage_options=s3)
    local = open_source(db)
    for table in ("trades", "depth"):
        assert list(archive.rows(table, DAY0, DAY0 + 3 * DAY)) == list(
            local.rows(table, DAY0, DAY0 + 3 * DAY)
        )
    first = archive.manifest(dt.date(2026, 11, 26))["tables"]["trades"]["files"]
    export(db, DAY0, DAY0 + DAY, url, storage_options=s3, clock=clock_at(LATER))  # again
    fs = archive.fs
    assert not fs.exists(f"ticks/archive/{first[0]}")  # the older export is gone
    assert len(fs.ls("ticks/archive/trades/date=2026-11-26")) == 1
    # the command line reaches it through the standard AWS variables
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3["endpoint_url"],
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    span = ["--from", "2026-11-27", "--to", "2026-11-28"]
    done = subprocess.run(
        [sys.executable, "-m", "recorder", "export", "--source", str(db), *span,
         "--out", "s3://ticks/cli"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2026-11-27: trades ")
    replayed = subprocess.run(
        [sys.executable, "-m", "recorder", "replay", "--source", "s3://ticks/cli", *span],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    local_replay = subprocess.run(
        [sys.executable, "-m", "recorder", "replay", "--source", str(db), *span],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replayed.stdout == local_replay.stdout and replayed.stdout
    # a bucket that is not there, credentials that are not there: one line each, exit 2
    for out, variables in (
        ("s3://no-such-bucket/x", env),
        ("s3://ticks/y", {k: v for k, v in env.items() if not k.startswith("AWS_") or k in (
            "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")} | {"AWS_EC2_METADATA_DISABLED": "true"}),
    ):  # fmt: skip
        failed = subprocess.run(
            [sys.executable, "-m", "recorder", "export", "--source", str(db), *span, "--out", out],
            capture_output=True, text=True, env=variables, timeout=120,
        )  # fmt: skip
        assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
        assert failed.stderr.startswith("qos-recorder: error: archive"), failed.stderr


def test_gaps_and_coverage_read_the_archive_as_the_database(sources: tuple[Path, Path]) -> None:
    from recorder.config import parse
    from recorder.coverage import build

    db, archive = sources
    config = parse(
        {
            "subscribe": {"trades": list(CODES), "depth": list(CODES)},
            "sink": {"sqlite_path": str(db)},
        },
        name=str(db.parent / "recorder.toml"),
    )
    for day in (dt.date(2026, 11, 26), dt.date(2026, 11, 27)):
        from_archive = build(config, day, reader=open_source(archive))
        assert from_archive == build(config, day)
        assert from_archive.rows["trades"] > 0 and from_archive.gaps
    printed = [
        subprocess.run(
            [sys.executable, "-m", "recorder", "gaps", "--source", str(source)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for source in (db, archive)
    ]
    assert printed[0].returncode == 0 and "filled" in printed[0].stdout
    # the archive alone, no config: its codes make the lines
    html = db.parent / "coverage.html"
    drawn = subprocess.run(
        [sys.executable, "-m", "recorder", "coverage", "--source", str(archive), "--day",
         "2026-11-26", "--whole-day", "--out", str(html)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    page = html.read_text()
    assert all(f"{code}  trades" in page for code in CODES) and "US:AAPL  depth" in page
    # an open gap shows how long it has lasted so far: the clock moved between the two
    lasted = re.compile(r"open \d+s")
    assert lasted.sub("open", printed[1].stdout) == lasted.sub("open", printed[0].stdout)


# --- archive, then expire: the daily job ------------------------------------------------

UNITS = ROOT / "systemd"


def _job(config: Path) -> list[str]:
    """The timer's command, as its unit runs it, pointed at this checkout and ``config``."""
    (line,) = [
        line[len("ExecStart=") :]
        for line in (UNITS / "qos-recorder-archive.service").read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    argv = line.split()
    assert argv[0] == "/opt/qos-recorder/venv/bin/qos-recorder"
    return [sys.executable, "-m", "recorder", *(str(config) if a.endswith(".toml") else a
                                                for a in argv[1:])]  # fmt: skip


def test_the_daily_job_archives_then_expires_only_what_the_archive_holds(
    tmp_path: Path,
) -> None:
    specs = [(s, CODES[s % 3], 10.0, 1.0, 1, 0) for s in range(0, 3 * 86400, 3001)]
    db = recording(tmp_path / "ticks.sqlite", specs)
    before = list(open_source(db).rows("trades", DAY0, DAY0 + 3 * DAY))
    # the first day was exported earlier; then a late backfill added a row to it
    export(db, DAY0, DAY0 + DAY, str(tmp_path / "archive"), clock=clock_at(LATER))
    late = trade_rows([(77, "US:AAPL", 9.0, 5.0, 2, 0)])
    sink = SQLiteSink(db)
    sink.write(Batch({"trades": late}, seq=5))
    sink.close()
    config = tmp_path / "recorder.toml"
    config.write_text(
        '[subscribe]\ntrades = ["US:AAPL"]\n[sink]\nsqlite_path = "ticks.sqlite"\n'
        '[retention]\ntrades = 1\ndepth = 1\narchive = "elsewhere"\n'
    )
    # an archive that cannot be written: the job fails in one line and expires nothing
    (tmp_path / "elsewhere").write_text("a file, not a folder")
    failed = subprocess.run(_job(config), capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert "elsewhere" in failed.stderr
    assert len(list(open_source(db).rows("trades", 0, 2**62))) == len(before) + 1
    config.write_text(config.read_text().replace('"elsewhere"', '"archive"'))
    done = subprocess.run(_job(config), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "exported again: 2026-11-26" in done.stdout  # changed since its export
    assert "exported again: 2026-11-28" in done.stdout  # never exported
    # the database kept nothing older than the retention; the archive holds all of it
    assert list(open_source(db).rows("trades", 0, 2**62)) == []
    archived = list(open_source(tmp_path / "archive").rows("trades", DAY0, DAY0 + 3 * DAY))
    assert sorted(archived) == sorted(before + late)
    assert len(list(open_source(tmp_path / "archive").rows("depth", DAY0, DAY0 + 3 * DAY))) == 3


def test_the_timer_and_its_service_are_valid_units(tmp_path: Path) -> None:
    service = (UNITS / "qos-recorder-archive.service").read_text()
    timer = (UNITS / "qos-recorder-archive.timer").read_text()
    assert "Type=oneshot" in service and "User=qos-recorder" in service
    assert "StateDirectory=qos-recorder" in service  # the recorder's database is readable
    assert "OnCalendar=*-*-* 00:30:00 UTC" in timer and "Persistent=true" in timer
    if shutil.which("systemd-analyze") is None:
        return  # parsed above; nothing here can check them further
    executable = shutil.which("qos-recorder") or str(Path(sys.executable).parent / "qos-recorder")
    (tmp_path / "qos-recorder-archive.service").write_text(
        service.replace("/opt/qos-recorder/venv/bin/qos-recorder", executable)
    )
    (tmp_path / "qos-recorder-archive.timer").write_text(timer)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "qos-recorder-archive.timer"),
         str(tmp_path / "qos-recorder-archive.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "qos-recorder" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_readme_backtest_examples_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Python example of the README's Backtests section, run in a folder holding a
    ``demo.sqlite`` of its day and its ``archive``, prints the codes or the day it shows."""
    pytest.importorskip("polars")
    pytest.importorskip("duckdb")
    pytest.importorskip("pandas")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Backtests") : text.index("## Run it as a service")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5
    day = 1_796_256_000 * NS  # 2026-12-03, the README's day
    specs = [(s, CODES[s % 3], 10.0, 1.0, 1, 0) for s in range(0, 86400, 61)]
    trades = [(r[0] - DAY0 + day, *r[1:]) for r in trade_rows(specs)]
    db = tmp_path / "demo.sqlite"
    sink = SQLiteSink(db)
    books = [depth("US:AAPL", day + s * NS, 100.0 + s, day + s * NS + 7) for s in (10, 20)]
    sink.write(Batch({"trades": trades, "depth": books}, seq=1))
    sink.close()
    export(db, day, day + DAY, str(tmp_path / "archive"), clock=clock_at(day + 2 * DAY))
    monkeypatch.chdir(tmp_path)
    session: dict[str, Any] = {}  # one session, as a reader runs them one after the other
    for block in blocks:
        prompts = [line[4:] for line in block.splitlines() if line.startswith(">>> ")]
        code = "\n".join(f"print({p})" for p in prompts) if prompts else block
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), session)
        assert "US:AAPL" in out.getvalue() or "2026-12-03" in out.getvalue(), (code, out)
