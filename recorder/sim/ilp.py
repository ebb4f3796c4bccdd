"""A small ILP/HTTP receiver, run inside a test, that parses what the real client sends.

It answers the ``questdb`` client's ``GET /settings`` (advertising ILP versions 1 and 2),
``POST /write`` (parsing the line protocol back into rows, binary doubles included) and
``GET /exec`` (recording DDL and queries). It can fail on purpose: answer 503, or stop
accepting connections, to test what the recorder does when the database is down.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


@dataclass
class IlpRow:
    table: str
    symbols: dict[str, str]
    fields: dict[str, Any]
    ts: int | None


class IlpError(ValueError):
    pass


def _name(data: bytes, i: int, stops: bytes) -> tuple[str, int]:
    out = bytearray()
    while i < len(data) and data[i] not in stops:
        if data[i] == 0x5C:  # backslash escapes the next byte
            i += 1
        out.append(data[i])
        i += 1
    return out.decode(), i


def _string(data: bytes, i: int) -> tuple[str, int]:
    out = bytearray()
    while data[i] != 0x22:
        if data[i] == 0x5C:
            i += 1
        out.append(data[i])
        i += 1
    return out.decode(), i + 1


def _scalar(token: str) -> Any:
    if token in ("t", "T", "true"):
        return True
    if token in ("f", "F", "false"):
        return False
    if token.endswith("i"):
        return int(token[:-1])
    if token.endswith("n"):
        return ("ts_ns", int(token[:-1]))
    if token.endswith("t"):
        return ("ts_ns", int(token[:-1]) * 1000)
    return float(token)


def parse_ilp(data: bytes) -> list[IlpRow]:
    """Parse ILP (v1 text or v2 with binary doubles) into rows; IlpError when malformed."""
    rows: list[IlpRow] = []
    i = 0
    try:
        while i < len(data):
            table, i = _name(data, i, b", ")
            symbols: dict[str, str] = {}
            while data[i] == 0x2C:
                key, i = _name(data, i + 1, b"=")
                value, i = _name(data, i + 1, b", ")
                symbols[key] = value
            if data[i] != 0x20:
                raise IlpError(f"expected space after tags at {i}")
            i += 1
            fields: dict[str, Any] = {}
            while True:
                key, i = _name(data, i, b"=")
                i += 1
                if data[i] == 0x3D:  # '=' then a binary value
                    kind = data[i + 1]
                    if kind != 16:
                        raise IlpError(f"unsupported binary type {kind}")
                    fields[key] = struct.unpack_from("<d", data, i + 2)[0]
                    i += 10
                elif data[i] == 0x22:
                    fields[key], i = _string(data, i + 1)
                else:
                    j = i
                    while data[j] not in b", \n":
                        j += 1
                    fields[key] = _scalar(data[i:j].decode())
                    i = j
                if data[i] == 0x2C:
                    i += 1
                    continue
                break
            ts = None
            if data[i] == 0x20:
                j = data.index(b"\n", i)
                token = data[i + 1 : j].decode()
                ts = int(token[:-1]) if token.endswith("n") else int(token.rstrip("t")) * 1000
                i = j
            if data[i] != 0x0A:
                raise IlpError(f"expected newline at {i}")
            i += 1
            rows.append(IlpRow(table, symbols, fields, ts))
    except IndexError:
        raise IlpError("truncated line") from None
    return rows


@dataclass
class Receiver:
    """The receiver's state; ``mode`` is ``ok``, ``fail`` (HTTP 503) or ``discard``."""

    mode: str = "ok"
    rows: list[IlpRow] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    writes: int = 0
    failed_writes: int = 0
    write_bytes: int = 0
    connections: set[Any] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def table(self, name: str) -> list[IlpRow]:
        with self.lock:
            return [r for r in self.rows if r.table == name]


#: what ``/settings`` answers: the ILP versions and the name length the client asks about
_SETTINGS: dict[str, Any] = {
    "config": {"line.proto.support.versions": [1, 2], "cairo.max.file.name.length": 127}
}


class _Handler(BaseHTTPRequestHandler):
    """QuestDB's HTTP endpoints as the client uses them: ``/settings``, ``/exec`` and ILP
    writes; each server gets a subclass bound to its :class:`Receiver` (:func:`_handler`)."""

    protocol_version = "HTTP/1.1"
    state: ClassVar[Receiver]

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        super().finish()
        with self.state.lock:
            self.state.connections.discard(self.connection)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        if url.path == "/settings":
            self._json(200, _SETTINGS)
        elif url.path == "/exec":
            self._exec(urllib.parse.parse_qs(url.query).get("query", [""])[0])
        else:
            self._json(404, {"error": "not found"})

    def _exec(self, query: str) -> None:
        """A statement is kept and answered: an empty result for a SELECT, OK otherwise."""
        if self.state.mode == "fail":
            self._json(503, {"error": "injected failure"})
            return
        with self.state.lock:
            self.state.statements.append(query)
        if query.lstrip().upper().startswith("SELECT"):
            self._json(200, {"query": query, "columns": [], "dataset": [], "count": 0})
        else:
            self._json(200, {"ddl": "OK"})

    def do_POST(self) -> None:
        """An ILP write: counted, parsed and kept (unless discarding); 204 as QuestDB."""
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length)
        state = self.state
        if state.mode == "fail":
            with state.lock:
                state.failed_writes += 1
            self._json(503, {"code": "internal error", "message": "injected failure"})
            return
        with state.lock:
            state.writes += 1
            state.write_bytes += len(data)
        if state.mode != "discard":
            try:
                rows = parse_ilp(data)
            except IlpError as exc:
                self._json(400, {"code": "invalid", "message": str(exc)})
                return
            with state.lock:
                state.rows.extend(rows)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _handler(state: Receiver) -> type[BaseHTTPRequestHandler]:
    """The request handler class of one server, bound to its receiver's state."""
    return type("Handler", (_Handler,), {"state": state})


class IlpServer:
    """``with IlpServer() as srv:`` a receiver on a free loopback port; ``conf`` is the
    client conf string. ``stop()`` then ``start()`` refuses connections in between."""

    def __init__(self, mode: str = "ok") -> None:
        self.state = Receiver(mode=mode)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.state.lock:  # drop keep-alive connections too: the database is gone
            for conn in list(self.state.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> IlpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def conf(self) -> str:
        return f"http::addr=127.0.0.1:{self.port};retry_timeout=500;request_timeout=2000;"
