"""Shared fixtures: a real simulator on loopback, configs pointing at it, a recorder runner."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hostile import Hostile
from hypothesis import HealthCheck, settings
from simulated import SimulatorThread

from recorder.config import Config, Secret, parse
from recorder.daemon import Recorder
from recorder.sim import Faults, SimConfig
from recorder.sinks import Sink

sys.path.insert(0, str(Path(__file__).parent))

# The suite runs on two workers beside socket-heavy tests: generation speed and per-example
# deadlines are not what the property tests check, so they must not fail them.
settings.register_profile("recorder", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("recorder")

POLL = 0.02  # seconds between checks of a condition we wait for
KEY = "test-key-0123456789abcdef"


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorThread]]:
    started: list[SimulatorThread] = []

    def make(faults: Faults | None = None, **kwargs: Any) -> SimulatorThread:
        kwargs.setdefault("keys", (KEY,))
        # the letter of the 1 request/s rule: the recorder must keep it exactly
        kwargs.setdefault("strict", True)
        # round the clock: the tests run at any hour (tests of the hours pass market_hours)
        kwargs.setdefault("market_hours", False)
        thread = SimulatorThread(SimConfig(**kwargs), faults)
        thread.__enter__()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.__exit__(None, None, None)


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorThread]) -> SimulatorThread:
    return make_sim()


def make_config(
    sim: SimulatorThread | Hostile,
    tmp: Path,
    codes: list[str] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config recording ``codes`` (default: all the simulator's) into SQLite under ``tmp``;
    ``sim`` may also be the scripted :class:`~hostile.Hostile` server (then name ``codes``)."""
    if codes is None:
        assert isinstance(sim, SimulatorThread), "name the codes a Hostile server records"
        codes = list(sim.sim.codes)
    doc: dict[str, Any] = {
        "upstream": {
            "ws_url": sim.ws_url,
            "http_url": sim.http_url,
            "key_env": "QOS_TEST_KEY",
            "backoff_initial": 0.2,
            "backoff_max": 1.0,
        },
        "subscribe": {"trades": codes, "depth": codes, "snapshots": codes},
        "sink": {"kind": "sqlite", "sqlite_path": str(tmp / "ticks.sqlite"), "batch_age": 0.1},
        "spool": {"dir": str(tmp / "spool")},
        "log": {"dead_letter": str(tmp / "dead-letter.ndjson")},
    }
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    return parse(doc, name=str(tmp / "recorder.toml"))


def run_recorder(
    config: Config,
    *,
    seconds: float | None = None,
    until: Callable[[Recorder], bool] | None = None,
    timeout: float = 30.0,
    sink: Sink | None = None,
    during: Callable[[Recorder, float], None] | None = None,
    key: str = KEY,
) -> Recorder:
    """Run a real Recorder in this thread for ``seconds``, or until ``until(recorder)``.

    ``during(recorder, elapsed)`` is called at every poll, to inject faults mid-run.
    """
    assert seconds is not None or until is not None

    async def main() -> Recorder:
        recorder = Recorder(config, Secret(key), sink=sink)
        stop = asyncio.Event()

        async def watch() -> None:
            start = time.monotonic()
            limit = seconds if seconds is not None else timeout
            while (elapsed := time.monotonic() - start) < limit:
                if until is not None and until(recorder):
                    break
                if during is not None:
                    during(recorder, elapsed)
                await asyncio.sleep(POLL)
            stop.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch())
            tg.create_task(recorder.run(stop))
        return recorder

    return asyncio.run(main())


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL)
    return predicate()


def write_config(path: Path, sim: SimulatorThread | Hostile, body: str) -> Path:
    """A TOML file for the real process: [upstream] pointing at ``sim`` (the test key in
    ``QOS_TEST_KEY``), then ``body``, which may go on with more [upstream] keys."""
    path.write_text(
        f'[upstream]\nws_url = "{sim.ws_url}"\nhttp_url = "{sim.http_url}"\n'
        f'key_env = "QOS_TEST_KEY"\n{body}'
    )
    return path


def start_recorder(
    config: Path, *, log: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The real ``qos-recorder run`` process, its output captured (or, for a long run that
    is read while it goes on, written to ``log``)."""
    command = [sys.executable, "-m", "recorder", "run", "--config", str(config)]
    environ = {**os.environ, "QOS_TEST_KEY": KEY, **(env or {})}
    if log is None:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ
        )
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)


def sigterm(proc: subprocess.Popen[bytes], timeout: float = 20) -> tuple[dict[str, Any], str]:
    """Stop the real recorder as systemd does; it must exit 0. Returns its
    ``recorder_stopped`` event and everything it printed."""
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    events = [orjson.loads(line) for line in out.splitlines()]
    stopped = next(e for e in events if e["event"] == "recorder_stopped")
    return stopped, out.decode() + err.decode()


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
