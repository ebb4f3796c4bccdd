"""The benchmark behind ``scripts/bench``: every part in its own process, ratios in one run.

The orchestrator starts a blasting simulator (``part blast``: the simulator's server with
trade frames pushed as fast as the socket takes them, or at a fixed rate) and an ILP/HTTP
receiver that discards, then runs each measured part as ``python scripts/bench.py part
NAME ...``; a part prints one JSON line with its figures. Timings are never asserted
anywhere: this only measures.

Latency pairs the i-th trade frame sent with the i-th trade row the sink acknowledged: one
socket keeps the order, and so do the batcher and the one writer thread, with nothing
dropped or spooled on loopback (the part reports spooled batches, which must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from recorder.batching import Batch

T = TypeVar("T")

KEY = "bench-key"
CODES = ["US:AAPL", "US:TSLA", "HK:700", "SH:600519", "CF:BTCUSDT"]


# --- measuring inside a part -------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    """Resident memory now (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _emit(**figures: Any) -> None:
    print(json.dumps(figures), flush=True)


class Window:
    """Counts over a measured window that starts after a warm-up."""

    def __init__(self, count: Callable[[], int], warmup: float, seconds: float) -> None:
        self.count, self.warmup, self.seconds = count, warmup, seconds

    async def run(self) -> dict[str, float]:
        await asyncio.sleep(self.warmup)
        n0, c0, t0 = self.count(), _cpu(), time.monotonic()
        await asyncio.sleep(self.seconds)
        n1, c1, t1 = self.count(), _cpu(), time.monotonic()
        n = max(n1 - n0, 1)
        return {
            "rate": n / (t1 - t0),
            "cpu_per_million": (c1 - c0) / n * 1e6,
            "messages": n,
            "rss_mb": _rss_mb(),
            "peak_rss_mb": _peak_mb(),
        }


def _loop_run(coro: Coroutine[Any, Any, T]) -> T:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def part_blast(args: argparse.Namespace) -> None:
    """The simulator's server pushing trade frames from its market model to every trades
    subscriber, as fast as the socket takes them (rate 0) or at ``--blast-rate`` a second;
    with ``--blast-log``, each frame's send time is written there at exit."""
    from recorder.protocol import Stream
    from recorder.runtime import stop_on_signals
    from recorder.sim import Connection, Market, SimConfig, Simulator

    # Templates from the market model, so the mix of prices and sizes per second stays
    # realistic; ``%d`` stands for the second.
    market = Market(tuple(CODES), trades_per_second=2000, market_hours=False)
    frames: list[dict[str, Any]] = []
    while len(frames) < 20000:
        frames.extend(f for f in market.step(time.time()) if f["tp"] == "T")
    templates = [json.dumps({**f, "ts": 0}).replace('"ts": 0', '"ts": %d') for f in frames]
    rate = args.blast_rate or None
    sent_ns: list[int] = []

    class Blaster(Simulator):
        def on_subscribed(self, conn: Connection, stream: Stream) -> None:
            if stream is Stream.TRADES:
                conn.tasks.create_task(blast(conn))

        async def _market_loop(self) -> None:
            await asyncio.Event().wait()  # no market: only the blast

    async def blast(conn: Connection) -> None:
        ws, n, i = conn.ws, len(templates), 0
        started = time.monotonic()
        while not ws.closed:
            second = int(time.time())
            for _ in range(200):
                if args.blast_log:
                    sent_ns.append(time.time_ns())
                try:
                    await ws.send_str(templates[i % n] % second)
                except (ConnectionError, RuntimeError):
                    return
                i += 1
            if rate is not None:
                wait = started + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                await asyncio.sleep(0)  # let commands and heartbeats through

    sim = Blaster(
        SimConfig(codes=tuple(CODES), keys=(KEY,), heartbeat_timeout=3600, market_hours=False)
    )

    async def go() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with sim.serving("127.0.0.1", args.port):
            await stop.wait()

    _loop_run(go())
    if args.blast_log:
        Path(args.blast_log).write_text(json.dumps(sent_ns))


def part_decode(args: argparse.Namespace) -> None:
    """orjson alone, and the recorder's decoder, over realistic trade frames."""
    import orjson

    from recorder import protocol
    from recorder.sim import Market

    market = Market(tuple(CODES), trades_per_second=2000, market_hours=False)
    frames = [orjson.dumps(f) for f in market.step(time.time()) if f["tp"] == "T"][:2000]
    frames *= 50
    start = time.perf_counter()
    for f in frames:
        orjson.loads(f)
    raw = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for f in frames:
        protocol.decode(f, 0)
    decoded = len(frames) / (time.perf_counter() - start)
    _emit(orjson_rate=raw, decode_rate=decoded)


def part_raw(args: argparse.Namespace) -> None:
    """A receive-only websockets client: the transport's limit."""
    from websockets.asyncio.client import connect

    async def go() -> dict[str, float]:
        count = 0
        async with connect(
            args.url,
            additional_headers={"key": KEY},
            max_size=None,
            compression=None,
            ping_interval=None,
            close_timeout=0.2,
        ) as ws:
            await ws.send(json.dumps({"type": "T", "codes": CODES}))

            async def receive() -> None:
                nonlocal count
                async for _ in ws:
                    count += 1

            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(receive())
                figures = await Window(lambda: count, args.warmup, args.seconds).run()
                task.cancel()
            return figures

    _emit(**_loop_run(go()))


def _config(args: argparse.Namespace, sink: dict[str, Any], tmp: Path) -> Any:
    from recorder.config import parse

    url = args.url or "ws://127.0.0.1:9/ws"  # parts that never connect
    return parse(
        {
            "upstream": {
                "ws_url": url,
                "http_url": url.replace("ws://", "http://").removesuffix("/ws"),
                "key_env": "QOS_BENCH_KEY",
                "stale_after": 600,
            },
            "subscribe": {"trades": CODES},
            "sink": {"batch_age": args.batch_age, "batch_rows": args.batch_rows, **sink},
            "spool": {"dir": str(tmp / "spool")},
            "gaps": {"backfill": False},
            "log": {"dead_letter": str(tmp / "dead.ndjson"), "level": "warning"},
        },
        name=str(tmp / "bench.toml"),
    )


def part_recorder(args: argparse.Namespace) -> None:
    """The recorder end to end into one sink; counts what the sink acknowledged."""
    from recorder import logs, runtime
    from recorder.config import Secret
    from recorder.daemon import Recorder
    from recorder.protocol import Stream

    runtime.tune()  # as `qos-recorder run` does
    logs.configure("warning", sys.stderr.buffer)
    tmp = Path(args.tmp)
    sink: dict[str, Any] = {"kind": args.sink}
    if args.sink == "sqlite":
        sink["sqlite_path"] = str(tmp / "bench.sqlite")
    if args.sink == "questdb":
        # a real server's conf string (--questdb), else the stand-in receiver on --ilp-port
        sink["questdb"] = args.questdb or f"http::addr=127.0.0.1:{args.ilp_port};"
        sink["kind"] = "questdb"
    acks: list[int] = []  # acknowledgement time of each trade row, in the order acknowledged

    def on_flush(batch: Batch, seconds: float) -> None:
        if args.latency_log:
            acks.extend([time.time_ns()] * len(batch.tables.get("trades", ())))

    async def go() -> dict[str, Any]:
        recorder = Recorder(_config(args, sink, tmp), Secret(KEY), on_flush=on_flush)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(recorder.run(stop))
            window = Window(
                lambda: sum(recorder.status().rows_written.values()), args.warmup, args.seconds
            )
            figures: dict[str, Any] = await window.run()
            received = recorder.status().frames[Stream.TRADES]
            figures["received_rate"] = received / (args.warmup + args.seconds)
            figures["spooled_batches"] = recorder.status().spooled_batches
            stop.set()
        return figures

    figures = _loop_run(go())
    if args.latency_log:
        Path(args.latency_log).write_text(json.dumps(acks))
    _emit(**figures)


def part_naive(args: argparse.Namespace) -> None:
    """Written the way the QOS example clients are: websocket-client, json.loads, and one
    Sender.row() plus flush() per message."""
    import websocket
    from questdb import Sender, TimestampNanos

    ws = websocket.create_connection(args.url, header=[f"key: {KEY}"])
    ws.send(json.dumps({"type": "T", "codes": CODES}))
    count = 0
    with Sender.from_conf(f"http::addr=127.0.0.1:{args.ilp_port};") as sender:
        start = time.monotonic()
        measured_from = start + args.warmup
        n0, c0 = 0, 0.0
        while True:
            now = time.monotonic()
            if now >= measured_from and not n0:
                n0, c0, t0 = count or 1, _cpu(), now
            if now >= measured_from + args.seconds:
                break
            msg = json.loads(ws.recv())
            if "tp" not in msg:
                continue
            sender.row(
                "trades",
                symbols={"code": msg["c"]},
                columns={"price": float(msg["p"]), "size": float(msg["v"]), "side": msg["d"]},
                at=TimestampNanos(msg["ts"] * 1_000_000_000),
            )
            sender.flush()
            count += 1
    ws.close()
    n = max(count - n0, 1)
    _emit(
        rate=n / (time.monotonic() - t0),
        cpu_per_million=(_cpu() - c0) / n * 1e6,
        messages=n,
        peak_rss_mb=_peak_mb(),
    )


def part_ilp(args: argparse.Namespace) -> None:
    """A discarding ILP/HTTP receiver, in its own process so its CPU is not the recorder's."""
    from recorder.sim.ilp import IlpServer

    server = IlpServer(mode="discard")
    server.port = args.ilp_port
    server.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def part_drain(args: argparse.Namespace) -> None:
    """Spool drain: rows per second from a filled spool into each sink, one after another."""
    from recorder.batching import Batch
    from recorder.sinks import make_sink
    from recorder.spool import Spool
    from recorder.writer import Writer

    tmp = Path(args.tmp)
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    rows_per_batch, batches = 2000, args.drain_batches
    figures: dict[str, float] = {}
    for sink in ("null", "sqlite", "questdb"):
        sink_cfg: dict[str, Any] = {
            "kind": sink,
            "sqlite_path": str(tmp / "drain.sqlite"),
            "questdb": f"http::addr=127.0.0.1:{args.ilp_port};",
        }
        spool = Spool(tmp / f"drain-spool-{sink}", max_bytes=1 << 34)
        for b in range(batches):
            spool.append(
                Batch(
                    {
                        "trades": [
                            (
                                now + (b * rows_per_batch + r) // 1000 * 1_000_000_000,
                                CODES[r % 5],
                                "US",
                                100.0 + r % 7,
                                float(100 + r % 5),
                                1 + r % 2,
                                r,
                                "live",
                                now,
                            )
                            for r in range(rows_per_batch)
                        ]
                    },
                    seq=b,
                )
            )
        writer = Writer(make_sink(_config(args, sink_cfg, tmp)), spool, retry_interval=0.05)
        start = time.monotonic()
        writer.start()
        while spool:
            time.sleep(0.005)
        figures[f"{sink}_rate"] = batches * rows_per_batch / (time.monotonic() - start)
        writer.close(30)
    _emit(**figures)


def part_replay(args: argparse.Namespace) -> None:
    """Replay throughput from SQLite, and resident memory sampled while it runs."""
    from recorder.protocol import NS
    from recorder.replay import replay

    samples = [_rss_mb()]
    count = 0
    start, c0 = time.monotonic(), _cpu()
    for _ in replay(args.db, 0, 4_000_000_000 * NS):
        count += 1
        if count % 50_000 == 0:
            samples.append(_rss_mb())
    elapsed = time.monotonic() - start
    samples.append(_rss_mb())
    _emit(
        rate=count / elapsed,
        events=count,
        cpu_per_million=(_cpu() - c0) / max(count, 1) * 1e6,
        rss_first_mb=samples[1] if len(samples) > 2 else samples[0],
        rss_last_mb=samples[-1],
        rss_max_mb=max(samples),
    )


# --- the archive: reading into Arrow, export, replay, bytes per row ----------------------

ARCHIVE_DAY0 = 1_795_651_200  # 2026-11-26T00:00:00Z, seconds
ARCHIVE_CODES = [f"US:S{i:02d}" for i in range(20)]


def _archive_rows(n: int, seed: int = 7) -> Iterator[dict[str, list[Any]]]:
    """``n`` trades over two days across 20 codes, and a depth and a snapshot row every 10
    trades, in batches of 50,000 trades, made with the schema's own row functions."""
    import random

    from recorder.protocol import NS, Depth, Snapshot, Trade
    from recorder.schema import depth_row, snapshot_row, trade_row

    rng = random.Random(seed)
    price = {c: 100.0 + i for i, c in enumerate(ARCHIVE_CODES)}
    span = 2 * 86400
    seen: dict[tuple[Any, ...], int] = {}
    batch: dict[str, list[Any]] = {"trades": [], "depth": [], "snapshots": []}
    for i in range(n):
        code = ARCHIVE_CODES[i % len(ARCHIVE_CODES)]
        ts = (ARCHIVE_DAY0 + i * span // n) * NS
        recv = ts + rng.randrange(NS)
        price[code] = round(price[code] + rng.choice((-0.01, 0.0, 0.01)), 2)
        size, side = float(rng.choice((100, 200, 500))), rng.randrange(3)
        ident = (code, ts, price[code], size, side)
        k = seen.get(ident, 0)
        seen[ident] = k + 1
        # with the strings a decoded frame carries, so rows keep their decimals (dp)
        text = (f"{price[code]:.2f}", f"{size:.0f}")
        batch["trades"].append(
            trade_row(Trade(code, ts, price[code], size, side, recv, k, "live", text))
        )
        if i % 10 == 0:
            p = price[code]
            bids = tuple((round(p - 0.01 * j, 2), 100.0 * (j + 1)) for j in range(5))
            asks = tuple((round(p + 0.01 * (j + 1), 2), 100.0 * (j + 1)) for j in range(5))
            bid_text = tuple((f"{x:.2f}", f"{y:.0f}") for x, y in bids)
            ask_text = tuple((f"{x:.2f}", f"{y:.0f}") for x, y in asks)
            batch["depth"].append(
                depth_row(Depth(code, ts, bids, asks, recv, "live", i, bid_text, ask_text))
            )
            values = (p, 99.0, 100.0, p + 1, p - 1, i * 100.0, i * 1e4)
            texts = (*(f"{v:.2f}" for v in values[:5]), f"{i * 100}", f"{i * 10_000}.00")
            batch["snapshots"].append(
                snapshot_row(Snapshot(code, ts, *values, 0, 1, recv, {}, "live", i, texts))
            )
        if len(batch["trades"]) >= 50_000:
            yield batch
            seen.clear()
            batch = {"trades": [], "depth": [], "snapshots": []}
    if batch["trades"]:
        yield batch


def _questdb_server(root: Path) -> tuple[Any, str]:
    """A real QuestDB for the archive part, where this checkout and machine have one."""
    from recorder.sim.questdb import NEWEST, QuestDB, QuestDBUnavailable

    try:
        return QuestDB(NEWEST, root).start(), ""
    except QuestDBUnavailable as exc:  # no jar, no Maven or no Java here
        return None, " ".join(str(exc).split())[:200]


def part_archive(args: argparse.Namespace) -> None:
    """The same recording read into Arrow from the archive, SQLite and QuestDB; export
    rate; replay from the archive; bytes per row in each store."""
    import sqlite3

    from recorder import data
    from recorder.archive import export
    from recorder.batching import Batch
    from recorder.exceptions import RecorderError
    from recorder.protocol import NS
    from recorder.replay import replay
    from recorder.sinks.sqlite import SQLiteSink

    tmp = Path(args.tmp) / "archive"
    tmp.mkdir(parents=True, exist_ok=True)
    db, archive = tmp / "ticks.sqlite", tmp / "archive"
    start, end = ARCHIVE_DAY0 * NS, (ARCHIVE_DAY0 + 2 * 86400) * NS
    qdb, why_not = _questdb_server(tmp / "questdb")
    figures: dict[str, Any] = {"trades": args.archive_rows, "questdb": why_not or "ok"}
    try:
        sqlite = SQLiteSink(db)
        qsink = None
        if qdb is not None:
            from recorder.sinks.questdb import QuestDBSink

            qsink = QuestDBSink(qdb.conf)
        arrays = _ArrayDepth(qdb) if qdb is not None else None
        counts = {"trades": 0, "depth": 0, "snapshots": 0}
        for seq, tables in enumerate(_archive_rows(args.archive_rows)):
            sqlite.write(Batch(tables, seq=seq))
            if qsink is not None and arrays is not None:
                qsink.write(Batch(tables, seq=seq))
                arrays.write(tables["depth"])
            for table, rows in tables.items():
                counts[table] += len(rows)
        sqlite.close()
        total = sum(counts.values())
        # export: every table of the two days
        t0 = time.monotonic()
        days = export(db, start, end, str(archive), clock=lambda: end / NS + 86400)
        figures["export_rate"] = total / (time.monotonic() - t0)
        held = {t: sum(d.rows.get(t, 0) for d in days) for t in counts}
        assert held == counts, (held, counts)
        # bytes per row
        for table, n in counts.items():
            files = [f for d in days for f in (archive / table).glob(f"date={d.day}/*.parquet")]
            figures[f"archive_{table}_bytes"] = sum(f.stat().st_size for f in files) / n
        con = sqlite3.connect(db)
        sizes = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        con.close()
        for table, n in counts.items():
            figures[f"sqlite_{table}_bytes"] = (
                sizes.get(table, 0) + sizes.get(f"{table}_key", 0)
            ) / n
        # reading the trades into Arrow, from each store
        for name, source in (("archive", str(archive)), ("sqlite", str(db))):
            t0 = time.monotonic()
            got = data.read(source, "trades", start, end).num_rows
            figures[f"read_{name}_rate"] = got / (time.monotonic() - t0)
            assert got == counts["trades"], (name, got)
        if qdb is not None:
            try:
                _questdb_figures(qdb, counts, start, end, figures)
            except RecorderError as exc:
                figures["questdb"] = str(exc)[:200]
        # replay from the archive: the records iterator, all streams
        t0, events = time.monotonic(), 0
        for _ in replay(archive, start, end):
            events += 1
        figures["replay_archive_rate"] = events / (time.monotonic() - t0)
        figures["replay_events"] = events
        t0 = time.monotonic()
        for _ in replay(db, start, end):
            pass
        figures["replay_sqlite_rate"] = events / (time.monotonic() - t0)
    finally:
        if qdb is not None:
            qdb.stop()
    _emit(**figures)


def _questdb_figures(
    qdb: Any, counts: dict[str, int], start: int, end: int, figures: dict[str, Any]
) -> None:
    from recorder import data
    from recorder.store import open_source

    reader = open_source(qdb.url)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # WAL tables apply the rows shortly after the ack
        stored = {t: sum(reader.count(t, c, start, end) for c in ARCHIVE_CODES) for t in counts}
        if stored == counts:
            break
        time.sleep(0.5)
    t0 = time.monotonic()
    got = data.read(qdb.url, "trades", start, end).num_rows
    figures["read_questdb_rate"] = got / (time.monotonic() - t0)
    for table, n in (*counts.items(), (_ArrayDepth.TABLE, counts["depth"])):
        rows = qdb.rows(f"SELECT sum(diskSize) FROM table_partitions('{table}')")
        figures[f"questdb_{table}_bytes"] = float(rows[0][0] or 0) / n


class _ArrayDepth:
    """The depth rows again, books as ``DOUBLE[][]`` (QuestDB 9.0+) instead of JSON text,
    for bytes per row beside ``depth`` on the same server (#18 item 5). No dedup keys: QuestDB
    refuses an array among them, which is why the recorder keeps text."""

    TABLE = "depth_arrays"

    def __init__(self, qdb: Any) -> None:
        from questdb.ingress import Sender

        from recorder.schema import DEPTH

        ddl = DEPTH.questdb_ddl().split("\nDEDUP")[0].replace(" depth (", f" {self.TABLE} (")
        qdb.sql(
            ddl.replace("bids VARCHAR", "bids DOUBLE[][]").replace(
                "asks VARCHAR", "asks DOUBLE[][]"
            )
        )
        self.sender = Sender.from_conf(qdb.conf, auto_flush=False)
        self.sender.establish()  # type: ignore[no-untyped-call]

    def write(self, rows: list[Any]) -> None:
        import numpy as np
        import orjson
        from questdb.ingress import TimestampNanos

        for ts, code, market, bpx, bsz, apx, asz, levels, bids, asks, source, recv, n in rows:
            self.sender.row(
                self.TABLE,
                symbols={"code": code, "market": market, "source": source},
                columns={
                    "bid_px": bpx, "bid_sz": bsz, "ask_px": apx, "ask_sz": asz,
                    "levels": levels, "recv_ts": recv, "n": n,
                    "bids": np.array(orjson.loads(bids), dtype=np.float64),
                    "asks": np.array(orjson.loads(asks), dtype=np.float64),
                },
                at=TimestampNanos(ts),
            )  # fmt: skip
        self.sender.flush()


def part_soak(args: argparse.Namespace) -> None:
    """The recorder at full rate for a long while, resident memory sampled every 10 s."""
    from recorder import logs, runtime
    from recorder.config import Secret
    from recorder.daemon import Recorder

    runtime.tune()
    logs.configure("warning", sys.stderr.buffer)
    tmp = Path(args.tmp)
    sink = {"kind": "questdb", "questdb": f"http::addr=127.0.0.1:{args.ilp_port};"}

    async def go() -> dict[str, Any]:
        recorder = Recorder(_config(args, sink, tmp), Secret(KEY))
        stop = asyncio.Event()
        samples: list[float] = []
        identities: list[int] = []
        async with asyncio.TaskGroup() as tg:
            tg.create_task(recorder.run(stop))
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(min(10.0, max(1.0, args.seconds / 10)))
                samples.append(_rss_mb())
                identities.append(recorder.status().trade_identities)
            rows = sum(recorder.status().rows_written.values())
            stop.set()
        first = samples[min(1, len(samples) - 1)]  # after warm-up
        return {
            "rss_first_mb": first,
            "rss_last_mb": samples[-1],
            "rss_max_mb": max(samples),
            "growth": samples[-1] / first - 1,
            "rows": rows,
            "seconds": args.seconds,
            "rss_series_mb": [round(x) for x in samples],
            "identities": identities,
        }

    _emit(**_loop_run(go()))


PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "blast": part_blast,
    "decode": part_decode,
    "raw": part_raw,
    "recorder": part_recorder,
    "naive": part_naive,
    "ilp": part_ilp,
    "drain": part_drain,
    "replay": part_replay,
    "archive": part_archive,
    "soak": part_soak,
}


# --- the orchestrator --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="qos-bench-"))
        self.ilp_port = _free_port()
        self.env = {**os.environ, "QOS_BENCH_KEY": KEY}
        self.results: dict[str, dict[str, Any]] = {}

    def part(self, name: str, *extra: str, label: str | None = None) -> dict[str, Any]:
        cmd = [
            sys.executable,
            __file__,
            "part",
            name,
            "--seconds",
            str(self.opts.seconds),
            "--warmup",
            str(self.opts.warmup),
            "--tmp",
            str(self.tmp),
            "--ilp-port",
            str(self.ilp_port),
            "--batch-rows",
            str(self.opts.batch_rows),
            "--batch-age",
            str(self.opts.batch_age),
            *extra,
        ]
        started = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(f"part {name} failed:\n{out.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        self.results[label or name] = figures
        print(
            f"  {label or name} ({time.monotonic() - started:.1f} s): "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
            ),
            file=sys.stderr,
            flush=True,
        )
        return figures

    def simulator(self, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        """A blasting simulator in its own process (``part blast``)."""
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "part", "blast", "--port", str(port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        _wait_port(port)
        return proc, f"ws://127.0.0.1:{port}/ws"

    def run(self) -> None:
        opts = self.opts
        ilp = subprocess.Popen(
            [sys.executable, __file__, "part", "ilp", "--ilp-port", str(self.ilp_port)],
            stdout=subprocess.PIPE,
            env=self.env,
        )
        assert ilp.stdout is not None
        ilp.stdout.readline()
        try:
            self.part("decode")
            sim, url = self.simulator("--blast-rate", "0")
            try:
                self.part("raw", "--url", url)
                for sink in ("null", "sqlite", "questdb"):
                    self.part("recorder", "--url", url, "--sink", sink, label=f"recorder_{sink}")
                self.real_questdb(url)
                self.part("naive", "--url", url)
                if opts.soak:
                    self.part("soak", "--url", url, "--seconds", str(opts.soak))
            finally:
                _stop(sim)
            log = self.tmp / "sent.json"
            sim, url = self.simulator(
                "--blast-rate", str(opts.latency_rate), "--blast-log", str(log)
            )
            acks = self.tmp / "acks.json"
            try:
                self.part(
                    "recorder",
                    "--url",
                    url,
                    "--sink",
                    "questdb",
                    "--latency-log",
                    str(acks),
                    label="latency_run",
                )
            finally:
                _stop(sim)
            self.results["latency"] = _latency(log, acks)
            self.part("drain", "--drain-batches", str(opts.drain_batches))
            self.part("replay", "--db", str(self.tmp / "bench.sqlite"))
            self.part("archive", "--archive-rows", str(opts.archive_rows))
        finally:
            _stop(ilp)
        print(self.table())

    def real_questdb(self, url: str) -> None:
        """The recorder into a real QuestDB (the newest pinned release) over ILP/HTTP; ws::
        where the server has QWP (9.3.4 answers its upgrade with 404: no row then)."""
        qdb, why_not = _questdb_server(self.tmp / "questdb-real")
        if qdb is None:
            self.results["questdb_real"] = {"why_not": why_not}
            return
        try:
            self.results["questdb_real"] = {"version": qdb.version}
            self.part(
                "recorder",
                "--url",
                url,
                "--sink",
                "questdb",
                "--questdb",
                qdb.conf,
                label="recorder_questdb_real",
            )
            stored = qdb.rows("SELECT count() FROM trades")[0][0]
            self.results["questdb_real"]["trades_stored"] = stored
        finally:
            qdb.stop()

    def run_questdb(self) -> None:
        ilp = subprocess.Popen(
            [sys.executable, __file__, "part", "ilp", "--ilp-port", str(self.ilp_port)],
            stdout=subprocess.PIPE,
            env=self.env,
        )
        assert ilp.stdout is not None
        ilp.stdout.readline()
        try:
            sim, url = self.simulator("--blast-rate", "0")
            try:
                self.part("raw", "--url", url)
                self.part("recorder", "--url", url, "--sink", "questdb", label="recorder_questdb")
                self.real_questdb(url)
            finally:
                _stop(sim)
        finally:
            _stop(ilp)
        print("\n".join(self.questdb_rows()))

    def questdb_rows(self) -> list[str]:
        """The real-QuestDB rows of the table, beside the raw limit and the stand-in."""
        r = self.results
        raw = r["raw"]["rate"]
        real = r.get("questdb_real", {})
        lines = [
            "| path | msgs/s | CPU s per 1M msgs | peak RSS MB | / raw limit |",
            "|---|---:|---:|---:|---:|",
            f"| raw websockets receive (limit) | {raw:,.0f} | {r['raw']['cpu_per_million']:.1f} "
            f"| {r['raw']['peak_rss_mb']:.0f} | 1.00 |",
        ]
        for label, name in (
            ("recorder_questdb", "recorder → ILP/HTTP stand-in receiver"),
            ("recorder_questdb_real", f"recorder → real QuestDB {real.get('version')}, ILP/HTTP"),
        ):
            if label in r:
                f = r[label]
                lines.append(
                    f"| {name} | {f['rate']:,.0f} | {f['cpu_per_million']:.1f} "
                    f"| {f['peak_rss_mb']:.0f} | {f['rate'] / raw:.2f} |"
                )
        if "why_not" in real:
            lines.append(f"- no real QuestDB here: {real['why_not']}")
        else:
            lines.append(
                f"- rows acknowledged by QuestDB {real.get('version')} and stored: "
                f"{real.get('trades_stored')} trades; ws:: (QWP) is not in this release"
            )
        return lines

    def archive_table(self) -> list[str]:
        return _archive_table(self.results["archive"])

    def table(self) -> str:
        r, o = self.results, self.opts
        raw = r["raw"]["rate"]
        rows = [
            ("orjson.loads alone", r["decode"]["orjson_rate"], "", "", ""),
            ("recorder's decoder alone", r["decode"]["decode_rate"], "", "", ""),
            (
                "raw websockets receive (limit)",
                raw,
                r["raw"]["cpu_per_million"],
                r["raw"]["peak_rss_mb"],
                "1.00",
            ),
        ]
        for sink, name in (
            ("null", "null sink"),
            ("sqlite", "SQLite"),
            ("questdb", "questdb client, ILP/HTTP"),
        ):
            f = r[f"recorder_{sink}"]
            rows.append(
                (
                    f"recorder → {name}",
                    f["rate"],
                    f["cpu_per_million"],
                    f["peak_rss_mb"],
                    f"{f['rate'] / raw:.2f}",
                )
            )
        if "recorder_questdb_real" in r:
            f = r["recorder_questdb_real"]
            version = r["questdb_real"]["version"]
            rows.append(
                (
                    f"recorder → real QuestDB {version}, ILP/HTTP",
                    f["rate"],
                    f["cpu_per_million"],
                    f["peak_rss_mb"],
                    f"{f['rate'] / raw:.2f}",
                )
            )
        naive = r["naive"]
        rows.append(
            (
                "naive recorder (row+flush per message)",
                naive["rate"],
                naive["cpu_per_million"],
                naive["peak_rss_mb"],
                f"{naive['rate'] / raw:.3f}",
            )
        )
        lines = [
            f"qos-recorder benchmark, {time.strftime('%Y-%m-%d')}, {_machine()}",
            f"batch_rows={o.batch_rows} batch_age={o.batch_age}s, {o.seconds:g} s per part",
            "",
            "| path | msgs/s | CPU s per 1M msgs | peak RSS MB | / raw limit |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, rate, cpu, rss, ratio in rows:
            cpu_s = f"{cpu:.1f}" if cpu != "" else ""
            rss_s = f"{rss:.0f}" if rss != "" else ""
            lines.append(f"| {name} | {rate:,.0f} | {cpu_s} | {rss_s} | {ratio} |")
        ilp_rate = r["recorder_questdb"]["rate"]
        lat = r["latency"]
        lines += [
            "",
            f"- recorder (ILP) / naive: **{ilp_rate / naive['rate']:.0f}x**",
            f"- latency at {o.latency_rate:,.0f} msgs/s, simulator send → sink acknowledgement:"
            f" p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
            f" ({lat['samples']:,} trades)",
        ]
        for sink, name in (("null", "null sink"), ("sqlite", "SQLite"), ("questdb", "ILP")):
            drain = r["drain"][f"{sink}_rate"]
            rec = r[f"recorder_{sink}"]["rate"]
            lines.append(
                f"- spool drain into {name}: {drain:,.0f} rows/s = {drain / rec:.1f}x "
                f"the recording rate into it"
            )
        rp = r["replay"]
        lines.append(
            f"- replay from SQLite: {rp['rate']:,.0f} events/s over {rp['events']:,} "
            f"events; RSS {rp['rss_first_mb']:.0f} → {rp['rss_last_mb']:.0f} MB "
            f"(max {rp['rss_max_mb']:.0f})"
        )
        lines += ["", *self.archive_table()]
        if "soak" in r:
            s = r["soak"]
            lines.append(
                f"- soak {s['seconds']:.0f} s at full rate into ILP: RSS "
                f"{s['rss_first_mb']:.0f} → {s['rss_last_mb']:.0f} MB "
                f"({s['growth']:+.1%}), max {s['rss_max_mb']:.0f} MB"
            )
        return "\n".join(lines)


def _archive_table(a: dict[str, Any]) -> list[str]:
    """The archive part: reads into Arrow side by side, export, replay, bytes per row."""
    na = "n/a"

    def rate(key: str) -> str:
        return f"{a[key]:,.0f}" if key in a else na

    out = [
        f"Reading {a['trades']:,} trades (2 days, 20 codes) into Arrow, same data in each store"
        + ("" if a["questdb"] == "ok" else f" (QuestDB: {a['questdb']})"),
        "",
        "| path | rows/s | / replay from the archive (events/s) |",
        "|---|---:|---:|",
    ]
    for key, name in (
        ("read_archive_rate", "archive (Parquet) → Arrow"),
        ("read_sqlite_rate", "SQLite → Arrow"),
        ("read_questdb_rate", "QuestDB (/exp CSV) → Arrow"),
        ("export_rate", "export, SQLite → archive (all tables)"),
        ("replay_archive_rate", "replay from the archive (records, events/s)"),
    ):
        ratio = f"{a[key] / a['replay_archive_rate']:.1f}x" if key in a else na
        out.append(f"| {name} | {rate(key)} | {ratio} |")
    out += [
        "",
        f"- replay from the archive: {a['replay_archive_rate']:,.0f} events/s over "
        f"{a['replay_events']:,} events ({a['replay_archive_rate'] / a['replay_sqlite_rate']:.2f}x"
        f" replay from SQLite, {a['replay_sqlite_rate']:,.0f}); tardis-machine's figure is about"
        " 700,000",
        "",
        "| bytes per row | archive | SQLite (table + index) | QuestDB |",
        "|---|---:|---:|---:|",
    ]
    for table in ("trades", "depth", "snapshots"):
        cells = [
            f"{a[k]:.1f}" if (k := f"{store}_{table}_bytes") in a else na
            for store in ("archive", "sqlite", "questdb")
        ]
        out.append(f"| {table} | {' | '.join(cells)} |")
    if (k := f"questdb_{_ArrayDepth.TABLE}_bytes") in a:
        out += [
            "",
            f"- QuestDB depth with the books as DOUBLE[][] instead of JSON text (no dedup "
            f"keys): {a[k]:.1f} bytes a row, against {a['questdb_depth_bytes']:.1f}",
        ]
    return out


def _latency(sent_path: Path, acks_path: Path) -> dict[str, float]:
    """Send -> acknowledgement per trade, paired by position (see the module docstring)."""
    sent: list[int] = json.loads(sent_path.read_text())
    acks: list[int] = json.loads(acks_path.read_text())
    skip = len(sent) // 10  # warm-up
    pairs = list(zip(sent, acks, strict=False))[skip:]
    lat = sorted((ack - at) / 1e6 for at, ack in pairs)
    if not lat:
        return {
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
            "samples": 0,
        }
    return {
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(len(lat) * 0.99)],
        "max_ms": lat[-1],
        "samples": len(lat),
    }


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )


def main() -> None:
    # Flags both the orchestrator and a part take are declared once, here.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--seconds", type=float, default=15.0, help="measured seconds per part")
    shared.add_argument("--warmup", type=float, default=2.0)
    shared.add_argument("--drain-batches", type=int, default=200)
    shared.add_argument("--batch-rows", type=int, default=2000)
    shared.add_argument("--batch-age", type=float, default=0.05)
    shared.add_argument(
        "--archive-rows", type=int, default=10_000_000, help="trades in the archive part"
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[shared])
    sub = parser.add_subparsers(dest="mode")
    part = sub.add_parser("part", parents=[shared])
    part.add_argument("name", choices=sorted(PARTS))
    for flag, kind, default in (
        ("--url", str, ""),
        ("--sink", str, "null"),
        ("--tmp", str, "."),
        ("--ilp-port", int, 0),
        ("--latency-log", str, ""),
        ("--db", str, ""),
        ("--port", int, 0),
        ("--blast-rate", float, 0.0),
        ("--blast-log", str, ""),
        ("--questdb", str, ""),
    ):
        part.add_argument(flag, type=kind, default=default)
    parser.add_argument("--quick", action="store_true", help="short runs, under 30 s in all")
    parser.add_argument(
        "--soak", type=float, default=600.0, help="seconds of the memory soak (0 skips it)"
    )
    parser.add_argument("--latency-rate", type=float, default=10_000.0)
    parser.add_argument(
        "--archive-only", action="store_true", help="only the archive part (--archive-rows)"
    )
    parser.add_argument(
        "--questdb-only",
        action="store_true",
        help="only the raw receive rate and the recorder into the stand-in and a real QuestDB",
    )
    opts = parser.parse_args()
    if opts.mode == "part":
        PARTS[opts.name](opts)
        return
    if opts.archive_only:
        bench = Bench(opts)
        bench.part("archive", "--archive-rows", str(opts.archive_rows))
        print("\n".join(bench.archive_table()))
        return
    if opts.quick:
        opts.seconds, opts.warmup, opts.soak, opts.drain_batches = 0.6, 0.3, 0.0, 5
        opts.archive_rows = min(opts.archive_rows, 100_000)
    if opts.questdb_only:
        Bench(opts).run_questdb()
        return
    Bench(opts).run()


if __name__ == "__main__":
    main()
