"""#21, the ledger, health, the key and the session: real recorder processes against the
scripted hostile server (:mod:`hostile`), their log, database, ``/healthz`` and ``status``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import start_recorder, wait_for, write_config
from hostile import Hostile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int) -> tuple[int, bytes] | None:
    """``/healthz``'s status and body, or None when it does not answer within 2 s."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None


@contextmanager
def _running(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_recorder(config, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM; the exit code, or -9 when it had to be killed after 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return -9


def _bar(ts: int) -> str:
    return json.dumps(
        {
            "tp": "K",
            "c": "CF:BTCUSDT",
            "o": "1",
            "cl": "1",
            "h": "1",
            "l": "1",
            "v": "1",
            "ts": ts,
            "kt": 1,
        }
    )


def test_a_kline_far_ahead_leaves_the_process_responsive(tmp_path: Path) -> None:
    port = _free_port()
    now = int(time.time())
    with Hostile() as up:
        up.frames += [_bar(now - now % 60 - 60), _bar(1741960243000)]
        config = write_config(
            tmp_path / "recorder.toml",
            up,
            f'[subscribe]\nklines = ["CF:BTCUSDT"]\n[sink]\nsqlite_path = "ticks.sqlite"\n'
            f'[metrics]\nlisten = "127.0.0.1:{port}"\n',
        )
        with _running(config, tmp_path / "log") as proc:

            def both_frames_taken() -> bool:
                answer = _healthz(port)
                health = json.loads(answer[1]) if answer is not None else {}
                taken: int = health.get("frames", {}).get("klines", 0) + health.get(
                    "decode_errors", 0
                )
                return taken >= 2

            # both bars were read (or the far one refused at decode), and it still answers
            assert wait_for(both_frames_taken, timeout=20)
            assert _healthz(port) is not None
            assert _stop(proc) == 0
