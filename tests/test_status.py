"""The health verdict on a :class:`Status`: healthy exactly when no condition holds, and a
reason a person can read for each one that does."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.config import MetricsConfig, Secret, parse
from recorder.daemon import Recorder
from recorder.protocol import NS, Stream
from recorder.status import RateMeter, Status, progress

NOW = 1_800_000_000 * NS
LIMITS = MetricsConfig()


def _default(annotation: str) -> Any:
    if "None" in annotation:
        return None
    if annotation.startswith("Mapping"):
        return {}
    return {"int": 0, "float": 0.0, "bool": False, "str": ""}[annotation]


def healthy(**changes: Any) -> Status:
    """A recorder that is connected, subscribed, fresh and writing; fields added later to
    Status default to their type's zero, so this follows the class."""
    fields = {f.name: _default(str(f.type)) for f in dataclasses.fields(Status)}
    fields.update(
        now=NOW,
        connected=True,
        connected_since=NOW / NS - 60,
        subscribed=True,
        frames={Stream.TRADES: 10},
        last_frame={"US:AAPL": NOW - NS},
        last_trade={"US:AAPL": NOW - NS},
        sink_healthy=True,
        spool_max_bytes=1 << 30,
    )
    fields.update(changes)
    return Status(**fields)


#: one change that makes the recorder unhealthy, and a word its reason must contain
CONDITIONS: dict[str, tuple[dict[str, Any], str]] = {
    "disconnected": ({"connected": False, "last_disconnect_reason": "HTTP 503"}, "HTTP 503"),
    "unsubscribed": ({"subscribed": False}, "not subscribed"),
    "stale": ({"last_frame": {"US:AAPL": NOW - 3600 * NS}}, "stale"),
    "spool": ({"spool_bytes": 1 << 30}, "spool"),
    "database": ({"sink_healthy": False, "sink_error": "refused"}, "refused"),
    "writer failed": ({"writer_failed": True, "writer_error": "boom"}, "boom"),
    "writer restarted": ({"writer_recovering": True, "writer_error": "boom"}, "restarted"),
}


def test_a_healthy_recorder_is_ok_with_no_reason() -> None:
    ok, summary = healthy().health(LIMITS)
    assert ok
    assert summary["status"] == "ok"
    assert summary["reasons"] == []
    assert summary["frames"] == {"trades": 10}
    assert summary["last_frame_age_seconds"] == 1.0


def test_no_frame_at_all_is_unhealthy() -> None:
    ok, summary = healthy(last_frame={}).health(LIMITS)
    assert not ok
    assert summary["reasons"] == ["no frame received"]
    assert summary["last_frame_age_seconds"] is None


@given(st.sets(st.sampled_from(sorted(CONDITIONS))))
def test_unhealthy_exactly_when_a_condition_holds_with_its_reason(chosen: set[str]) -> None:
    changes: dict[str, Any] = {}
    for name in chosen:
        changes.update(CONDITIONS[name][0])
    ok, summary = healthy(**changes).health(LIMITS)
    assert ok == (not chosen)
    assert summary["status"] == ("ok" if not chosen else "unhealthy")
    text = " | ".join(summary["reasons"])
    for name in chosen:
        if name == "unsubscribed" and "disconnected" in chosen:
            continue  # not subscribed follows from not connected: one reason says it
        if name == "writer restarted" and "writer failed" in chosen:
            continue  # a writer that gave up is reported as failed, not as recovering
        assert CONDITIONS[name][1] in text, (name, text)


def test_ages_are_seconds_from_now() -> None:
    status = healthy(oldest_open_gap=NOW - 42 * NS)
    assert status.oldest_open_gap_age() == 42.0
    assert status.last_frame_age() == 1.0
    assert healthy(oldest_open_gap=None).oldest_open_gap_age() is None


