"""The /metrics text of a status with every field set: valid for Prometheus's own parser
and promtool, each family once, and each scalar family showing the Status field it names
(the collector is one function per family of metrics, so a field wired to the wrong
metric would show here)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_status import NOW, healthy

from recorder.config import MetricsConfig
from recorder.gaps import ENDED, GapStatus
from recorder.metrics import Metrics
from recorder.protocol import NS, Stream
from recorder.schema import MARKET_TABLES
from recorder.status import Status

#: scalar families (without the counters' _total) and the Status field each shows
SCALARS = {
    "qos_decode_errors": "decode_errors",
    "qos_dead_letter_dropped": "dead_letter_dropped",
    "qos_unsubscribed_frames": "unsubscribed_frames",
    "qos_rejected_requests": "rejected_requests",
    "qos_writer_queue_batches": "writer_queue",
    "qos_batcher_rows": "batcher_rows",
    "qos_spool_bytes": "spool_bytes",
    "qos_spool_segments": "spool_segments",
    "qos_spool_max_bytes": "spool_max_bytes",
    "qos_rest_budget_remaining": "rest_budget_remaining",
    "qos_spool_rejected_rows": "spool_rejected_rows",
    "qos_lost_rows": "lost_rows",
    "qos_rejected_rows": "rejected_rows",
    "qos_spool_damaged_entries": "spool_damaged_entries",
    "qos_sink_write_stuck_seconds": "write_stuck_seconds",
    "qos_sink_file_replaced": "sink_replaced",
    "qos_sink_failures": "sink_failures",
    "qos_writer_crashes": "writer_crashes",
    "qos_reconnects": "reconnects",
    "qos_config_reloads": "reloads",
    "qos_open_gaps": "open_gaps",
    "qos_backfilled_rows": "backfilled_rows",
    "qos_heartbeat_rtt_seconds": "heartbeat_rtt",
}
#: 0/1 gauges and the Status truth each shows
FLAGS: dict[str, Callable[[Status], bool]] = {
    "qos_writer_failed": lambda s: s.writer_failed,
    "qos_config_reload_failed": lambda s: bool(s.reload_error),
    "qos_connected": lambda s: s.connected,
    "qos_key_refused": lambda s: bool(s.key_refused or s.rest_key_refused),
}

counts = st.integers(min_value=0, max_value=2**40)


@st.composite
def statuses(draw: st.DrawFn) -> Status:
    changes: dict[str, Any] = {
        field: draw(counts) for field in SCALARS.values() if field != "write_stuck_seconds"
    }
    changes["write_stuck_seconds"] = draw(st.floats(0, 1e6))
    changes["heartbeat_rtt"] = draw(st.floats(0, 60))
    changes["writer_failed"] = draw(st.booleans())
    changes["connected"] = draw(st.booleans())
    changes["reload_error"] = draw(st.sampled_from([None, "", "bad key"]))
    changes["key_refused"] = draw(st.sampled_from([None, "HTTP 401"]))
    changes["rest_key_refused"] = draw(st.sampled_from([None, "HTTP 403"]))
    changes["frames"] = {s: draw(counts) for s in draw(st.sets(st.sampled_from(list(Stream))))}
    changes["rows_written"] = {
        t: draw(counts) for t in draw(st.sets(st.sampled_from(MARKET_TABLES)))
    }
    changes["rest_requests_by_purpose"] = {"trades": draw(counts)}
    changes["gap_outcomes"] = {("trades", GapStatus.PARTIAL): draw(counts)}
    changes["suspended_tables"] = {"trades": "suspended"} if draw(st.booleans()) else {}
    changes["market_open"] = {"US:AAPL": True, "HK:700": False, "CF:BTCUSDT": None}
    changes["last_frame"] = {"US:AAPL": NOW - draw(st.integers(0, 3600)) * NS}
    return healthy(**changes)


def _text(status: Status) -> str:
    return generate_latest(Metrics(lambda: status, MetricsConfig()).registry).decode()


@settings(max_examples=40, deadline=None)
@given(statuses())
def test_every_family_parses_once_and_shows_its_field(status: Status) -> None:
    families = list(text_string_to_metric_families(_text(status)))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), names
    samples = {f.name: f.samples for f in families}
    for name, field in SCALARS.items():
        [sample] = samples[name] if name == "qos_heartbeat_rtt_seconds" else samples[name][:1]
        assert sample.value == pytest.approx(getattr(status, field)), name
    for name, truth in FLAGS.items():
        assert samples[name][0].value == (1.0 if truth(status) else 0.0), name
    assert samples["qos_sink_tables_suspended"][0].value == len(status.suspended_tables)
    frames = {s.labels["stream"]: s.value for s in samples["qos_frames"]}
    assert frames == {stream.value: float(n) for stream, n in status.frames.items()}
    rows = {s.labels["table"]: s.value for s in samples["qos_rows_written"]}
    assert rows == {table: float(n) for table, n in status.rows_written.items()}
    gaps = [s for s in samples["qos_gaps"] if s.name == "qos_gaps_total"]
    assert len(gaps) == len(MARKET_TABLES) * len(ENDED)
    market = {s.labels["code"]: s.value for s in samples["qos_market_open"]}
    assert market == {"US:AAPL": 1.0, "HK:700": 0.0}
    [age] = samples["qos_last_frame_age_seconds"]
    assert age.value == pytest.approx((status.now - status.last_frame["US:AAPL"]) / 1e9)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_finds_nothing_to_say_about_the_text() -> None:
    status = healthy(
        heartbeat_rtt=0.2, suspended_tables={"trades": "x"}, reload_error="bad", market_open={}
    )
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=_text(status).encode(), capture_output=True
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
