"""The upstream session: one WebSocket's life, and the reconnect loop around it.

A session connects with the key in a header (never in the URL, so it cannot reach a log),
subscribes to every configured stream through a gate that leaves at least
``request_interval`` between any two commands (the API allows one a second), sends ``H``
heartbeats, and reads frames until it dies. It dies when the socket closes, a heartbeat
goes unanswered within ``heartbeat_timeout``, or no frame of any kind arrives for
``stale_after`` seconds (a monotonic watchdog: a stalled server keeps the socket open).

:func:`run_upstream` runs sessions in a loop with capped, fully jittered exponential
backoff, reset after a session that stayed healthy for ``healthy_after`` seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from . import protocol
from .config import Secret, SubscribeConfig, UpstreamConfig
from .exceptions import ApiError, AuthError, DecodeError, UpstreamError
from .protocol import HEARTBEAT, STREAMS, Record, Reply, Stream
from .retry import Retry, classify_reply

log = structlog.get_logger("recorder.session")
#: what :meth:`Handler.on_rejected` names when the handshake refused the API key (401, 403)
KEY_REFUSED = "key"


class Handler(Protocol):
    """What the session tells the recorder."""

    def on_record(self, record: Record) -> None: ...
    def on_decode_error(self, error: DecodeError) -> None: ...
    def on_unknown(self) -> None: ...
    def on_connected(self) -> None: ...
    def on_subscribed(self, stream: Stream, codes: list[str], kt: int | None) -> None: ...
    def on_rejected(self, what: str, msg: str) -> None: ...
    def on_heartbeat(self, rtt: float) -> None: ...
    def on_disconnected(self, reason: str) -> None: ...


class SessionEnded(UpstreamError):
    """The session is over; ``reason`` says why (logged, counted, then reconnect)."""


def backoff(initial: float, maximum: float, rng: random.Random | None = None) -> Iterator[float]:
    """Capped exponential delays with "equal jitter": uniform in ``[cap/2, cap]`` where
    ``cap = min(maximum, initial * 2^n)``.

    Completeness sets the cap: every second the recorder stays away after the service is
    back costs trades beyond ``/trade``'s window of 50, so ``backoff_max`` is a few seconds
    (default 5) whatever the outage's length. The jitter spreads many recorders apart, and
    the floor of half the cap keeps a long outage at one handshake every 2.5-5 s (12-24 a
    minute with the defaults), which a service can carry."""
    rng = rng or random.Random()
    for n in itertools.count():
        cap = min(maximum, initial * 2 ** min(n, 32))
        yield rng.uniform(cap / 2, cap)


def retryable(exc: BaseException) -> bool:
    """Whether an error ending a session is worth reconnecting after (all but our bugs)."""
    return isinstance(exc, OSError | WebSocketException | UpstreamError | asyncio.TimeoutError)


class CommandGate:
    """Spaces every command sent on one socket by at least ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = asyncio.Lock()
        self._last = -1e9

    async def send(self, ws: ClientConnection, payload: bytes) -> None:
        async with self._lock:
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await ws.send(payload.decode())
            self._last = time.monotonic()


Unit = tuple[Stream, int | None]  # a stream (and K-line type) one command subscribes


def units(sub: SubscribeConfig) -> dict[Unit, tuple[str, ...]]:
    """The codes of each subscription command a config asks for, in the config's order."""
    out: dict[Unit, tuple[str, ...]] = {}
    for stream in STREAMS:
        codes = tuple(sub.codes(stream))
        if not codes:
            continue
        for kt in sub.kline_types if stream is Stream.KLINES else (None,):
            out[(stream, kt)] = codes
    return out


class Target:
    """What the sessions should be subscribed to. A reload changes it; the live session
    applies the difference, and every later session starts from it."""

    def __init__(self, sub: SubscribeConfig) -> None:
        self.sub = sub
        self.changed = asyncio.Event()

    def set(self, sub: SubscribeConfig) -> None:
        self.sub = sub
        self.changed.set()


