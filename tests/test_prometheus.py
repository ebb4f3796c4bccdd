"""The alert rules and the dashboard against a real Prometheus (Debian's ``prometheus``
package) scraping a real recorder process, and ``promtool test rules`` for every alert."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import start_recorder, wait_for, write_config
from simulated import SimulatorThread

ROOT = Path(__file__).parent.parent
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "qos-recorder.json"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus; "
    ".ci/run installs it)",
)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_prometheus
def test_promtool_checks_the_rules_and_every_alert_has_a_unit_test() -> None:
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    unit_tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    alerts_tested = {t["alertname"] for test in unit_tests for t in test["alert_rule_test"]}
    assert alerts_tested == {rule["alert"] for rule in _rules()}


@needs_prometheus
def test_a_real_prometheus_evaluates_every_rule_and_panel_against_a_real_recorder(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    assert PROMETHEUS is not None
    sim = make_sim(trades_per_second=10)
    metrics_port, prom_port = _free_port(), _free_port()
    config = write_config(
        tmp_path / "recorder.toml",
        sim,
        f"""heartbeat_interval = 2.0
[subscribe]
trades = ["CF:BTCUSDT", "US:AAPL"]
snapshots = ["CF:BTCUSDT"]
[sink]
sqlite_path = "ticks.sqlite"
[metrics]
listen = "127.0.0.1:{metrics_port}"
""",
    )
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "qos-recorder",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    base = f"http://127.0.0.1:{prom_port}"

    def get(path: str, **params: str) -> dict[str, Any]:
        url = f"{base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def series(expr: str) -> list[Any]:
        answer = get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[Any] = answer["data"]["result"]
        return result

    recorder = start_recorder(config, log=tmp_path / "recorder.log")
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            try:
                return bool(
                    series('up{job="qos-recorder"} == 1')
                    and series("qos_heartbeat_rtt_seconds")
                    and series('rate(qos_frames_total{stream="trades"}[1m]) > 0')
                    and series("rate(qos_flush_seconds_bucket[5m]) > 0")
                )
            except OSError:
                return False

        assert wait_for(ready, timeout=60)
        rules = _rules()
        # every rule evaluates without error, and every metric it reads exists
        assert wait_for(
            lambda: (
                all(
                    r["health"] == "ok" and r.get("lastError", "") == ""
                    for g in get("/api/v1/rules")["data"]["groups"]
                    for r in g["rules"]
                )
                and len([r for g in get("/api/v1/rules")["data"]["groups"] for r in g["rules"]])
                == len(rules)
            ),
            timeout=20,
        )
        for rule in rules:
            series(rule["expr"])  # evaluates (an alert's condition may well be empty)
        names = {n for r in rules for n in re.findall(r"\b(qos_\w+|up)\b", r["expr"])}
        assert names and all(series(name) for name in names), names
        # every panel query evaluates and returns series
        for query in _panel_queries():
            assert series(query), query
    finally:
        prometheus.terminate()
        recorder.terminate()
        prometheus.wait(10)
        recorder.wait(20)
