"""``qos-recorder coverage``: a real recording with gaps, rendered, and looked at in a real
browser (Debian's ``chromium``, headless)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import KEY, make_config, rows, run_recorder
from PIL import Image
from simulated import SimulatorThread

from recorder import config as config_mod
from recorder.batching import Batch
from recorder.coverage import EMPTY, KINDS, MINUTES, build, render
from recorder.daemon import Recorder
from recorder.feed import DEPTH, TRADES
from recorder.gaps import Gap, GapCause
from recorder.protocol import NS, Stream, Trade
from recorder.schema import gap_row, trade_row
from recorder.sinks.sqlite import SQLiteSink

CHROMIUM = shutil.which("chromium")
COVERAGE = [sys.executable, "-m", "recorder", "coverage"]


def _recording(sim: SimulatorThread, tmp_path: Path) -> Path:
    """A recording with a disconnect in it: the config file's path."""
    config = make_config(sim, tmp_path, ["US:AAPL", "CF:BTCUSDT"])
    dropped: list[float] = []

    def drop(recorder: Recorder, elapsed: float) -> None:
        if not dropped and recorder.status().frames[Stream.TRADES] > 40:
            dropped.append(elapsed)
            sim.run(sim.sim.disconnect_all("for the picture"))

    run_recorder(
        config,
        during=drop,
        timeout=40,
        until=lambda r: bool(dropped) and r.status().gaps_resolved >= 6 and r.status().subscribed,
    )
    db = tmp_path / "ticks.sqlite"
    path = tmp_path / "recorder.toml"
    path.write_text(
        f'[upstream]\nkey_env = "QOS_TEST_KEY"\n[subscribe]\n'
        f'trades = ["US:AAPL", "CF:BTCUSDT"]\ndepth = ["US:AAPL", "CF:BTCUSDT"]\n'
        f'snapshots = ["US:AAPL", "CF:BTCUSDT"]\n[sink]\nsqlite_path = "{db}"\n'
    )
    return path


def test_a_recording_with_gaps_is_pictured_and_totalled(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=10)
    config_path = _recording(sim, tmp_path)
    today = dt.datetime.now(dt.UTC).date()
    out = tmp_path / "coverage.html"
    result = subprocess.run(
        [*COVERAGE, "--config", str(config_path), "--day", str(today), "--out", str(out)],
        capture_output=True,
        text=True,
        env={"QOS_TEST_KEY": KEY, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}")
    page = out.read_text()
    assert "<script" not in page and "http" not in page.replace('xmlns="http', "")  # offline
    for text in ("US:AAPL  trades", "CF:BTCUSDT  snapshots", "gap filled by backfill", "Rows:"):
        assert text in page, text
    # the picture says what the store says
    picture = build(config_mod.load(config_path), today)
    trades = next(
        line for line in picture.lines if (line.code, line.feed) == ("CF:BTCUSDT", TRADES)
    )
    stored = rows(tmp_path / "ticks.sqlite", "SELECT count(*) FROM trades")[0][0]
    assert sum(picture.rows.values()) >= stored and picture.rows["trades"] == stored
    # (a short recording: its minutes may all carry the filled gap, drawn on top)
    assert {"recorded", "filled"} & set(trades.minutes) and len(trades.minutes) == MINUTES
    depth = next(line for line in picture.lines if line.feed == DEPTH)
    assert "unrecoverable" in depth.minutes  # a disconnect loses the books in between
    assert picture.gaps.get("unrecoverable", 0) >= 2


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_picture_in_a_headless_browser(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    sim = make_sim(trades_per_second=10)
    config_path = _recording(sim, tmp_path)
    out = tmp_path / "coverage.html"
    day = str(dt.datetime.now(dt.UTC).date())
    subprocess.run(
        [*COVERAGE, "--config", str(config_path), "--day", day, "--out", str(out)],
        check=True,
        capture_output=True,
        env={"QOS_TEST_KEY": KEY, "PATH": "/usr/bin:/bin"},
    )
    shot = tmp_path / "coverage.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={shot}",
            "--window-size=1240,520",
            out.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1240, 520)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}

    def rgb(hexa: str) -> tuple[int, int, int]:
        return int(hexa[1:3], 16), int(hexa[3:5], 16), int(hexa[5:7], 16)

    # the browser drew the time lines: recorded minutes, the gaps, the empty rest
    for kind in ("recorded", "unrecoverable"):
        assert rgb(KINDS[kind][1]) in colours, kind
    assert rgb(EMPTY) in colours


