"""The QOS-compatible server: the WebSocket ``/ws`` and every HTTP endpoint on one port.

The real service cannot be reached from the build machines, so the demo, the tests and the
benchmark run against this. It follows ``qos-protocol.md``: message shapes, string
decimals, second timestamps, the plan's limits (one WebSocket per key, one request per
second on the socket, 10 HTTP requests a minute, 10 products) answered with non-"OK"
``msg`` replies, and a socket closed when heartbeats stop. The market is
:class:`~recorder.sim.market.Market`; faults are :class:`~recorder.sim.faults.Faults`.

``truth`` holds every record the market produced and ``sent`` every push frame that went
out on each connection, so tests compare what was recorded with what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ..commands import INVALID_REQUEST, Command, Subscriptions, parse, request_codes
from ..protocol import HEARTBEAT, KLINE_TYPES, REQUESTS, Stream, Wire, market_of
from ..serving import bound_port, serve
from .control import Control
from .faults import Faults, malformed
from .market import DEFAULT_CODES, Market


@dataclass
class SimConfig:
    codes: tuple[str, ...] = DEFAULT_CODES
    seed: int = 1
    keys: tuple[str, ...] = ("demo",)
    trades_per_second: float = 4.0
    tick: float = 0.1
    max_products: int = 10
    http_per_minute: int = 10
    ws_min_interval: float = 1.0
    #: The request-rate rule as the vendor's own clients need it: commands ``sleep(1)``
    #: apart arrive 999-1008 ms apart, so ``ws_tolerance`` seconds are forgiven, and an
    #: ``H`` (sent by the Go example together with its first subscription) neither counts
    #: nor is refused. ``strict`` keeps the letter of the rule (every command, H included,
    #: at least ``ws_min_interval`` apart), for tests of the recorder's own discipline.
    ws_tolerance: float = 0.05
    strict: bool = False
    heartbeat_timeout: float = 60.0
    depth_levels: int = 5
    keep_truth: bool = True
    #: trade only while each code's market is open (the reference's hours, lunch breaks
    #: included); False trades round the clock, as tests need at any hour
    market_hours: bool = True
    #: the key of the fault switches under ``/control`` (see :mod:`.control`); None: off
    control_key: str | None = None


@dataclass
class Connection:
    """One client's WebSocket, its subscriptions and a group for its own tasks."""

    id: int
    key: str
    ws: web.WebSocketResponse
    tasks: asyncio.TaskGroup
    subs: Subscriptions = field(default_factory=Subscriptions)
    last_request: float = -1e9
    last_heartbeat: float = field(default_factory=time.monotonic)


