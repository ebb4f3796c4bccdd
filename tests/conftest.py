"""Shared fixtures: a real simulator on loopback, configs pointing at it, a recorder runner."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
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
from recorder.sim.questdb import PINNED, QuestDB, QuestDBUnavailable
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


# --- a real QuestDB (#18) --------------------------------------------------------------------
#
# One server per pinned version per test session, started on first use and shared: every
# test that uses ``questdb`` (or ``questdb_newest``) runs in the xdist group "questdb", so
# one worker owns the JVMs, and each test starts on an empty database. A test that kills or
# stalls the server leaves it running again (``questdb.start()``) or the next test restarts it.

_STARTED_LOG = "QOS_TEST_QUESTDB_STARTED"  # a file the workers append "QuestDB X on ..." to


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _STARTED_LOG not in os.environ:
        fd, name = tempfile.mkstemp(prefix="qos-questdb-started-")
        os.close(fd)
        os.environ[_STARTED_LOG] = name  # inherited by the xdist workers started after this


def pytest_itemcollected(item: pytest.Item) -> None:
    # marked as each item is collected, before xdist's loadgroup reads the marks
    if {"questdb", "questdb_newest", "questdb_pool"} & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group("questdb"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """xdist's loadgroup sends the tests of one group to one worker by the ``@group``
    suffix of their ids; xdist 3.8 writes it into ``_nodeid``, which pytest 9 no longer
    reads (the id is ``_id``), so the suffix is set here where it is missing."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        group = item.get_closest_marker("xdist_group")
        if group is not None and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{group.args[0]}")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not (name := os.environ.get(_STARTED_LOG)):
        return
    path = Path(name)
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    for line in lines:
        terminalreporter.write_line(line)


class QuestDBPool:
    """The session's servers, one per version, started on first use; a version that cannot
    start is remembered with the reason, so later tests skip (or, in CI, fail) at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, QuestDB] = {}
        self.broken: dict[str, str] = {}

    def get(self, version: str) -> QuestDB:
        if version in self.broken:
            _unavailable(self.broken[version])
        server = self.servers.get(version)
        if server is None or server.proc is None or server.proc.poll() is not None:
            server = server or QuestDB(version, self.root / version, dev_mode=True)
            try:
                server.start()
            except QuestDBUnavailable as exc:
                self.broken[version] = str(exc)
                _unavailable(str(exc))
            self.servers[version] = server
            if name := os.environ.get(_STARTED_LOG):
                with open(name, "a") as f:
                    f.write(server.describe() + "\n")
        return server

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a real QuestDB: {reason}", pytrace=False)
    pytest.skip(f"no real QuestDB here: {reason}")


@pytest.fixture(scope="session")
def questdb_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuestDBPool]:
    pool = QuestDBPool(tmp_path_factory.mktemp("questdb"))
    yield pool
    pool.stop()


def _fresh(pool: QuestDBPool, version: str) -> Iterator[QuestDB]:
    server = pool.get(version)
    server.drop_all_tables()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()  # a test that stalled the server and failed must not stall the next


@pytest.fixture(params=PINNED, ids=[f"qdb{v}" for v in PINNED])
def questdb(request: pytest.FixtureRequest, questdb_pool: QuestDBPool) -> Iterator[QuestDB]:
    """A real QuestDB of each pinned version (newest, oldest supported), database empty."""
    yield from _fresh(questdb_pool, request.param)


@pytest.fixture
def questdb_newest(questdb_pool: QuestDBPool) -> Iterator[QuestDB]:
    """The newest pinned QuestDB only (fault tests), database empty."""
    yield from _fresh(questdb_pool, PINNED[0])


def qdb_wait(
    server: QuestDB, query: str, check: Callable[[list[list[Any]]], bool], timeout: float = 30
) -> list[list[Any]]:
    """The rows of ``query`` once ``check`` holds for them (WAL tables apply a moment after
    the client's acknowledgement), or the last rows read when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = server.rows(query)
        except ValueError:  # the table is not there yet
            got = []
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(POLL * 5)