def _store(tmp_path: Path, start: int, now: int) -> Path:
    """A real SQLite file: 10 minutes of US:AAPL and of US:TSLA (a code a reload removed
    since), and a US:AAPL trades gap still open at ``now``; the config lists US:AAPL only."""
    db = tmp_path / "ticks.sqlite"
    trades = [
        trade_row(Trade(code, start + m * 60 * NS, 10.0, 1.0, 1, start + m * 60 * NS))
        for code in ("US:AAPL", "US:TSLA")
        for m in range(10)
    ]
    gap = Gap(start + 10 * 60 * NS, None, "US:AAPL", TRADES, GapCause.DISCONNECT, now)
    sink = SQLiteSink(db)
    sink.write(Batch({"trades": trades, "gaps": [gap_row(gap)]}, 1))
    sink.close()
    path = tmp_path / "recorder.toml"
    path.write_text(f'[subscribe]\ntrades = ["US:AAPL"]\n[sink]\nsqlite_path = "{db}"\n')
    return path


def test_a_mostly_empty_day_zooms_and_an_open_gap_stops_at_now(tmp_path: Path) -> None:
    day = dt.date(2026, 11, 25)  # a Wednesday; US:AAPL trades from 14:00 UTC (09:00 ET)
    start = int(dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC).timestamp()) * NS
    now = start + 15 * 60 * NS
    cfg = config_mod.load(_store(tmp_path, start, now))
    whole = build(cfg, day, now=now)
    assert whole.minutes == MINUTES and whole.whole_day
    aapl, tsla = whole.lines  # the removed code has rows that day: it is drawn
    assert (aapl.code, tsla.code) == ("US:AAPL", "US:TSLA") and whole.rows == {"trades": 20}
    first = 14 * 60
    assert aapl.minutes[first : first + 10] == ["recorded"] * 10
    # the open gap is painted from its start up to now, never past it
    assert aapl.minutes[first + 10 : first + 16] == ["open"] * 6
    assert "open" not in aapl.minutes[first + 16 :]

    zoomed = whole.zoomed()
    assert zoomed.start == start - 5 * 60 * NS and zoomed.minutes == 30 and not zoomed.whole_day
    assert zoomed.lines[0].minutes[5:21] == ["recorded"] * 10 + ["open"] * 6
    assert "2026-11-25 13:55-14:25 UTC" in render(zoomed)
    assert build(cfg, day, now=now, window=(start, start + 30 * 60 * NS)).minutes == 30


def test_coverage_windows_from_the_command_line(tmp_path: Path) -> None:
    start = int(dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC).timestamp()) * NS
    config = _store(tmp_path, start, start + 15 * 60 * NS)
    out = tmp_path / "c.html"

    def cov(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*COVERAGE, "--config", str(config), "--out", str(out), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    # the gap is still open now: it reaches the end of that day, and the zoom follows it
    assert cov("--day", "2026-11-25").stdout == (
        f"wrote {out} (2026-11-25 13:00-2026-11-26 00:00 UTC: 2 lines, 1 gaps)\n"
    )
    assert cov("--day", "2026-11-25", "--whole-day").stdout == (
        f"wrote {out} (2026-11-25 (UTC): 2 lines, 1 gaps)\n"
    )
    window = cov("--from", "2026-11-25T13:30", "--to", "2026-11-25T15:00")
    assert window.stdout == f"wrote {out} (2026-11-25 13:30-15:00 UTC: 2 lines, 1 gaps)\n"
    both = cov("--day", "2026-11-25", "--from", "2026-11-25T13:30")
    assert both.returncode == 2 and "either --day or --from/--to" in both.stderr
