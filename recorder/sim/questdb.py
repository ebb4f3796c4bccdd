"""A real QuestDB server, no Docker: the official jar from Maven Central, started on free
loopback ports with its own root directory.

The tests, ``scripts/bench``, ``scripts/chaos --questdb`` and people (``scripts/questdb``)
all start it the same way. The jar (natives included) is fetched once with Maven into a
cache outside the tracked tree (``~/.cache/qos-recorder/questdb/VERSION``, or
``$QOS_QUESTDB_CACHE``). QuestDB 9.3 and later need Java 25, older releases run on 17; the
JDK is found by its ``release`` file among ``$QOS_QUESTDB_JAVA``, ``$JAVA_HOME``, the
``java`` on ``PATH`` and ``/usr/lib/jvm/*``.

Ports move with QuestDB's ``QDB_*`` overrides of its ``server.conf`` keys; what the
recorder does not use is off (UDP, telemetry) or on a free loopback port (PostgreSQL wire,
the health endpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: The newest release on Maven Central, and the oldest the recorder supports that Maven
#: Central has (8.1.1 is the true minimum; 8.1.2 and 8.1.3 were never published there).
NEWEST: Final = "9.3.4"
OLDEST: Final = "8.1.4"
PINNED: Final = (NEWEST, OLDEST)

START_TIMEOUT: Final = 90.0  # seconds; a cold JVM on a loaded 2-core machine
HEAP: Final = "512m"


class QuestDBUnavailable(Exception):
    """The server could not be fetched or started here; the message says why."""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def java_major_needed(version: str) -> int:
    return 25 if version_tuple(version) >= (9, 3) else 17


def cache_dir() -> Path:
    env = os.environ.get("QOS_QUESTDB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "qos-recorder" / "questdb"


def jar_path(version: str) -> Path:
    return cache_dir() / version / f"questdb-{version}.jar"


def fetch(version: str) -> Path:
    """The server jar of ``version``, fetched from Maven Central once (under a file lock,
    so parallel test workers do not download it twice)."""
    jar = jar_path(version)
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise QuestDBUnavailable("Maven (mvn) is not installed; it fetches the QuestDB jar")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with _locked(jar.parent / ".lock"):
        if jar.is_file():
            return jar
        done = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.questdb:questdb:{version}",
                f"-DoutputDirectory={jar.parent}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tempfile.gettempdir(),
        )
        if done.returncode != 0 or not jar.is_file():
            tail = " ".join((done.stdout + done.stderr).split())[-300:]
            raise QuestDBUnavailable(f"mvn could not fetch org.questdb:questdb:{version}: {tail}")
    return jar


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _java_major(home: Path) -> int | None:
    try:
        text = (home / "release").read_text()
    except OSError:
        return None
    found = re.search(r'^JAVA_VERSION="(\d+)', text, re.M)
    return int(found.group(1)) if found else None


def _java_homes() -> Iterator[Path]:
    for env in ("QOS_QUESTDB_JAVA", "JAVA_HOME"):
        if value := os.environ.get(env):
            yield Path(value)
    if on_path := shutil.which("java"):
        yield Path(os.path.realpath(on_path)).parent.parent
    yield from sorted(Path("/usr/lib/jvm").glob("*"))


def find_java(version: str) -> Path:
    """A ``java`` that runs QuestDB ``version``: the oldest JDK of at least major 25 for 9.3
    and later, of at least 17 before (older releases predate newer JDKs' removals)."""
    need = java_major_needed(version)
    found: dict[Path, int] = {}
    for home in _java_homes():
        major = _java_major(home)
        if major is not None and (home / "bin" / "java").is_file():
            found.setdefault(home, major)
    chosen = os.environ.get("QOS_QUESTDB_JAVA")
    fits = sorted(
        (str(home) != chosen, major, str(home)) for home, major in found.items() if major >= need
    )
    if fits:
        return Path(fits[0][2]) / "bin" / "java"
    seen = ", ".join(f"{home} ({major})" for home, major in found.items()) or "none"
    raise QuestDBUnavailable(
        f"QuestDB {version} needs Java {need}+; JDKs found: {seen} "
        "(set QOS_QUESTDB_JAVA to a JDK home)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class QuestDB:
    """One QuestDB server process. ``start()`` waits until it answers SQL; ``stop()`` ends
    it; ``kill()``, ``pause()``/``resume()`` and ``start()`` again (same root, same ports)
    are the faults the tests inflict."""

    version: str
    root: Path
    http_port: int = 0
    ilp_port: int = 0
    heap: str = HEAP
    #: QuestDB's dev mode, for the tests only: it allows ``ALTER TABLE t SUSPEND WAL``
    dev_mode: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    build: str = ""

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.ilp_port = self.ilp_port or free_port()

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    @property
    def conf(self) -> str:
        """The client conf string for ILP over HTTP."""
        return f"http::addr={self.http};"

    @property
    def tcp_conf(self) -> str:
        return f"tcp::addr=127.0.0.1:{self.ilp_port};"

    @property
    def ws_conf(self) -> str:
        return f"ws::addr={self.http};"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def describe(self) -> str:
        return f"QuestDB {self.version} on {self.http}"

    def start(self, timeout: float = START_TIMEOUT) -> QuestDB:
        jar = fetch(self.version)
        java = find_java(self.version)
        self.root.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "QDB_HTTP_BIND_TO": self.http,
            "QDB_LINE_TCP_NET_BIND_TO": f"127.0.0.1:{self.ilp_port}",
            # bound to free loopback ports rather than disabled: 7.4 stops answering /exec
            # with either of them disabled
            "QDB_PG_NET_BIND_TO": f"127.0.0.1:{free_port()}",
            "QDB_HTTP_MIN_NET_BIND_TO": f"127.0.0.1:{free_port()}",
            "QDB_LINE_UDP_ENABLED": "false",
            "QDB_TELEMETRY_ENABLED": "false",
            "QDB_DEV_MODE_ENABLED": "true" if self.dev_mode else "false",
            "QDB_HTTP_QUERY_CACHE_ENABLED": "false",
        }
        command = [
            str(java),
            f"-Xmx{self.heap}",
            "-XX:+UseParallelGC",
            "-XX:TieredStopAtLevel=1",  # the C1 compiler only: a fast start, less CPU
            "-p",
            str(jar),
            "-m",
            "io.questdb/io.questdb.ServerMain",
            "-d",
            str(self.root),
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise QuestDBUnavailable(
                    f"QuestDB {self.version} exited with {self.proc.returncode} at start-up: "
                    f"{self._log_tail()}"
                )
            try:
                self.build = str(self.sql("SELECT build()")["dataset"][0][0])
                return self
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        self.stop()
        raise QuestDBUnavailable(
            f"QuestDB {self.version} did not answer within {timeout:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        useful = [ln for ln in lines if " E " in ln or "rror" in ln] or lines
        return " | ".join(useful[-3:])[-400:]

    def sql(self, query: str, timeout: float = 10.0) -> dict[str, Any]:
        """Run one statement over ``/exec``; ValueError carrying QuestDB's error if refused."""
        url = f"{self.url}/exec?{urllib.parse.urlencode({'query': query})}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if "error" in body:
            raise ValueError(f"{body['error']} (position {body.get('position')}): {query}")
        return body

    def rows(self, query: str) -> list[list[Any]]:
        return list(self.sql(query).get("dataset", []))

    def drop_all_tables(self) -> None:
        """An empty database again, for the next test (the recorder fixes table names)."""
        for (name,) in self.rows("SELECT table_name FROM tables()"):
            if not str(name).startswith(("sys.", "_query_trace", "telemetry")):
                self.sql(f'DROP TABLE IF EXISTS "{name}"')

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """``kill -9``: no shutdown hook runs."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot hear SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> QuestDB:
        """Start the server unless it runs already (``with QuestDB(...).start() as q``
        must not start a second one and lose the first)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/questdb",
        description="Fetch a QuestDB release from Maven Central and run it here, no Docker.",
    )
    parser.add_argument("command", choices=["run", "fetch"], nargs="?", default="run")
    parser.add_argument("--version", default=NEWEST, help=f"release (default {NEWEST})")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.home() / ".local" / "share" / "qos-recorder" / "questdb",
        help="data directory, kept between runs",
    )
    parser.add_argument("--http-port", type=int, default=9000, help="HTTP: SQL, ILP, console")
    parser.add_argument("--ilp-port", type=int, default=9009, help="ILP over TCP")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.version))
            return 0
        server = QuestDB(args.version, args.root, args.http_port, args.ilp_port).start()
    except QuestDBUnavailable as exc:
        print(f"scripts/questdb: {exc}", file=sys.stderr)
        return 1
    print(f"{server.describe()} (root {server.root}, log {server.log})", flush=True)
    print(f'  [sink] kind = "questdb"  questdb = "{server.conf}"', flush=True)
    print(f"  web console and SQL: {server.url}   Ctrl-C stops it", flush=True)
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert server.proc is not None
    while not stopped and server.proc.poll() is None:
        time.sleep(0.2)
    code = server.proc.returncode if server.proc.poll() is not None else 0
    server.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
