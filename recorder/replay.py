"""Replay recorded data for backtests: an iterator, NDJSON, and a QOS-compatible server.

:func:`replay` yields the same typed records the decoder produces, merged across tables in
time order. Equal timestamps break ties by receive time, then stream (trades, depth,
snapshots, klines), then code, so the order is stable and, for live data, exactly the order
the frames arrived in. Memory stays bounded however long the range: every (table, code)
is one database cursor read in chunks, and a heap merges them.

Sources: a SQLite file, or a QuestDB HTTP address (``http://host:9000``), read through
QuestDB's CSV export endpoint ``/exp``, which streams the result so it is never held whole
(no extra client library; the PostgreSQL wire would need one and buys nothing here).
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import io
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web

from .config import check_code_entry
from .exceptions import ConfigError, SinkError
from .protocol import NS, STREAMS, Kline, Record, Stream, push_frame, split_codes
from .schema import BY_NAME, Row, record_of

log = structlog.get_logger("recorder.replay")
CHUNK = 2000
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
    source: str | Path,
    start: int,
    end: int,
    codes: Iterable[str] = (),
    streams: Iterable[str] = tuple(STREAMS),
) -> Iterator[Record]:
    """Records from ``source`` with ``start <= ts < end`` (ns), in time order."""
    query = Query(start, end, tuple(split_codes(list(codes))), tuple(streams))
    check(query)
    text = str(source)
    if text.startswith(("http://", "https://")):
        cursors = _questdb_cursors(text, query)
    else:
        cursors = _sqlite_cursors(Path(text), query)
    for _key, record in heapq.merge(*cursors):
        yield record


# --- SQLite ---------------------------------------------------------------------------


def _sqlite_cursors(path: Path, query: Query) -> list[Iterator[tuple[tuple[Any, ...], Record]]]:
    if not path.exists():
        raise ConfigError(f"--source: {path}: no such file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        cursors = []
        for stream in query.streams:
            table = BY_NAME[Stream(stream).value]
            codes = query.codes or [
                c for (c,) in db.execute(f"SELECT DISTINCT code FROM {table.name}")
            ]
            for code in codes:
                cursors.append(_sqlite_rows(db, table.name, code, query))
    except sqlite3.Error as exc:
        raise SinkError(f"sqlite {path}: {exc}") from None
    return cursors


def _sqlite_rows(
    db: sqlite3.Connection, table: str, code: str, query: Query
) -> Iterator[tuple[tuple[Any, ...], Record]]:
    # The unique index starts (code, ts): one code's rows come out in ts order without a
    # sort of the whole range; only rows sharing a second are ordered by recv_ts.
    cols = ", ".join(BY_NAME[table].names)
    cur = db.execute(
        f"SELECT {cols} FROM {table} WHERE code = ? AND ts >= ? AND ts < ? ORDER BY ts, recv_ts",
        (code, query.start, query.end),
    )
    order = _ORDER[table]
    while rows := cur.fetchmany(CHUNK):
        for row in rows:
            yield _keyed(table, order, row)


def _keyed(table: str, order: int, row: Row) -> tuple[tuple[Any, ...], Record]:
    record = record_of(table, row)
    return (record.ts, record.recv_ts, order, record.code), record


# --- QuestDB --------------------------------------------------------------------------


def _questdb_cursors(base: str, query: Query) -> list[Iterator[tuple[tuple[Any, ...], Record]]]:
    cursors = []
    for stream in query.streams:
        table = Stream(stream).value
        cursors.append(_questdb_rows(base.rstrip("/"), table, query))
    return cursors


def _questdb_rows(base: str, table: str, query: Query) -> Iterator[tuple[tuple[Any, ...], Record]]:
    spec = BY_NAME[table]
    cols = ", ".join(
        f"cast({name} AS LONG)" if kind in ("ts", "time") else name for name, kind in spec.columns
    )
    # Codes passed check_code_entry (letters, digits, '.', '_', '-', one ':'), so quoting
    # them cannot break out of the literal; times are integers from this process.
    start, end = query.start // 1000, query.end // 1000
    where = f"ts >= cast({start} AS TIMESTAMP) AND ts < cast({end} AS TIMESTAMP)"
    if query.codes:
        where += " AND code IN (" + ", ".join(f"'{c}'" for c in query.codes) + ")"
    sql = f"SELECT {cols} FROM {table} WHERE {where} ORDER BY ts, recv_ts"
    url = f"{base}/exp?{urllib.parse.urlencode({'query': sql})}"
    try:
        resp = urllib.request.urlopen(url, timeout=30)
    except (urllib.error.URLError, OSError) as exc:
        raise SinkError(f"questdb {base}/exp: {exc}") from None
    order = _ORDER[table]
    kinds = [kind for _, kind in spec.columns]
    with resp:
        reader = csv.reader(io.TextIOWrapper(resp, encoding="utf-8"))
        next(reader, None)  # header
        for fields in reader:
            yield _keyed(
                table, order, tuple(_value(v, k) for v, k in zip(fields, kinds, strict=True))
            )


def _value(text: str, kind: str) -> Any:
    if text == "":
        return None
    if kind in ("ts", "time"):
        return int(text) * 1000
    if kind == "f64":
        return float(text)
    if kind in ("int", "long"):
        return int(text)
    return text


# --- NDJSON -----------------------------------------------------------------------------


def frames(records: Iterable[Record]) -> Iterator[bytes]:
    """Each record as one QOS push frame line (``tp``, string decimals, ``ts`` in seconds)."""
    for record in records:
        yield orjson.dumps(push_frame(record)) + b"\n"


# --- the replay server ----------------------------------------------------------------


def pace_time(record: Record) -> int:
    """When, in the original timing, a record happened: its receive time, kept inside its
    exchange second (a backfilled row was received long after its second)."""
    offset = min(max(record.recv_ts - record.ts, 0), NS - 1)
    return record.ts + offset


class ReplayServer:
    """A QOS-compatible WebSocket that plays a recorded range to each client.

    Any key is accepted. ``S``/``T``/``D``/``K`` subscribe, ``H`` is answered; the replay
    starts ``settle`` seconds after the last subscription command, paced by the original
    timing divided by ``speed`` (``None``: as fast as possible), and ends with a close
    (1000, "replay finished").
    """

    def __init__(
        self, source: str | Path, query: Query, speed: float | None, settle: float = 1.5
    ) -> None:
        self.source = source
        self.query = query
        self.speed = speed
        self.settle = settle
        self.app = web.Application()
        self.app.router.add_get("/ws", self._ws)
        self.app.router.add_get("/", self._ws)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        subs: dict[str, set[str]] = {s.tp: set() for s in STREAMS}
        kline_subs: set[tuple[str, int]] = set()
        changed = asyncio.Event()
        player: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:  # the player lives as long as the socket
            try:
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        continue
                    reply = self._command(msg.data, subs, kline_subs)
                    await ws.send_str(orjson.dumps(reply).decode())
                    if reply["msg"] == "OK" and reply["type"] != "H":
                        changed.set()
                        if player is None:
                            player = tg.create_task(self._play(ws, subs, kline_subs, changed))
            finally:
                if player is not None:
                    player.cancel()
        return ws

    def _command(
        self, text: str, subs: dict[str, set[str]], kline_subs: set[tuple[str, int]]
    ) -> dict[str, Any]:
        try:
            req = orjson.loads(text)
            kind = req["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return {"type": "", "msg": "invalid request"}
        reply: dict[str, Any] = {"type": kind, "msg": "OK", "time": int(time.time())}
        if "reqid" in req:
            reply["reqid"] = req["reqid"]
        if kind == "H":
            return reply
        command = Stream.of_command(kind)
        if command is None or not isinstance(req.get("codes"), list):
            reply["msg"] = f"{kind} is not supported by the replay server"
            return reply
        entries = req["codes"]
        problems = [check_code_entry(e) if isinstance(e, str) else "not a string" for e in entries]
        if any(problems):
            reply["msg"] = f"invalid code: {next(p for p in problems if p)}"
            return reply
        codes = set(split_codes(entries))
        stream, adding = command
        if stream is Stream.KLINES:
            pairs = {(c, req.get("kt")) for c in codes}
            if adding:
                kline_subs.update(pairs)
            else:
                kline_subs.difference_update(pairs)
        elif adding:
            subs[stream.tp] |= codes
        else:
            subs[stream.tp] -= codes
        return reply

    async def _play(
        self,
        ws: web.WebSocketResponse,
        subs: dict[str, set[str]],
        kline_subs: set[tuple[str, int]],
        changed: asyncio.Event,
    ) -> None:
        while True:  # wait until the client has stopped subscribing
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), self.settle)
            except TimeoutError:
                break
        records = replay(
            self.source, self.query.start, self.query.end, self.query.codes, self.query.streams
        )
        first: int | None = None
        started = time.monotonic()
        for record in records:
            wanted = (
                (record.code, record.kt) in kline_subs
                if isinstance(record, Kline)
                else record.code in subs[record.stream.tp]
            )
            if not wanted:
                continue
            if self.speed is not None:
                at = pace_time(record)
                first = at if first is None else first
                wait = (at - first) / NS / self.speed - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            await ws.send_str(orjson.dumps(push_frame(record)).decode())
        await ws.close(code=1000, message=b"replay finished")