def test_the_rate_meter_reports_the_rate_over_its_samples() -> None:
    meter = RateMeter(samples=3)
    assert meter.rate() == 0.0
    meter.sample(0.0, 0)
    assert meter.rate() == 0.0
    for at, total in ((1.0, 10), (2.0, 30), (3.0, 60)):
        meter.sample(at, total)
    # the oldest sample fell out: (60 - 10) over 2 s
    assert meter.rate() == 25.0
    assert meter.window() == 2.0


def test_the_rate_meter_starts_again_at_a_reset() -> None:
    meter = RateMeter()
    for at in range(30):  # 10/s, then a disconnected minute with nothing
        meter.sample(float(at), 10 * at)
    meter.reset()
    assert (meter.rate(), meter.window()) == (0.0, 0.0)
    meter.sample(100.0, 290)
    meter.sample(101.0, 340)
    assert (meter.rate(), meter.window()) == (50.0, 1.0)


def test_a_progress_line_counts_what_came_since_the_last_one() -> None:
    before = healthy(frames={Stream.TRADES: 10}, rows_written={"trades": 9})
    now = healthy(
        now=NOW + 60 * NS,
        frames={Stream.TRADES: 70, Stream.DEPTH: 5},
        rows_written={"trades": 69, "depth": 5},
        open_gaps=2,
        spool_bytes=4096,
        rest_budget_remaining=7,
    )
    assert progress(now, before) == {
        "seconds": 60,
        "frames": {"trades": 60, "depth": 5},
        "rows": {"trades": 60, "depth": 5},
        "frames_total": 75,
        "rows_total": 74,
        "connected": True,
        "open_gaps": 2,
        "spool_bytes": 4096,
        "rest_budget_left": 7,
    }
    assert progress(before, None)["frames"] == {"trades": 10}


@dataclasses.dataclass(frozen=True)
class _Part:
    connected: bool = True
    reconnects: int = 2


def test_status_of_takes_each_field_from_exactly_one_part() -> None:
    everything = {f.name: getattr(healthy(), f.name) for f in dataclasses.fields(Status)}
    rest = {k: v for k, v in everything.items() if k not in ("connected", "reconnects")}
    status = Status.of(_Part(), **rest)
    assert status.connected and status.reconnects == 2 and status.now == NOW
    with pytest.raises(ValueError, match="reconnects given twice"):
        Status.of(_Part(), **{**rest, "reconnects": 0})
    del rest["rest_retries"]  # a field with a default is still one a part must give
    with pytest.raises(ValueError, match="given by no part: rest_retries"):
        Status.of(_Part(), **rest)


def test_a_recorders_status_is_composed_of_its_parts_snapshots(tmp_path: Path) -> None:
    """Built, not run: every Status field comes from one part (Status.of checks), and the
    parts' figures are the ones they start with."""
    config = parse(
        {
            "upstream": {"ws_url": "ws://127.0.0.1:9/", "http_url": "http://127.0.0.1:9/"},
            "subscribe": {"trades": ["US:AAPL", "CF:BTCUSDT"]},
            "sink": {"kind": "sqlite", "sqlite_path": str(tmp_path / "ticks.sqlite")},
            "spool": {"dir": str(tmp_path / "spool"), "max_bytes": 1 << 20},
            "log": {"dead_letter": str(tmp_path / "dead-letter.ndjson")},
        },
        name=str(tmp_path / "recorder.toml"),
    )
    status = Recorder(config, Secret("k")).status()
    assert status.frames == dict.fromkeys(Stream, 0) and not status.connected
    assert status.spool_max_bytes == 1 << 20 and status.spool_segments == 0
    assert status.rest_budget_remaining == config.upstream.http_requests_per_minute
    assert status.market_open.keys() == {"US:AAPL", "CF:BTCUSDT"}
    assert status.market_open["CF:BTCUSDT"] is True  # crypto trades around the clock
    assert status.backfill_idle() and status.open_gaps == 0 and status.reloads == 0