class Session:
    """One connection: subscribe, heartbeat, watchdog and the frame loop."""

    def __init__(
        self, ws: ClientConnection, up: UpstreamConfig, target: Target, handler: Handler
    ) -> None:
        self.ws = ws
        self.up = up
        self.target = target
        self.active: dict[Unit, set[str]] = {}  # what this connection is subscribed to
        self.handler = handler
        self.gate = CommandGate(up.request_interval)
        self.frames = 0
        self._reqids = itertools.count(1)
        #: reqid -> (command type, the future its reply resolves), oldest first
        self._pending: dict[int, tuple[str, asyncio.Future[Reply]]] = {}
        self.subscribed = False

    async def run(self) -> None:
        """Until the session dies; raises SessionEnded (or the socket's own error)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read())
            tg.create_task(self._follow())
            tg.create_task(self._heartbeat())
            tg.create_task(self._watchdog())

    async def request(self, what: str, encode: Callable[[int], bytes]) -> Reply:
        """Send ``encode(reqid)`` through the gate and wait for its reply (matched by
        ``reqid``); ``what`` names the command in errors."""
        reqid = next(self._reqids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[reqid] = (what, future)
        try:
            await self.gate.send(self.ws, encode(reqid))
            async with asyncio.timeout(self.up.heartbeat_timeout):
                return await future
        except TimeoutError:
            raise SessionEnded(
                f"no reply to {what} within {self.up.heartbeat_timeout:g} s"
            ) from None
        finally:
            self._pending.pop(reqid, None)

    async def _follow(self) -> None:
        """Subscribe to the target, then follow its changes (a reload) on this connection:
        cancel what was removed, subscribe what was added, through the same gate."""
        self.target.changed.clear()
        await self._apply(units(self.target.sub))
        self.subscribed = True
        while True:
            await self.target.changed.wait()
            self.target.changed.clear()
            await self._apply(units(self.target.sub))

    async def _apply(self, wanted: dict[Unit, tuple[str, ...]]) -> None:
        for unit in list(self.active):  # in the order they were subscribed
            gone = sorted(self.active[unit] - set(wanted.get(unit, ())))
            if gone:  # first, so a swap stays inside the plan's product limit
                await self._cancel(unit[0], gone, unit[1])
                self.active[unit] -= set(gone)
        for unit, codes in wanted.items():  # trades first: the volume check's baseline
            new = [c for c in codes if c not in self.active.get(unit, ())]
            if new:
                await self._subscribe(unit[0], new, unit[1])
                self.active.setdefault(unit, set()).update(new)

    async def _cancel(self, stream: Stream, codes: list[str], kt: int | None) -> None:
        reply = await self.request(
            stream.cancel, lambda reqid: protocol.cancel(stream, codes, kt, reqid)
        )
        if reply.ok:
            log.info("unsubscribed", stream=stream, codes=codes, kt=kt)
        else:  # the codes stop being recorded either way: they are no longer wanted
            self.handler.on_rejected(f"cancel {stream}", reply.msg)

    async def _subscribe(self, stream: Stream, codes: list[str], kt: int | None) -> None:
        for _attempt in range(5):
            reply = await self.request(
                stream.tp, lambda reqid: protocol.subscribe(stream, codes, kt, reqid)
            )
            if reply.ok:
                log.info("subscribed", stream=stream, codes=codes, kt=kt)
                self.handler.on_subscribed(stream, codes, kt)
                return
            self.handler.on_rejected(f"subscribe {stream}", reply.msg)
            if classify_reply(reply.msg) is not Retry.WINDOW:
                break  # a real refusal: retrying the same request cannot help
            # the rate limit: the gate spaces the next attempt by the command interval
        raise ApiError(f"subscription to {stream} {codes} rejected", reply.msg)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.up.heartbeat_interval)
            sent = time.monotonic()
            reply = await self.request(HEARTBEAT, protocol.heartbeat)
            if not reply.ok:
                self.handler.on_rejected("heartbeat", reply.msg)
            self.handler.on_heartbeat(time.monotonic() - sent)

    async def _watchdog(self) -> None:
        # The frame loop only counts; the clock is read here, not once per frame.
        limit = self.up.stale_after
        seen, since = -1, time.monotonic()
        while True:
            if self.frames != seen:
                seen, since = self.frames, time.monotonic()
            idle = time.monotonic() - since
            if idle > limit:
                raise SessionEnded(f"no frame for {idle:.0f} s (stale_after = {limit:g} s)")
            await asyncio.sleep(min(1.0, limit - idle + 0.01))

    async def _read(self) -> None:
        handler, decode, clock = self.handler, protocol.decode, time.time_ns
        on_record = handler.on_record
        last_recv = 0
        async for frame in self.ws:
            self.frames += 1
            # strictly increasing, so (ts, recv_ts) orders frames exactly as they arrived
            now = clock()
            last_recv = now if now > last_recv else last_recv + 1
            try:
                item = decode(frame, last_recv)
            except DecodeError as exc:
                handler.on_decode_error(exc)
                continue
            if item is None:
                handler.on_unknown()
            elif type(item) is Reply:
                self._reply(item)
            else:
                on_record(item)  # type: ignore[arg-type]
        raise SessionEnded(_close_reason(self.ws))

    def _reply(self, reply: Reply) -> None:
        pending = self._pending.get(reply.reqid) if reply.reqid is not None else None
        future = pending[1] if pending is not None else None
        if future is None and reply.type == HEARTBEAT:
            # a heartbeat reply without reqid: it answers the oldest pending H (never a
            # subscription waiting beside it)
            waiting = (f for kind, f in self._pending.values() if kind == HEARTBEAT)
            future = next((f for f in waiting if not f.done()), None)
        if future is not None and not future.done():
            future.set_result(reply)
        elif not reply.ok:
            self.handler.on_rejected(reply.type, reply.msg)


def _close_reason(ws: ClientConnection) -> str:
    if ws.close_code is None:
        return "connection lost"
    return f"closed: {ws.close_code} {ws.close_reason or ''}".strip()


async def run_upstream(
    up: UpstreamConfig,
    target: Target,
    key: Secret,
    handler: Handler,
    rng: random.Random | None = None,
    connect: Connect | None = None,
) -> None:
    """Run sessions forever, reconnecting with capped jittered backoff. ``connect``: how
    a WebSocket is opened (websockets' ``connect``'s signature; default: the network)."""
    delays = backoff(up.backoff_initial, up.backoff_max, rng)
    while True:
        started = time.monotonic()
        # an exception's text may quote the key (a header it refused): it goes to the log,
        # /healthz and the gaps table only scrubbed
        reason = key.scrub(await _one_session(up, target, key, handler, connect or _Connect))
        healthy = time.monotonic() - started >= up.healthy_after
        if healthy:
            delays = backoff(up.backoff_initial, up.backoff_max, rng)
        delay = next(delays)
        handler.on_disconnected(reason)
        log.warning("disconnected", reason=reason, reconnect_in=round(delay, 2))
        await asyncio.sleep(delay)


#: opens a WebSocket: websockets' ``connect(uri, **options)``, or a test's stand-in
Connect = Callable[..., AbstractAsyncContextManager[ClientConnection]]


class _Connect(connect):
    """websockets' ``connect`` that follows no redirect: it would carry the ``key`` header
    (it strips only ``Authorization`` and cookies) to wherever the answer points."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def _one_session(
    up: UpstreamConfig, target: Target, key: Secret, handler: Handler, connect: Connect
) -> str:
    """One connection from connect to its end; returns why it ended."""
    try:
        async with connect(
            up.ws_url,
            additional_headers={"key": key.reveal()},
            open_timeout=up.connect_timeout,
            ping_interval=None,  # QOS has its own heartbeat; the watchdog covers silence
            max_size=up.max_frame_bytes,
            compression=None,
            close_timeout=2,
        ) as ws:
            handler.on_connected()
            log.info("connected", url=up.ws_url)
            try:
                await Session(ws, up, target, handler).run()
            except ExceptionGroup as group:
                exc = _root(group)
                if not retryable(exc):
                    raise
                if isinstance(exc, ApiError):
                    log.error("subscription_rejected", error=str(exc))
                return _describe(exc)
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            handler.on_rejected(KEY_REFUSED, f"HTTP {status}: the service refused the API key")
            log.error("auth_rejected", status=status)
            return str(AuthError(f"HTTP {status}: API key refused"))
        where = exc.response.headers.get("Location")
        if where is not None and 300 <= status < 400:
            return (
                f"handshake redirected (HTTP {status}) to {where!r}: not followed, "
                "the key goes only to upstream.ws_url"
            )
        return f"handshake refused: HTTP {status}"
    except (OSError, WebSocketException, TimeoutError) as exc:
        return _describe(exc)
    return "session ended"


def _root(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        close = exc.rcvd or exc.sent
        return f"closed: {close.code} {close.reason}".strip() if close else "connection lost"
    if isinstance(exc, UpstreamError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
