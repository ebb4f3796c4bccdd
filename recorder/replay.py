"""Replay recorded data for backtests: an iterator, NDJSON, and a QOS-compatible server.

:func:`replay` yields the same typed records the decoder produces, merged across tables in
time order. Equal timestamps break ties by receive time, then stream (trades, depth,
snapshots, klines), then code, so the order is stable and, for live data, exactly the order
the frames arrived in. Memory stays bounded however long the range: every stream is one
cursor of the source's reader (:mod:`recorder.store`) read in chunks, and a heap merges
them.

Sources: whatever :func:`recorder.store.open_source` reads: a SQLite file, a QuestDB HTTP
address (``http://host:9000``, streamed through ``/exp``), or a Parquet archive folder or
URL written by ``qos-recorder export``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import WSMsgType, web

from .commands import INVALID_REQUEST, CommandRefused, Subscriptions, parse, request_codes
from .config import check_code_entry
from .exceptions import ConfigError
from .markets import bar_end
from .protocol import (
    HEARTBEAT,
    NS,
    STREAMS,
    Kline,
    Record,
    Stream,
    Wire,
    push_frame,
    split_codes,
)
from .schema import KLINE_UPDATES, KLINES, Row, record_of
from .store import Reader, open_source

log = structlog.get_logger("recorder.replay")
T = TypeVar("T")
_ORDER: dict[str, int] = {s.value: i for i, s in enumerate(STREAMS)}  # table -> tie-break


@dataclass(frozen=True, slots=True)
class Query:
    """What to replay: ``[start, end)`` in nanoseconds, codes (all when empty), streams."""

    start: int
    end: int
    codes: tuple[str, ...] = ()
    streams: tuple[str, ...] = tuple(STREAMS)


def check(query: Query) -> None:
    """One-line errors for a bad range, code or stream."""
    if query.end <= query.start:
        raise ConfigError("--to must be after --from")
    for code in query.codes:
        problem = check_code_entry(code)
        if problem:
            raise ConfigError(f"--codes: {problem}")
    for stream in query.streams:
        if stream not in STREAMS:
            raise ConfigError(f"--streams: {stream!r} is not one of {', '.join(STREAMS)}")


def replay(
    source: str | Path | Reader,
    start: int,
    end: int,
    codes: Iterable[str] = (),
    streams: Iterable[str] = tuple(STREAMS),
) -> Iterator[Record]:
    """Records from ``source`` (a reader, or anything :func:`open_source` takes) with
    ``start <= ts < end`` (ns), in time order."""
    for _key, record in _merged(source, start, end, codes, streams):
        yield record


def timed(
    source: str | Path | Reader,
    start: int,
    end: int,
    codes: Iterable[str] = (),
    streams: Iterable[str] = tuple(STREAMS),
) -> Iterator[tuple[int, Record]]:
    """:func:`replay`'s records, each with when it happened in the original timing (ns):
    :func:`pace_time` for a row; for K-lines the second element of their key, the receive
    time of a push and the close of a bar replayed whole."""
    for (_, at, *_), record in _merged(source, start, end, codes, streams):
        yield (at if isinstance(record, Kline) else pace_time(record)), record


def _merged(
    source: str | Path | Reader,
    start: int,
    end: int,
    codes: Iterable[str],
    streams: Iterable[str],
) -> Iterator[tuple[tuple[Any, ...], Record]]:
    query = Query(start, end, tuple(split_codes(list(codes))), tuple(streams))
    check(query)
    reader = source if not isinstance(source, str | Path) else open_source(source)
    # equal keys (two bar types closing together) keep the cursors' order: records are
    # never compared
    return heapq.merge(*_cursors(reader, query), key=itemgetter(0))


def _cursors(reader: Reader, query: Query) -> list[Iterator[tuple[tuple[Any, ...], Record]]]:
    """One time-ordered cursor per stream (per code and bar type for K-lines: the pushes
    as they came, bars with none kept at their close)."""
    cursors = []
    for stream in query.streams:
        table = Stream(stream).value
        if table != KLINES.name:
            rows = reader.rows(table, query.start, query.end, query.codes)
            cursors.append(_keyed_rows(table, rows))
            continue
        pushed = set(reader.codes(KLINE_UPDATES.name))
        for code in query.codes or reader.codes(KLINES.name):
            for kt in reader.kline_types(code):
                since = query.start - lookback(kt)
                bars = reader.rows(KLINES.name, since, query.end, [code], kt)
                updates = (
                    reader.rows(KLINE_UPDATES.name, since, query.end, [code], kt)
                    if code in pushed
                    else iter(())
                )
                cursors.append(_bars(bars, updates, query))
    return cursors


def _keyed_rows(table: str, rows: Iterator[Row]) -> Iterator[tuple[tuple[Any, ...], Record]]:
    order = _ORDER[table]
    for row in rows:
        record = record_of(table, row)
        yield (record.ts, record.recv_ts, order, record.code), record


def _bars(
    bars: Iterator[Row], updates: Iterator[Row], query: Query
) -> Iterator[tuple[tuple[Any, ...], Record]]:
    """One code's bars of one type, in order: every push of a bar that ``kline_updates``
    kept, at the time it was received (the forming bar, as a live client saw it); a bar
    with none kept (backfilled, or recorded before pushes were kept) once, at its close,
    in its last version. Only what happened inside the range."""
    order = _ORDER[KLINES.name]
    pushes = groupby(updates, key=itemgetter(0))  # by the bar's open
    pushed = next(pushes, None)
    for row in bars:
        while pushed is not None and pushed[0] < row[0]:  # pushes of a bar not in klines
            yield from _pushes(pushed[1], order, query)
            pushed = next(pushes, None)
        if pushed is not None and pushed[0] == row[0]:
            yield from _pushes(pushed[1], order, query)
            pushed = next(pushes, None)
            continue
        ts, code, _, kt = row[:4]
        close = bar_end(ts // NS, kt) * NS  # replayed when it closed, never at its open
        if query.start <= close < query.end:
            yield (close, close, order, code), record_of(KLINES.name, row)
    while pushed is not None:
        yield from _pushes(pushed[1], order, query)
        pushed = next(pushes, None)


def _pushes(
    rows: Iterable[Row], order: int, query: Query
) -> Iterator[tuple[tuple[Any, ...], Record]]:
    """A bar's pushes, each in the second it was received, among that second's rows by
    receive time (a push has no exchange time of its own)."""
    for row in rows:
        push = record_of(KLINE_UPDATES.name, row)
        second = push.recv_ts - push.recv_ts % NS
        if query.start <= second < query.end:
            yield (second, push.recv_ts, order, push.code), push


def lookback(kt: int) -> int:
    """How long before its close a ``kt`` bar can have opened (ns)."""
    if kt < 1000:
        return kt * 60 * NS
    return {1001: 1, 1007: 7, 1030: 31, 2001: 366}[kt] * 86400 * NS


def bar_close(bar: Kline) -> int:
    """When a bar's final values were known: its close (ns)."""
    return bar_end(bar.ts // NS, bar.kt) * NS


# --- NDJSON -----------------------------------------------------------------------------


def frames(records: Iterable[Record]) -> Iterator[bytes]:
    """Each record as one QOS push frame line (``tp``, the decimal strings as they were
    received, ``ts`` in seconds)."""
    for record in records:
        yield orjson.dumps(push_frame(record)) + b"\n"


# --- the replay server ----------------------------------------------------------------


def pace_time(record: Record) -> int:
    """When, in the original timing, a record happened: its receive time, kept inside its
    exchange second (a backfilled row was received long after its second); a K-line bar at
    its close, when its final values were known."""
    if isinstance(record, Kline):
        return bar_close(record)
    offset = min(max(record.recv_ts - record.ts, 0), NS - 1)
    return record.ts + offset


class ReplayServer:
    """A QOS-compatible WebSocket that plays a recorded range to each client.

    Any key is accepted. ``S``/``T``/``D``/``K`` subscribe (and their cancels), ``H`` is
    answered. Playback starts ``settle`` seconds after the client's first subscription,
    so every subscription sent within that window starts at the beginning of the range;
    later ones join at the current replay time, as on the live service. It is paced by
    the original timing divided by ``speed`` (``None``: as fast as possible), with idle
    stretches longer than ``max_idle`` seconds (nights, weekends) shortened to that and
    logged. After the range the socket stays open, idle, still answering heartbeats, as
    the live service never ends a stream; ``close_at_end`` closes it (1000, "replay
    finished") instead.
    """

    def __init__(
        self,
        source: str | Path,
        query: Query,
        speed: float | None,
        settle: float = 5.0,
        close_at_end: bool = False,
        max_idle: float | None = None,
    ) -> None:
        self.source = source
        self.query = query
        self.speed = speed
        self.settle = settle
        self.close_at_end = close_at_end
        self.max_idle = max_idle
        self.app = web.Application()
        self.app.router.add_get("/ws", self._ws)
        self.app.router.add_get("/", self._ws)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        subs = Subscriptions()
        player: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:  # the player lives as long as the socket
            try:
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        continue
                    reply = self._command(msg.data, subs)
                    await ws.send_str(orjson.dumps(reply).decode())
                    if reply["msg"] == "OK" and reply["type"] != HEARTBEAT and player is None:
                        player = tg.create_task(self._play(ws, subs))
            finally:
                if player is not None:
                    player.cancel()
        return ws

    def _command(self, text: str, subs: Subscriptions) -> dict[str, Any]:
        command = parse(text)
        if command is None:
            return INVALID_REQUEST
        if command.kind == HEARTBEAT:
            return command.reply()
        if command.subscription is None or not isinstance(command.req.get("codes"), list):
            return command.reply(f"{command.kind} is not supported by the replay server")
        try:
            codes = request_codes(command.req, explain=True)
        except CommandRefused as exc:
            return command.reply(str(exc))
        subs.change(*command.subscription, codes, command.req.get(Wire.KT))
        return command.reply()

    async def _play(self, ws: web.WebSocketResponse, subs: Subscriptions) -> None:
        await asyncio.sleep(self.settle)  # let the client send its other subscriptions
        q = self.query
        events = read_in_thread(lambda: timed(self.source, q.start, q.end, q.codes, q.streams))
        first: int | None = None
        started, skipped = time.monotonic(), 0.0
        async for at, record in events:
            kt = record.kt if isinstance(record, Kline) else None
            if not subs.wants(record.stream.tp, record.code, kt):
                continue
            if self.speed is not None:
                first = at if first is None else first
                wait = (at - first) / NS / self.speed - skipped - (time.monotonic() - started)
                if self.max_idle is not None and wait > self.max_idle:
                    skipped += wait - self.max_idle
                    log.info(
                        "replay_idle_skipped",
                        seconds=round((wait - self.max_idle) * self.speed, 3),
                        resumes_at=_iso(at),
                    )
                    wait = self.max_idle
                if wait > 0:
                    await asyncio.sleep(wait)
            frame = push_frame(record)
            await ws.send_str(orjson.dumps(frame).decode())
        if self.close_at_end:
            await ws.close(code=1000, message=b"replay finished")
        else:
            log.info("replay_range_done", detail="the socket stays open, idle")


#: records a reader thread hands over at a time, and chunks it may read ahead
CHUNK_RECORDS = 512
AHEAD_CHUNKS = 8


async def read_in_thread(
    make: Callable[[], Iterator[T]],
    chunk: int = CHUNK_RECORDS,
    ahead: int = AHEAD_CHUNKS,
) -> AsyncIterator[T]:
    """The records of ``make()``, read in a thread of their own: a source's reads (SQLite
    steps, QuestDB's HTTP, Parquet decoding) block, and the event loop must go on answering
    every client meanwhile. The thread reads at most ``ahead`` chunks of ``chunk`` records
    ahead of the consumer (a bounded queue), stops when the consumer does (a client gone),
    and an error it meets is raised here. ``None`` in the queue is the end."""
    handed: queue.Queue[list[T] | Exception | None] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def hand(item: list[T] | Exception | None) -> bool:
        while not stop.is_set():
            try:
                handed.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            records = make()
            while part := list(islice(records, chunk)):
                if not hand(part):
                    return
            hand(None)
        except Exception as exc:  # the consumer raises it
            hand(exc)

    threading.Thread(target=read, name="replay-reader", daemon=True).start()
    try:
        while (item := await asyncio.to_thread(handed.get)) is not None:
            if isinstance(item, Exception):
                raise item
            for record in item:
                yield record
    finally:
        stop.set()
        with contextlib.suppress(queue.Full):  # wake a get() still waiting in the executor
            handed.put_nowait(None)


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))
