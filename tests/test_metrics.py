"""Running as a service: metrics, health, status, sd_notify, units, and the key kept secret."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import KEY, start_recorder, wait_for, write_config
from prometheus_client import generate_latest
from simulated import SimulatorThread
from test_status import healthy

from recorder.config import MetricsConfig
from recorder.feed import Feed
from recorder.gaps import ENDED, GapStatus
from recorder.metrics import Metrics
from recorder.schema import MARKET_TABLES
from recorder.sim import Faults

SimFactory = Callable[..., SimulatorThread]
ROOT = Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(sim: SimulatorThread, tmp: Path, extra: str = "") -> Path:
    return write_config(
        tmp / "recorder.toml",
        sim,
        f"""backoff_initial = 0.2
backoff_max = 0.5
[subscribe]
trades = ["US:AAPL", "CF:BTCUSDT"]
snapshots = ["US:AAPL"]
[sink]
sqlite_path = "ticks.sqlite"
{extra}
""",
    )


@contextmanager
def _running(config: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_recorder(config, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _status(config: Path) -> subprocess.CompletedProcess[str]:
    """``qos-recorder status`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "recorder", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, flags=re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_and_health_follow_a_disconnect(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(trades_per_second=10)
    port = _free_port()
    config = _config(sim, tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"\nstale_after = 5')
    base = f"http://127.0.0.1:{port}"
    with _running(config) as proc:
        assert wait_for(lambda: _get(f"{base}/healthz")[0] == 200, timeout=20)
        status, body = _get(f"{base}/metrics")
        assert status == 200
        for name in (
            "qos_frames_total",
            "qos_decode_errors_total",
            "qos_rows_written_total",
            "qos_batch_rows_bucket",
            "qos_flush_seconds_bucket",
            "qos_writer_queue_batches",
            "qos_spool_bytes",
            "qos_spool_segments",
            "qos_reconnects_total",
            "qos_open_gaps",
            "qos_backfilled_rows_total",
            "qos_last_frame_age_seconds",
        ):
            assert name in body, name
        assert _metric(body, "qos_reconnects_total") == 0
        assert _metric(body, "qos_connected") == 1

        sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", True))
        sim.run(sim.sim.disconnect_all())
        assert wait_for(lambda: _get(f"{base}/healthz")[0] == 503, timeout=10)
        health = json.loads(_get(f"{base}/healthz")[1])
        assert health["status"] == "unhealthy"
        assert any(r.startswith("disconnected") for r in health["reasons"])
        status_cmd = _status(config)
        assert status_cmd.returncode == 1 and "disconnected" in status_cmd.stdout

        sim.call(lambda: setattr(sim.sim.faults, "refuse_connections", False))
        assert wait_for(lambda: _get(f"{base}/healthz")[0] == 200, timeout=20)
        assert _metric(_get(f"{base}/metrics")[1], "qos_reconnects_total") >= 1
        # the disconnect's backfill, counted by purpose
        trades = re.compile(r'^qos_rest_requests_total\{purpose="trades"\} [1-9]', re.M)
        assert wait_for(lambda: trades.search(_get(f"{base}/metrics")[1]) is not None, 20)
        status_cmd = _status(config)
        assert status_cmd.returncode == 0, status_cmd.stdout
        assert "status: ok" in status_cmd.stdout and "frames: trades" in status_cmd.stdout
        assert proc.poll() is None
    after = _status(config)
    assert after.returncode == 1 and "not running" in after.stdout


def test_sd_notify_ready_watchdog_stopping(sim: SimulatorThread, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(20)
    messages: list[str] = []

    def receive_until(word: str) -> bool:
        while not any(word in m for m in messages):
            messages.append(listener.recv(4096).decode())
        return True

    config = _config(sim, tmp_path)
    try:
        with _running(config, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}) as proc:
            assert receive_until("READY=1")
            assert receive_until("WATCHDOG=1")
            watchdogs = sum("WATCHDOG=1" in m for m in messages)
            messages.clear()
            assert receive_until("WATCHDOG=1")  # keeps pinging from the event loop
            assert watchdogs >= 1
            proc.send_signal(signal.SIGTERM)
            assert receive_until("STOPPING=1")
            assert proc.wait(20) == 0
    finally:
        listener.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["qos-recorder.service", "qos-recorder@.service"])
def test_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    executable = shutil.which("qos-recorder") or str(Path(sys.executable).parent / "qos-recorder")
    assert Path(executable).exists()
    text = (ROOT / "systemd" / unit).read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "LoadCredential=" in text
    assert "ProtectSystem=strict" in text and "NoNewPrivileges=yes" in text
    # as scripts/install does: point ExecStart at the installed executable
    text = text.replace("/opt/qos-recorder/venv/bin/qos-recorder", executable)
    name = unit.replace("@.", "@test.")
    (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if name.split("@")[0] in line or "qos-recorder" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_key_never_appears_in_logs_metrics_errors_or_argv(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(Faults(close_every=2.0, malformed_rate=0.05), trades_per_second=10)
    port = _free_port()
    config = _config(sim, tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"')
    base = f"http://127.0.0.1:{port}"
    with _running(config) as proc:
        assert wait_for(lambda: sim.sim.closed_by_fault >= 2, timeout=20)
        sim.call(lambda: setattr(sim.sim.faults, "http_status", 500))
        sim.call(lambda: setattr(sim.sim.faults, "http_fail_count", 3))
        assert wait_for(
            lambda: _metric(_get(f"{base}/metrics")[1], "qos_decode_errors_total") > 0, timeout=20
        )
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        exposed = _get(f"{base}/metrics")[1] + _get(f"{base}/healthz")[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    logs = out.decode() + err.decode()
    assert "decode_error" in logs and "disconnected" in logs  # the run did have errors
    for place in (
        logs,
        exposed,
        cmdline.decode(errors="replace"),
        (tmp_path / "dead-letter.ndjson").read_text(),
    ):
        assert KEY not in place


def test_frames_over_the_size_limit_end_the_session(sim: SimulatorThread, tmp_path: Path) -> None:
    config = (
        _config(sim, tmp_path, "")
        .read_text()
        .replace("backoff_max = 0.5", "backoff_max = 0.5\nmax_frame_bytes = 64")
    )
    (tmp_path / "recorder.toml").write_text(config)
    with _running(tmp_path / "recorder.toml") as proc:
        assert wait_for(lambda: sim.sim.connections_opened >= 2, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    reasons = [
        json.loads(line).get("reason", "") for line in out.splitlines() if b'"disconnected"' in line
    ]
    assert any("1009" in r for r in reasons), reasons


def test_a_taken_metrics_port_is_a_one_line_error(sim: SimulatorThread, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(sim, tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"')
        with _running(config) as proc:
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "metrics.listen: cannot listen on" in lines[0], lines


def test_qos_gaps_has_a_plain_label_for_every_table_and_end_state() -> None:
    outcomes = {("trades", GapStatus.PARTIAL): 2, (Feed.klines(5).table, GapStatus.FILLED): 3}
    status = healthy(gap_outcomes=outcomes, market_open={})
    text = generate_latest(Metrics(lambda: status, MetricsConfig()).registry).decode()
    found = re.findall(r'^qos_gaps_total\{status="(\w+)",stream="(\w+)"\} (\S+)$', text, re.M)
    expected = {(s.value, t): "0.0" for t in MARKET_TABLES for s in ENDED}
    expected |= {("partial", "trades"): "2.0", ("filled", "klines"): "3.0"}
    assert sorted(found) == sorted((s, t, n) for (s, t), n in expected.items())
