"""The human-readable reports: times given on the command line, the gaps table and the
health summary."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.exceptions import ConfigError
from recorder.protocol import NS
from recorder.report import format_gaps, format_health, parse_time

T0 = 1_764_000_000 * NS


def test_times_in_every_documented_form() -> None:
    assert (
        parse_time("2026-11-26") == int(dt.datetime(2026, 11, 26, tzinfo=dt.UTC).timestamp()) * NS
    )
    assert parse_time("2026-11-26T14:30") == parse_time("2026-11-26") + (14 * 60 + 30) * 60 * NS
    assert parse_time("2026-11-26T22:30+08:00") == parse_time("2026-11-26T14:30")
    assert parse_time("1764000000") == T0
    assert parse_time("1764000000.5") == T0 + NS // 2


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1)))
def test_an_iso_time_and_its_unix_seconds_are_the_same_time(when: dt.datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=dt.UTC)
    assert parse_time(when.isoformat()) == parse_time(str(int(when.timestamp())))


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "12:30pm"])
def test_a_time_that_is_not_one_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_time(text, "--from")
    assert str(err.value).startswith("--from: ")
    assert "\n" not in str(err.value)


def _gap(ts: int, end: int | None, status: str, stream: str = "trades") -> tuple[object, ...]:
    return (ts, end, "US:AAPL", stream, "disconnect", status, 3, 12.0, "trades", "", 500.0, 12)


def test_no_gaps_says_so() -> None:
    assert format_gaps([]) == "no gaps"


def test_one_line_a_gap_then_a_count_per_status() -> None:
    rows = [
        _gap(T0, T0 + 46 * NS, "partial"),
        _gap(T0 + 60 * NS, T0 + 70 * NS, "filled"),
        _gap(T0 + 90 * NS, T0 + 95 * NS, "filled", "depth"),
    ]
    lines = format_gaps(rows, now_ns=T0 + 100 * NS).splitlines()
    assert len(lines) == 1 + len(rows) + 1
    assert "start" in lines[0] and "status" in lines[0]
    assert "2025-11-24 16:00:00" in lines[1] and "partial" in lines[1]
    assert lines[-1] == "2 filled, 1 partial"
    # columns line up: every status starts at the same offset
    statuses = ["partial", "filled", "filled"]
    offsets = {line.index(status) for line, status in zip(lines[1:4], statuses, strict=True)}
    assert len(offsets) == 1


def test_spans_are_whole_seconds_and_a_state_refresh_says_so() -> None:
    trades = (T0, T0 + 46 * NS, "HK:700", "trades", "disconnect", "partial", 50, 41.1501)
    depth = (T0, T0 + 46 * NS, "HK:700", "depth", "disconnect", "unrecoverable", 1, 46.0)
    kline = (T0, T0 + 46 * NS, "HK:700", "klines:1", "disconnect", "filled", 2, 0.0)
    rows = [
        (*trades, "seconds", "", 500.0, 0),
        (*depth, "seconds", "", None, None),
        (*kline, "bars", "", None, None),
    ]
    lines = format_gaps(rows, now_ns=T0 + 100 * NS).splitlines()[1:4]
    cells = [re.split(r"  +", line)[-4:] for line in lines]
    assert cells == [
        ["partial", "50 trades", "41s", "500"],
        ["unrecoverable", "state refreshed", "46s", "-"],
        ["filled", "2 bars", "-", "-"],
    ]


def test_a_gap_that_still_lasts_shows_how_long_so_far() -> None:
    [_, line, counts] = format_gaps([_gap(T0, None, "open")], now_ns=T0 + 42 * NS).splitlines()
    assert "open 42" in line
    assert counts == "1 open"


def test_health_lines_carry_reasons_and_figures() -> None:
    text = format_health(
        {
            "status": "unhealthy",
            "reasons": ["disconnected: HTTP 503"],
            "connected_since": None,
            "frames": {"trades": 295},
            "frames_per_second": 50.0,
            "last_frame_age_seconds": 1.25,
            "reconnects": 2,
            "rows_written": {"trades": 290},
            "spool_bytes": 0,
            "spool_segments": 0,
            "open_gaps": 1,
            "oldest_open_gap_age_seconds": 42.0,
            "backfilled_rows": 7,
        }
    )
    assert text.splitlines()[:2] == ["status: unhealthy", "  - disconnected: HTTP 503"]
    for fact in ("trades 295", "reconnects: 2", "trades 290", "open gaps: 1", "oldest 42 s"):
        assert fact in text, fact


def test_the_frame_rate_states_its_window() -> None:
    base = {"status": "ok", "reasons": [], "frames": {"trades": 295}, "frames_per_second": 50.0}
    measured = format_health({**base, "frames_rate_window_seconds": 60})
    assert "frames: trades 295 (50.0/s over the last 60 s)" in measured.splitlines()
    fresh = format_health({**base, "frames_per_second": 0.0, "frames_rate_window_seconds": 0})
    assert "frames: trades 295 (rate: measuring)" in fresh.splitlines()


def test_a_recorder_that_is_not_running_is_a_short_report() -> None:
    text = format_health({"status": "not running", "reasons": ["http://x/healthz: refused"]})
    assert text == "status: not running\n  - http://x/healthz: refused"
