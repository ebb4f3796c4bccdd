"""A scripted hostile upstream for tests: a WebSocket and HTTP server on loopback that says
exactly what a test tells it to, malformed or not.

    with Hostile() as up:
        up.frames.append('{"tp":[1]}')          # pushed to every client once it subscribed
        up.http["/trade"] = Answer(chunks=[b'{"msg":"OK",', b'"data":[]}'], drip=0.05)
        config = ... up.ws_url, up.http_url ...
        up.push('{"tp":"T", ...}')              # to the clients connected now

The WebSocket at ``/ws`` answers every command with ``{"type": <same>, "msg": "OK",
"reqid": <echo>}`` (or what ``reply`` returns) and then pushes ``frames`` as raw text.
Every HTTP POST is answered from ``http[path]``: an :class:`Answer` or a callable taking
the :class:`Request` and returning one; a path without an entry gets an empty OK answer
(``"data": []``, or ``{}`` for ``/market-calendar``). ``ws_answer`` makes ``/ws`` answer
the handshake with an :class:`Answer` (a redirect) instead of upgrading; ``handshakes``
records every handshake's headers.
It runs on its own event loop in a background thread, like :mod:`simulated`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from simulated import LoopThread

from recorder.serving import bound_port, serve


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer. ``body`` is sent at once; ``chunks`` are sent one by one,
    ``drip`` seconds apart, chunked (no Content-Length)."""

    body: bytes = b'{"msg":"OK","data":[]}'
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    drip: float = 0.0

    @classmethod
    def json(cls, doc: Any, status: int = 200) -> Answer:
        """``doc`` as a JSON body."""
        return cls(orjson.dumps(doc), status)

    @classmethod
    def ok(cls, data: Any) -> Answer:
        """``{"msg":"OK","data":data}``."""
        return cls.json({"msg": "OK", "data": data})

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Answer:
        return cls(b"", status, {"Location": location})


@dataclass(frozen=True)
class Request:
    """An HTTP request the server got."""

    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)


Script = Answer | Callable[[Request], Answer]


class Hostile(LoopThread):
    """``with Hostile() as up:`` the scripted server on a free loopback port."""

    name = "hostile server"

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host, 0)
        #: raw text frames pushed to each client after its first OK reply to a subscription
        self.frames: list[str] = []
        #: answers per HTTP path (``"/trade"``)
        self.http: dict[str, Script] = {}
        #: the command reply for a command; None sends nothing (a silent server)
        self.reply: Callable[[dict[str, Any]], str | None] = _echo
        #: what clients sent: commands (parsed) and HTTP requests, in arrival order
        self.commands: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        #: the headers of every WebSocket handshake
        self.handshakes: list[dict[str, str]] = []
        self.connections = 0
        #: when set, ``/ws`` answers the handshake with this instead of upgrading
        self.ws_answer: Answer | None = None
        self._clients: set[web.WebSocketResponse] = set()

    def push(self, *frames: str | bytes) -> int:
        """Send raw frames to every client connected now; how many clients got them."""

        async def send() -> int:
            for ws in list(self._clients):
                for frame in frames:
                    await ws.send_str(frame.decode() if isinstance(frame, bytes) else frame)
            return len(self._clients)

        return self.run(send())

    def close_clients(self) -> None:
        """Close every client's socket (code 1011)."""

        async def close() -> None:
            for ws in list(self._clients):
                await ws.close(code=1011, message=b"hostile close")

        self.run(close())

    @property
    def clients(self) -> int:
        return len(self._clients)

    @asynccontextmanager
    async def _listen(self) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/{path:.*}", self._post)
        runner = await serve(app, self.host, 0)
        try:
            yield bound_port(runner)
            for ws in list(self._clients):
                await ws.close(code=1001, message=b"server shutting down")
        finally:
            await runner.cleanup()

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(dict(request.headers))
        if self.ws_answer is not None:
            scripted = self.ws_answer
            return web.Response(
                body=scripted.body, status=scripted.status, headers=scripted.headers
            )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._clients.add(ws)
        pushed = False
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    command = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    continue
                if type(command) is not dict:
                    continue
                self.commands.append(command)
                answer = self.reply(command)
                if answer is None:
                    continue
                await ws.send_str(answer)
                if not pushed and command.get("type") not in ("H", None):
                    pushed = True
                    for frame in list(self.frames):
                        await ws.send_str(frame)
        finally:
            self._clients.discard(ws)
        return ws

    async def _post(self, request: web.Request) -> web.StreamResponse:
        got = Request("/" + request.match_info["path"], await request.read(), dict(request.headers))
        self.requests.append(got)
        script = self.http.get(got.path) or _EMPTY.get(got.path, Answer())
        answer = script if isinstance(script, Answer) else script(got)
        if answer.chunks is None:
            return web.Response(body=answer.body, status=answer.status, headers=answer.headers)
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i, chunk in enumerate(answer.chunks):
            if i and answer.drip:
                await asyncio.sleep(answer.drip)
            await response.write(chunk)
        await response.write_eof()
        return response


_EMPTY: dict[str, Answer] = {"/market-calendar": Answer.ok({})}


def _echo(command: dict[str, Any]) -> str:
    reply: dict[str, Any] = {"type": command.get("type"), "msg": "OK"}
    if "reqid" in command:
        reply["reqid"] = command["reqid"]
    return orjson.dumps(reply).decode()
