"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import KEY, rows, wait_for, write_config
from simulated import SimulatorThread


def _qos(*args: str) -> list[str]:
    return [sys.executable, "-m", "recorder", *args]


def test_simulate_writes_a_config_that_records_from_it(tmp_path: Path) -> None:
    config = tmp_path / "mine" / "recorder.toml"
    sim = subprocess.Popen(
        _qos("simulate", "--port", "0", "--codes", "CF:BTCUSDT", "--config-out", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    recorder = None
    try:
        assert wait_for(config.exists, timeout=30)
        env = {**os.environ, "QOS_API_KEY": "demo"}
        text = config.read_text().replace("127.0.0.1:9464", "127.0.0.1:0")
        config.write_text(text)
        checked = subprocess.run(
            _qos("check-config", str(config)), capture_output=True, text=True, env=env
        )
        assert checked.stdout == f"{config}: OK, 1 codes, sink sqlite\n", checked.stderr
        recorder = subprocess.Popen(
            _qos("run", "--config", str(config)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        db = config.parent / "ticks.sqlite"

        def recorded() -> bool:
            try:
                return bool(rows(db, "SELECT count(*) FROM trades")[0][0] > 0)
            except sqlite3.Error:  # not created yet
                return False

        assert wait_for(recorded, timeout=40)
    finally:
        if recorder is not None:
            recorder.send_signal(signal.SIGTERM)
            assert recorder.wait(timeout=30) == 0
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=30)
    lines = out.decode().splitlines()
    assert lines[1:3] == [
        f"wrote {config}; record with:",
        f"  QOS_API_KEY=demo qos-recorder run --config {config}",
    ]
    assert lines[3].startswith("fault switches: curl -X POST 'http://127.0.0.1:")


def test_a_port_in_use_names_the_flag_that_changes_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            _qos("simulate", "--port", str(port)), capture_output=True, text=True, timeout=30
        )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"qos-recorder: error: --port {port}: cannot listen on 127.0.0.1:{port}: address "
        "already in use; choose another port with --port PORT (0 picks a free one)\n"
    )


def test_check_config_online_tries_the_key_with_one_request(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    sim = make_sim()
    body = f'[subscribe]\ntrades = ["US:AAPL"]\n[sink]\nsqlite_path = "{tmp_path}/t.sqlite"\n'
    config = write_config(tmp_path / "rec.toml", sim, body)

    def check(key: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "QOS_TEST_KEY": key}
        command = _qos("check-config", "--online", str(config))
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    before = len(sim.sim.http_requests)
    good = check(KEY)
    assert good.returncode == 0, good.stderr
    url = f"{sim.http_url}/instrument-info"
    assert good.stdout == (
        f"{config}: OK, 1 codes, sink sqlite; the service accepts the key (1 request to {url})\n"
    )
    assert len(sim.sim.http_requests) == before + 1
    wrong = check("not-the-key-0123")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == (
        f"qos-recorder: error: {config}: upstream: the service refuses the key (invalid key) "
        f"at {url}\n"
    )
    assert "not-the-key" not in wrong.stderr


def test_help_describes_the_program() -> None:
    text = subprocess.run(_qos("--help"), capture_output=True, text=True, check=True).stdout
    assert "Record the QOS market-data API" in text and "``" not in text
    assert "Start with `qos-recorder demo`" in text


def test_run_refuses_a_path_it_could_not_write_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "rec.toml"
    config.write_text(
        '[upstream]\nkey_env = "QOS_TEST_KEY"\n[subscribe]\ntrades = ["US:AAPL"]\n'
        f'[spool]\ndir = "{tmp_path}/a-file/spool"\n'
    )
    env = {**os.environ, "QOS_TEST_KEY": KEY}
    result = subprocess.run(
        _qos("run", "--config", str(config)), capture_output=True, text=True, env=env, timeout=60
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"qos-recorder: error: {config}: spool.dir: {tmp_path}/a-file/spool: cannot be made: "
        f"{tmp_path}/a-file is a file, not a folder\n"
    )
