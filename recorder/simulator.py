"""A QOS-compatible simulator: the WebSocket ``/ws`` and every HTTP endpoint on one port.

The real service cannot be reached from the build machines, so the demo, the tests and the
benchmark run against this. It follows ``qos-protocol.md``: message shapes, string
decimals, second timestamps, the plan's limits (one WebSocket per key, one request per
second on the socket, 10 HTTP requests a minute, 10 products) answered with non-"OK"
``msg`` replies, and a socket closed when heartbeats stop.

The market is synthetic and deterministic per seed: each tick draws trades per code from
one ``random.Random(seed)``; snapshots carry the day's cumulative volume and turnover of
exactly those trades (kept as integers, so they add up), K-lines aggregate them, depth
brackets the last price, and ``/trade`` and ``/history`` serve the same history that was
pushed. Several trades of one code share a second, identical ones included.

Faults (each switchable while running through :class:`Faults`): close every N seconds,
stall, drop single frames, send malformed frames, answer commands with errors, HTTP
429/500 and slow responses. ``truth`` holds every record produced and ``sent`` every push
frame that went out on each connection, so tests compare what was recorded with what
happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, web

from .protocol import KLINE_TYPES, MAX_TRADE_COUNT, SUBSCRIBE, UNSUBSCRIBE, market_of, split_codes
from .serving import bound_port, serve

DEFAULT_CODES: Final = ("US:AAPL", "US:TSLA", "HK:700", "SH:600519", "CF:BTCUSDT")
_STREAM_OF: Final = {v: k for k, v in SUBSCRIBE.items()} | {v: k for k, v in UNSUBSCRIBE.items()}
#: price decimals, size decimals, start price (in price units), sizes (in size units)
_MARKET_SHAPE: Final[dict[str, tuple[int, int, int, tuple[int, ...]]]] = {
    "US": (2, 0, 21000, (1, 10, 100, 100, 200, 500)),
    "HK": (1, 0, 4000, (100, 100, 200, 500, 1000)),
    "SH": (2, 0, 150000, (100, 100, 200, 300)),
    "SZ": (2, 0, 2500, (100, 100, 200, 300)),
    "CF": (1, 3, 830000, (1, 10, 25, 100, 1000)),
}
_DEFAULT_SHAPE: Final = (4, 0, 10000, (1, 2, 5, 10))


@dataclass
class Faults:
    """Fault injection; change attributes while the simulator runs."""

    close_every: float | None = None
    stall: bool = False
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    error_replies: bool = False
    http_status: int | None = None
    http_fail_count: int | None = None
    http_delay: float = 0.0
    refuse_connections: bool = False


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
    heartbeat_timeout: float = 60.0
    depth_levels: int = 5
    keep_truth: bool = True
    #: Benchmark mode: instead of the market, push trade frames to every trades subscriber
    #: as fast as possible (0) or at this many frames a second.
    blast_rate: float | None = None
    #: In blast mode, put a sequence number in each frame's ``v`` and log its send time.
    blast_latency: bool = False


@dataclass
class _Code:
    code: str
    price_dp: int
    size_dp: int
    price: int
    sizes: tuple[int, ...]
    day: int = -1
    open: int = 0
    high: int = 0
    low: int = 0
    prev_close: int = 0
    volume: int = 0
    turnover: int = 0
    last_trade: tuple[int, int, int] | None = None
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    bars: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _Conn:
    id: int
    key: str
    ws: web.WebSocketResponse
    subs: dict[str, set[str]] = field(
        default_factory=lambda: {s: set() for s in SUBSCRIBE.values()}
    )
    kline_subs: set[tuple[str, int]] = field(default_factory=set)
    last_request: float = -1e9
    last_heartbeat: float = field(default_factory=time.monotonic)


def _dec(units: int, dp: int) -> str:
    """Integer units with ``dp`` implied decimals as a decimal string."""
    if dp == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(dp + 1, "0")
    return f"{sign}{digits[:-dp]}.{digits[-dp:]}"


def bar_open(ts: int, kt: int) -> int:
    """The open time (unix s) of the ``kt`` bar holding ``ts``."""
    if kt < 1000:
        return ts - ts % (kt * 60)
    day = dt.datetime.fromtimestamp(ts, dt.UTC).replace(hour=0, minute=0, second=0)
    if kt == 1007:
        day -= dt.timedelta(days=day.weekday())
    elif kt == 1030:
        day = day.replace(day=1)
    elif kt == 2001:
        day = day.replace(month=1, day=1)
    return int(day.timestamp())


class Simulator:
    """The simulated QOS service; ``app`` is the aiohttp application to serve."""

    def __init__(self, config: SimConfig | None = None, faults: Faults | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = faults or Faults()
        self.rng = random.Random(self.config.seed)
        self.codes = {c: self._new_code(c) for c in split_codes(list(self.config.codes))}
        self.conns: dict[int, _Conn] = {}
        self.truth: list[dict[str, Any]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.dropped: list[tuple[int, dict[str, Any]]] = []
        self.connections_opened = 0
        self.refusals: list[tuple[int, str, str]] = []  # (connection, command type, msg)
        self.commands: list[tuple[int, float, str]] = []  # (connection, monotonic time, type)
        self.closed_by_fault = 0
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
        self.app.on_startup.append(self._start)
        self.app.on_shutdown.append(self._shutdown)
        self._tasks: list[asyncio.Task[None]] = []
        self.blast_sent_ns: list[int] = []
        self._blasters: dict[int, asyncio.Task[None]] = {}

    def _new_code(self, code: str) -> _Code:
        price_dp, size_dp, price, sizes = _MARKET_SHAPE.get(market_of(code), _DEFAULT_SHAPE)
        price += self.rng.randrange(0, price // 10 + 1)
        return _Code(code, price_dp, size_dp, price, sizes, prev_close=price)

    # --- the market ---------------------------------------------------------------------

    def step(self, now: float) -> list[dict[str, Any]]:
        """Advance the market one tick at wall time ``now``; the push frames it produced."""
        ts = int(now)
        frames: list[dict[str, Any]] = []
        rate = self.config.trades_per_second * self.config.tick
        for c in self.codes.values():
            if c.day != ts // 86400:
                self._new_day(c, ts)
            traded: list[tuple[int, int]] = []
            for _ in range(int(rate + self.rng.random())):
                frames.append(self._trade(c, ts))
                assert c.last_trade is not None
                traded.append(c.last_trade[:2])
            if traded or self.rng.random() < self.config.tick:
                frames.append(self._snapshot(c, ts))
                frames.append(self._depth(c, ts))
            if traded:
                frames.extend(self._bars(c, ts, traded))
        if self.config.keep_truth:
            self.truth.extend(frames)
        return frames

    def _new_day(self, c: _Code, ts: int) -> None:
        if c.day >= 0:
            c.prev_close = c.price
        c.day, c.open, c.high, c.low = ts // 86400, c.price, c.price, c.price
        c.volume = c.turnover = 0

    def _trade(self, c: _Code, ts: int) -> dict[str, Any]:
        rng = self.rng
        if c.last_trade is not None and rng.random() < 0.3:
            price, size, side = c.last_trade  # an identical trade in the same second
        else:
            if rng.random() < 0.3:
                c.price = max(1, c.price + rng.choice((-2, -1, 1, 2)))
            price, size, side = c.price, rng.choice(c.sizes), rng.choice((1, 2, 1, 2, 0))
        c.last_trade = (price, size, side)
        c.high, c.low = max(c.high, price), min(c.low, price)
        c.volume += size
        c.turnover += price * size
        frame = {
            "tp": "T",
            "c": c.code,
            "p": _dec(price, c.price_dp),
            "v": _dec(size, c.size_dp),
            "ts": ts,
            "d": side,
        }
        c.trades.append(frame)
        return frame

    def _snapshot(self, c: _Code, ts: int) -> dict[str, Any]:
        p = c.price_dp
        frame: dict[str, Any] = {
            "tp": "S",
            "c": c.code,
            "lp": _dec(c.price, p),
            "yp": _dec(c.prev_close, p),
            "o": _dec(c.open, p),
            "h": _dec(c.high, p),
            "l": _dec(c.low, p),
            "ts": ts,
            "v": _dec(c.volume, c.size_dp),
            "t": _dec(c.turnover, p + c.size_dp),
            "s": 0,
        }
        if market_of(c.code) == "US":
            frame["tt"] = 3
            frame["pq"] = {
                "lp": _dec(c.open, p),
                "yp": _dec(c.prev_close, p),
                "h": _dec(c.open, p),
                "l": _dec(c.open, p),
                "ts": ts - ts % 86400,
                "v": "0",
                "t": "0",
            }
        return frame

    def _depth(self, c: _Code, ts: int) -> dict[str, Any]:
        levels, p = self.config.depth_levels, c.price_dp
        sizes = [self.rng.choice(c.sizes) * (i + 1) for i in range(2 * levels)]
        return {
            "tp": "D",
            "c": c.code,
            "b": [
                {"p": _dec(c.price - i, p), "v": _dec(sizes[i], c.size_dp)} for i in range(levels)
            ],
            "a": [
                {"p": _dec(c.price + 1 + i, p), "v": _dec(sizes[levels + i], c.size_dp)}
                for i in range(levels)
            ],
            "ts": ts,
        }

    def _bars(self, c: _Code, ts: int, traded: list[tuple[int, int]]) -> list[dict[str, Any]]:
        frames = []
        for kt in sorted(KLINE_TYPES):
            opened = bar_open(ts, kt)
            bars = c.bars.setdefault(kt, {})
            bar = bars.get(opened)
            for price, size in traded:
                if bar is None:
                    bar = bars[opened] = {"o": price, "h": price, "l": price, "cl": price, "v": 0}
                bar["h"], bar["l"] = max(bar["h"], price), min(bar["l"], price)
                bar["cl"] = price
                bar["v"] += size
            if bar is not None:
                frames.append(self._bar_frame(c, kt, opened, bar))
        return frames

    def _bar_frame(self, c: _Code, kt: int, opened: int, bar: dict[str, Any]) -> dict[str, Any]:
        p = c.price_dp
        return {
            "tp": "K",
            "c": c.code,
            "o": _dec(bar["o"], p),
            "cl": _dec(bar["cl"], p),
            "h": _dec(bar["h"], p),
            "l": _dec(bar["l"], p),
            "v": _dec(bar["v"], c.size_dp),
            "ts": opened,
            "kt": kt,
        }

    # --- serving ------------------------------------------------------------------------

    async def _start(self, app: web.Application) -> None:
        if self.config.blast_rate is not None:
            self._templates = self._blast_templates()
            self._tasks = [asyncio.create_task(self._chaos_loop())]
            return
        self._tasks = [
            asyncio.create_task(self._market_loop()),
            asyncio.create_task(self._chaos_loop()),
        ]

    async def _shutdown(self, app: web.Application) -> None:
        tasks = [*self._tasks, *self._blasters.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.conns.values()):
            await conn.ws.close(code=1001, message=b"server shutting down")

    async def _market_loop(self) -> None:
        tick = self.config.tick
        next_at = time.time()
        while True:
            next_at += tick
            frames = self.step(time.time())
            await self._push(frames)
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

    def _blast_templates(self) -> list[str]:
        """Trade frames from the market model with ``%d`` for ``ts`` (and ``v`` in latency
        mode), so the mix of prices and sizes per second stays realistic."""
        keep, self.config.keep_truth = self.config.keep_truth, False
        rate, self.config.trades_per_second = self.config.trades_per_second, 2000.0
        frames: list[dict[str, Any]] = []
        now = time.time()
        while len(frames) < 20000:
            frames.extend(f for f in self.step(now) if f["tp"] == "T")
        self.config.keep_truth, self.config.trades_per_second = keep, rate
        out = []
        for f in frames:
            body = {**f, "ts": 0}
            if self.config.blast_latency:
                body["v"] = "SEQ"
            text = orjson.dumps(body).decode().replace('"ts":0', '"ts":%d')
            out.append(text.replace('"SEQ"', '"%d"'))
        return out

    async def _blast(self, conn: _Conn) -> None:
        """Push template trades to one connection until it closes."""
        templates, n = self._templates, len(self._templates)
        rate = self.config.blast_rate or None
        latency = self.config.blast_latency
        sent_ns = self.blast_sent_ns
        ws = conn.ws
        i = 0
        started = time.monotonic()
        while not ws.closed:
            second = int(time.time())
            for _ in range(200):
                template = templates[i % n]
                if latency:
                    text = template % (len(sent_ns), second)
                    sent_ns.append(time.time_ns())
                else:
                    text = template % second
                i += 1
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    return
            if rate is not None:
                wait = started + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                await asyncio.sleep(0)  # let commands and heartbeats through

    async def _expire_heartbeats(self) -> None:
        limit = self.config.heartbeat_timeout
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if now - conn.last_heartbeat > limit:
                await conn.ws.close(code=1000, message=b"heartbeat timeout")

    def _wants(self, conn: _Conn, frame: dict[str, Any]) -> bool:
        tp, code = frame["tp"], frame["c"]
        if tp == "K":
            return (code, frame["kt"]) in conn.kline_subs
        return code in conn.subs[tp]

    async def _push(self, frames: list[dict[str, Any]]) -> None:
        if self.faults.stall or not self.conns:
            return
        for conn in list(self.conns.values()):
            if conn.ws.closed:
                continue
            for frame in frames:
                if not self._wants(conn, frame):
                    continue
                if self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
                    self.dropped.append((conn.id, frame))
                    continue
                if self.faults.malformed_rate and self.rng.random() < self.faults.malformed_rate:
                    await self._send(conn, self._malformed(frame))
                if await self._send(conn, orjson.dumps(frame).decode()):
                    self.sent.append((conn.id, frame))

    def _malformed(self, frame: dict[str, Any]) -> str:
        kind = self.rng.randrange(3)
        if kind == 0:
            return orjson.dumps(frame).decode()[:-7]  # cut short
        if kind == 1:
            return orjson.dumps({**frame, "ts": "yesterday"}).decode()
        return orjson.dumps({**frame, "c": 42}).decode()

    async def _send(self, conn: _Conn, text: str) -> bool:
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
        conn = _Conn(self._next_conn, key, ws)
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
            blaster = self._blasters.pop(conn.id, None)
            if blaster is not None:
                blaster.cancel()
        return ws

    async def _command(self, conn: _Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
            kind = req["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self._send(conn, orjson.dumps({"type": "", "msg": "invalid request"}).decode())
            return
        reply: dict[str, Any] = {"type": kind, "msg": "OK", "time": int(time.time())}
        if "reqid" in req:
            reply["reqid"] = req["reqid"]
        now = time.monotonic()
        self.commands.append((conn.id, now, kind))
        too_soon = now - conn.last_request < self.config.ws_min_interval
        conn.last_request = now
        if too_soon:
            reply["msg"] = "request too frequent: at most 1 request per second"
        elif self.faults.error_replies:
            reply["msg"] = "service temporarily unavailable"
        else:
            try:
                data = self._apply(conn, kind, req)
            except ValueError as exc:
                reply["msg"] = str(exc)
            else:
                if data is not None:
                    reply["data"] = data
        if kind == "H" and reply["msg"] == "OK":
            conn.last_heartbeat = now
        if reply["msg"] != "OK":
            self.refusals.append((conn.id, kind, reply["msg"]))
        await self._send(conn, orjson.dumps(reply).decode())

    def _codes(self, req: dict[str, Any]) -> list[str]:
        entries = req.get("codes")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError("codes must be a list of strings")
        codes = split_codes(entries)
        for code in codes:
            if code not in self.codes:
                raise ValueError(f"invalid code: {code}")
        return codes

    def _apply(self, conn: _Conn, kind: str, req: dict[str, Any]) -> list[Any] | None:
        if kind == "H":
            return None
        if kind in _STREAM_OF:
            codes = self._codes(req)
            tp = SUBSCRIBE[_STREAM_OF[kind]]
            if kind in UNSUBSCRIBE.values():
                if tp == "K":
                    conn.kline_subs -= {(c, req.get("kt")) for c in codes}
                else:
                    conn.subs[tp] -= set(codes)
                return None
            if tp == "K" and req.get("kt") not in KLINE_TYPES:
                raise ValueError("invalid kt")
            products = self._products(conn) | set(codes)
            if len(products) > self.config.max_products:
                raise ValueError(f"product limit exceeded: plan allows {self.config.max_products}")
            if tp == "K":
                conn.kline_subs |= {(c, req["kt"]) for c in codes}
            else:
                conn.subs[tp] |= set(codes)
            if tp == "T" and self.config.blast_rate is not None and conn.id not in self._blasters:
                self._blasters[conn.id] = asyncio.create_task(self._blast(conn))
            return None
        if kind in ("RS", "RT", "RD", "RI"):
            return self._data(kind[1], req)
        if kind in ("RK", "RH"):
            return self._klines(req, history=kind == "RH")
        raise ValueError(f"unknown type: {kind}")

    def _products(self, conn: _Conn) -> set[str]:
        codes = set().union(*conn.subs.values())
        return codes | {c for c, _ in conn.kline_subs}

    def _data(self, what: str, req: dict[str, Any]) -> list[Any]:
        codes = self._codes(req)
        ts = int(time.time())
        if what == "T":
            count = req.get("count", 10)
            if not isinstance(count, int) or not 1 <= count <= MAX_TRADE_COUNT:
                raise ValueError(f"count must be 1 to {MAX_TRADE_COUNT}")
            return [_record(t) for c in codes for t in list(self.codes[c].trades)[-count:]]
        if what == "S":
            return [_record(self._snapshot(self.codes[c], ts)) for c in codes]
        if what == "D":
            return [_record(self._depth(self.codes[c], ts)) for c in codes]
        return [self._info(c) for c in codes]

    def _info(self, code: str) -> dict[str, Any]:
        market = market_of(code)
        info: dict[str, Any] = {"c": code, "e": market, "tc": "USDT" if market == "CF" else "USD"}
        if market != "CF":
            info.update(
                nc=code,
                ne=code,
                ls=100,
                ts="1000000000",
                os="1000000000",
                ep="1.5",
                na="10.2",
                dy="0.01",
            )
        return info

    def _klines(self, req: dict[str, Any], history: bool) -> list[Any]:
        reqs = req.get("kline_reqs")
        if not isinstance(reqs, list):
            raise ValueError("kline_reqs must be a list")
        out = []
        for kr in reqs:
            if not isinstance(kr, dict) or kr.get("kt") not in KLINE_TYPES:
                raise ValueError("invalid kline_reqs entry")
            count = kr.get("co", 10)
            end = kr.get("e") if history else None
            if history and not isinstance(end, int):
                raise ValueError("history needs e")
            for code in self._codes({"codes": [kr.get("c")]}):
                c = self.codes[code]
                bars = sorted(c.bars.get(kr["kt"], {}).items())
                if end is not None:
                    bars = [(o, b) for o, b in bars if o <= end]
                frames = [self._bar_frame(c, kr["kt"], o, b) for o, b in bars[-count:]]
                out.append({"c": code, "k": [{**_record(f), "c": code} for f in frames]})
        return out

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
            return web.json_response(
                {"msg": f"request limit exceeded: {self.config.http_per_minute} per minute"}
            )
        times.append(now)
        try:
            body = await request.json(loads=orjson.loads)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            data = self._endpoint(request.path.strip("/"), body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.json_response({"msg": str(exc) or "invalid request"})
        return web.Response(
            body=orjson.dumps({"msg": "OK", "data": data}), content_type="application/json"
        )

    def _endpoint(self, path: str, body: dict[str, Any]) -> Any:
        simple = {"snapshot": "S", "depth": "D", "trade": "T", "instrument-info": "I"}
        if path in simple:
            return self._data(simple[path], body)
        if path in ("kline", "history"):
            return self._klines(body, history=path == "history")
        markets = body.get("market")
        if not isinstance(markets, list):
            raise ValueError("market must be a list")
        if path == "market-calendar":
            return {m: self._calendar() for m in markets}
        return {
            m: [{"code": c, "name": c} for c in self.codes if market_of(c) == m] for m in markets
        }

    @staticmethod
    def _calendar() -> list[str]:
        today = dt.datetime.now(dt.UTC).date()
        days = (today + dt.timedelta(days=i) for i in range(-45, 46))
        return [f"{d:%Y%m%d},F" for d in days if d.weekday() < 5]

    # --- ground truth -------------------------------------------------------------------

    def sent_frames(self, tp: str | None = None) -> list[dict[str, Any]]:
        """Every push frame that went out, optionally of one ``tp``."""
        return [f for _, f in self.sent if tp is None or f["tp"] == tp]

    def truth_frames(self, tp: str, codes: set[str] | None = None) -> list[dict[str, Any]]:
        """Every record the market produced of one ``tp``."""
        return [f for f in self.truth if f["tp"] == tp and (codes is None or f["c"] in codes)]

    def export_truth(self, path: str) -> None:
        """Write the ground truth as NDJSON: every frame produced, then every frame sent."""
        with open(path, "wb") as out:
            for frame in self.truth:
                out.write(orjson.dumps({"truth": frame}) + b"\n")
            for conn, frame in self.sent:
                out.write(orjson.dumps({"sent": frame, "conn": conn}) + b"\n")


def _record(frame: dict[str, Any]) -> dict[str, Any]:
    """A push frame as an HTTP / R* record: the same fields without ``tp``."""
    return {k: v for k, v in frame.items() if k != "tp"}


class SimulatorThread:
    """Run a :class:`Simulator` on its own event loop in a background thread (for tests)."""

    def __init__(
        self,
        config: SimConfig | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.sim = Simulator(config, faults)
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="qos-sim")
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._runner = await serve(self.sim.app, self.host, self.port)
        self.port = bound_port(self._runner)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop and return its result (thread-safe access)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def running(
    config: SimConfig | None = None, faults: Faults | None = None
) -> Iterator[SimulatorThread]:
    """``with running() as sim:`` a simulator on a free loopback port."""
    with SimulatorThread(config, faults) as thread:
        yield thread