class Simulator:
    """The simulated QOS service; ``app`` is the aiohttp application, :meth:`serving` runs
    it with the market and fault loops."""

    def __init__(self, config: SimConfig | None = None, faults: Faults | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = faults or Faults()
        cfg = self.config
        self.market = Market(
            cfg.codes,
            cfg.seed,
            cfg.trades_per_second,
            cfg.tick,
            cfg.depth_levels,
            market_hours=cfg.market_hours,
        )
        self.answers = Answers(self.market)
        self.rng = random.Random(cfg.seed)  # fault decisions; the market has its own
        self.conns: dict[int, Connection] = {}
        self.truth: list[dict[str, Any]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.dropped: list[tuple[int, dict[str, Any]]] = []
        self.connections_opened = 0
        self.refusals: list[tuple[int, str, str]] = []  # (connection, command type, msg)
        self.commands: list[tuple[int, float, str]] = []  # (connection, monotonic time, type)
        self.closed_by_fault = 0
        #: (monotonic time, path) of HTTP requests counted against the plan, and of those
        #: refused because the minute's budget was spent
        self.http_requests: list[tuple[float, str]] = []
        self.http_over_limit: list[tuple[float, str]] = []
        self._http_times: dict[str, deque[float]] = {}
        self._next_conn = 1
        self.app = web.Application()
        self.app.router.add_get("/ws", self._ws)
        for path in (
            "instrument-info",
            "snapshot",
            "depth",
            "trade",
            "kline",
            "history",
            "market-calendar",
            "product-list",
        ):
            self.app.router.add_post(f"/{path}", self._http)
        if cfg.control_key:
            Control(self, cfg.control_key)

    @property
    def codes(self) -> list[str]:
        """The codes the market simulates."""
        return list(self.market.codes)

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
        """``async with sim.serving() as port:`` listening, the market and faults running."""
        runner = await serve(self.app, host, port)
        try:
            async with asyncio.TaskGroup() as tg:
                loops = [tg.create_task(self._market_loop()), tg.create_task(self._chaos_loop())]
                try:
                    yield bound_port(runner)
                finally:
                    for task in loops:
                        task.cancel()
        finally:
            for conn in list(self.conns.values()):
                await conn.ws.close(code=1001, message=b"server shutting down")
            await runner.cleanup()

    def on_subscribed(self, conn: Connection, stream: Stream) -> None:
        """A hook for subclasses (the benchmark's blast mode); nothing here."""

    async def _market_loop(self) -> None:
        tick = self.config.tick
        next_at = time.time()
        while True:
            next_at += tick
            frames = self.market.step(time.time())
            if self.config.keep_truth:
                self.truth.extend(frames)
            await self.push(frames)
            await self._expire_heartbeats()
            await asyncio.sleep(max(0.0, next_at - time.time()))

    async def _chaos_loop(self) -> None:
        last_close = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            every = self.faults.close_every
            if every and time.monotonic() - last_close >= every:
                last_close = time.monotonic()
                for conn in list(self.conns.values()):
                    self.closed_by_fault += 1
                    await conn.ws.close(code=1011, message=b"injected disconnect")
            elif not every:
                last_close = time.monotonic()

    async def disconnect_all(self, reason: str = "injected disconnect") -> None:
        """Close every connection now (tests call it through ``SimulatorThread.run``)."""
        for conn in list(self.conns.values()):
            self.closed_by_fault += 1
            await conn.ws.close(code=1011, message=reason.encode())

    async def _expire_heartbeats(self) -> None:
        limit = self.config.heartbeat_timeout
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if now - conn.last_heartbeat > limit:
                await conn.ws.close(code=1000, message=b"heartbeat timeout")

    async def push(self, frames: list[dict[str, Any]]) -> None:
        """Send push frames to every connection subscribed to them (the market loop
        does; tests push frames of their own)."""
        if self.faults.stall or not self.conns:
            return
        for conn in list(self.conns.values()):
            if conn.ws.closed:
                continue
            for frame in frames:
                if not conn.subs.wants(frame[Wire.TP], frame[Wire.CODE], frame.get(Wire.KT)):
                    continue
                if self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
                    self.dropped.append((conn.id, frame))
                    continue
                if self.faults.malformed_rate and self.rng.random() < self.faults.malformed_rate:
                    await self._send(conn, malformed(frame, self.rng))
                if await self._send(conn, orjson.dumps(frame).decode()):
                    self.sent.append((conn.id, frame))

    async def _send(self, conn: Connection, text: str) -> bool:
        try:
            await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("key") or request.headers.get("key")
        if key not in self.config.keys:
            return web.json_response({"msg": "invalid key"}, status=401)
        if self.faults.refuse_connections:
            return web.json_response({"msg": "service unavailable"}, status=503)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        if any(c.key == key for c in self.conns.values()):
            await ws.close(code=1008, message=b"connection limit exceeded: 1 WebSocket per key")
            return ws
        async with asyncio.TaskGroup() as tasks:
            conn = Connection(self._next_conn, key, ws, tasks)
            self._next_conn += 1
            self.conns[conn.id] = conn
            self.connections_opened += 1
            try:
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        continue
                    if self.faults.stall:
                        continue
                    await self._command(conn, msg.data)
            finally:
                self.conns.pop(conn.id, None)
        return ws

    async def _command(self, conn: Connection, text: str) -> None:
        command = parse(text)
        if command is None:
            await self._send(conn, orjson.dumps(INVALID_REQUEST).decode())
            return
        kind = command.kind
        now = time.monotonic()
        self.commands.append((conn.id, now, kind))
        if self._too_soon(conn, kind, now):
            reply = command.reply("request too frequent: at most 1 request per second")
        elif self.faults.error_replies:
            reply = command.reply("service temporarily unavailable")
        else:
            try:
                reply = command.reply(data=self._apply(conn, command))
            except ValueError as exc:
                reply = command.reply(str(exc))
        if kind == HEARTBEAT and reply["msg"] == "OK":
            conn.last_heartbeat = now
        if reply["msg"] != "OK":
            self.refusals.append((conn.id, kind, reply["msg"]))
        await self._send(conn, orjson.dumps(reply).decode())

    def _too_soon(self, conn: Connection, kind: str, now: float) -> bool:
        """Whether a command breaks the 1 request/s rule (see :class:`SimConfig`)."""
        cfg = self.config
        if cfg.strict:
            too_soon = now - conn.last_request < cfg.ws_min_interval
            conn.last_request = now
            return too_soon
        if kind == HEARTBEAT:
            return False
        too_soon = now - conn.last_request < cfg.ws_min_interval - cfg.ws_tolerance
        if not too_soon:
            conn.last_request = now
        return too_soon

    def _apply(self, conn: Connection, command: Command) -> list[Any] | None:
        kind, req = command.kind, command.req
        if kind == HEARTBEAT:
            return None
        if command.subscription is not None:
            self._subscribe(conn, *command.subscription, req)
            return None
        what = REQUESTS.get(kind)
        if what == Stream.KLINES.tp:
            return self.answers.klines(req, history=kind == "RH")
        if what is not None:
            return self.answers.data(what, req)
        raise ValueError(f"unknown type: {kind}")

    def _subscribe(
        self, conn: Connection, stream: Stream, adding: bool, req: dict[str, Any]
    ) -> None:
        """A subscribe (or cancel) command, within the plan's product limit."""
        codes = self.answers.codes(req)
        if adding:
            if stream is Stream.KLINES and req.get(Wire.KT) not in KLINE_TYPES:
                raise ValueError("invalid kt")
            if len(conn.subs.products() | set(codes)) > self.config.max_products:
                raise ValueError(f"product limit exceeded: plan allows {self.config.max_products}")
        conn.subs.change(stream, adding, codes, req.get(Wire.KT))
        if adding:
            self.on_subscribed(conn, stream)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("key") or request.headers.get("key")
        if self.faults.http_delay:
            await asyncio.sleep(self.faults.http_delay)
        if self.faults.http_status is not None and self.faults.http_fail_count != 0:
            if self.faults.http_fail_count is not None:
                self.faults.http_fail_count -= 1
            return web.Response(status=self.faults.http_status, text="injected failure")
        if key not in self.config.keys:
            return web.json_response({"msg": "invalid key"})
        times = self._http_times.setdefault(key, deque())
        now = time.monotonic()
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= self.config.http_per_minute:
            self.http_over_limit.append((now, request.path))
            return web.json_response(
                {"msg": f"request limit exceeded: {self.config.http_per_minute} per minute"}
            )
        times.append(now)
        self.http_requests.append((now, request.path))
        try:
            body = await request.json(loads=orjson.loads)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            data = self.answers.endpoint(request.path.strip("/"), body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.json_response({"msg": str(exc) or "invalid request"})
        return web.Response(
            body=orjson.dumps({"msg": "OK", "data": data}), content_type="application/json"
        )

    # --- ground truth -------------------------------------------------------------------

    def sent_frames(self, tp: str | None = None) -> list[dict[str, Any]]:
        """Every push frame that went out, optionally of one ``tp``."""
        return [f for _, f in self.sent if tp is None or f[Wire.TP] == tp]

    def truth_frames(self, tp: str, codes: set[str] | None = None) -> list[dict[str, Any]]:
        """Every record the market produced of one ``tp``."""
        return [
            f for f in self.truth if f[Wire.TP] == tp and (codes is None or f[Wire.CODE] in codes)
        ]

    def export_truth(self, path: str) -> None:
        """Write the ground truth as NDJSON: every frame produced, then every frame sent."""
        with open(path, "wb") as out:
            for frame in self.truth:
                out.write(orjson.dumps({"truth": frame}) + b"\n")
            for conn, frame in self.sent:
                out.write(orjson.dumps({"sent": frame, "conn": conn}) + b"\n")


class Answers:
    """What the service answers from the market: the ``R*`` requests on the socket and the
    HTTP endpoints alike. A malformed request raises ValueError, whose text is the ``msg``
    of the reply."""

    def __init__(self, market: Market) -> None:
        self.market = market

    def codes(self, req: dict[str, Any]) -> list[str]:
        """The codes of a request, each a well-formed code of a known market; any such
        code is served, its market created on first use."""
        codes = request_codes(req)
        for code in codes:
            self.market.ensure(code)
        return codes

    def data(self, what: str, req: dict[str, Any]) -> list[Any]:
        codes = self.codes(req)
        market, ts = self.market, int(time.time())
        if what == "T":
            count = req.get("count", 10)
            if not isinstance(count, int):
                raise ValueError("count must be an integer")
            return [_record(t) for c in codes for t in market.recent_trades(c, count)]
        if what == "S":
            return [_record(market.snapshot(c, ts)) for c in codes]
        if what == "D":
            return [_record(market.depth(c, ts)) for c in codes]
        return [market.info(c) for c in codes]

    def klines(self, req: dict[str, Any], history: bool) -> list[Any]:
        reqs = req.get("kline_reqs")
        if not isinstance(reqs, list):
            raise ValueError("kline_reqs must be a list")
        out = []
        for kr in reqs:
            if not isinstance(kr, dict) or kr.get(Wire.KT) not in KLINE_TYPES:
                raise ValueError("invalid kline_reqs entry")
            count = kr.get(Wire.COUNT, 10)
            end = kr.get(Wire.END) if history else None
            if history and not isinstance(end, int):
                raise ValueError("history needs e")
            for code in self.codes({"codes": [kr.get(Wire.CODE)]}):
                bars = self.market.bars(code, kr[Wire.KT], count, end)
                bars = [{**_record(f), Wire.CODE: code} for f in bars]
                out.append({Wire.CODE: code, Wire.BARS: bars})
        return out

    def endpoint(self, path: str, body: dict[str, Any]) -> Any:
        simple = {"snapshot": "S", "depth": "D", "trade": "T", "instrument-info": "I"}
        if path in simple:
            return self.data(simple[path], body)
        if path in ("kline", "history"):
            return self.klines(body, history=path == "history")
        markets = body.get("market")
        if not isinstance(markets, list):
            raise ValueError("market must be a list")
        if path == "market-calendar":
            return {m: self.market.calendar() for m in markets}
        return {
            m: [{"code": c, "name": c} for c in self.market.codes if market_of(c) == m]
            for m in markets
        }


def _record(frame: dict[str, Any]) -> dict[str, Any]:
    """A push frame as an HTTP / R* record: the same fields without ``tp``."""
    return {k: v for k, v in frame.items() if k != Wire.TP}
