"""``qos-recorder demo``: the simulator and the recorder in one process, into SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from . import logs
from .config import Config, Secret, parse
from .daemon import Recorder
from .protocol import market_of
from .report import format_gaps, read_gaps
from .schema import TABLES
from .sim import DEFAULT_CODES, SimConfig, Simulator
from .store import reader_for


async def demo(seconds: float, path: Path) -> None:
    log_path = path.with_suffix(".log")
    log_file = await asyncio.to_thread(_open_log, log_path)
    logs.configure("info", log_file)
    sim = Simulator(SimConfig(codes=DEFAULT_CODES, keep_truth=False))
    async with sim.serving("127.0.0.1", 0) as port:
        config = await _record(port, seconds, path, log_file)
    print(summary(config))
    now = int(time.time())
    closed = sorted({market_of(c) for c in DEFAULT_CODES if not sim.market.trading(c, now)})
    if closed:
        print(f"closed now, so not trading in the simulator: {', '.join(closed)} (market hours)")
    print(f"log: {log_path}")
    print(
        "next, a config of your own: .venv/bin/qos-recorder simulate --config-out "
        'mine/recorder.toml (README: "From the demo to a recording of your own")'
    )


async def _record(port: int, seconds: float, path: Path, log_file: BinaryIO) -> Config:
    """Record from the simulator on ``port`` for ``seconds``; the config it used."""
    codes = list(DEFAULT_CODES)
    config = parse(
        {
            "upstream": {
                "ws_url": f"ws://127.0.0.1:{port}/ws",
                "http_url": f"http://127.0.0.1:{port}",
                "key_env": "QOS_DEMO_KEY",
            },
            "subscribe": {"trades": codes, "depth": codes, "snapshots": codes},
            "sink": {"kind": "sqlite", "sqlite_path": str(path)},
            "spool": {"dir": str(path.parent / "spool")},
            "log": {"dead_letter": str(path.parent / "dead-letter.ndjson")},
        },
        name=str(path.parent / "demo.toml"),
    )
    print(
        f"simulator on ws://127.0.0.1:{port}/ws; recording {len(codes)} codes for "
        f"{seconds:g} s into {path}",
        flush=True,
    )
    recorder = Recorder(config, Secret("demo"))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    try:
        await recorder.run(stop)
    finally:
        log_file.close()
    return config


def config_text(ws_url: str, http_url: str, codes: Sequence[str]) -> str:
    """A config file recording ``codes`` from the simulator at ``ws_url``/``http_url``
    into SQLite beside the file; the key comes from ``QOS_API_KEY`` (the simulator's is
    ``demo``)."""
    listed = ", ".join(f'"{c}"' for c in codes)
    return (
        "# qos-recorder config for the simulator; its key is `demo`:\n"
        "#   QOS_API_KEY=demo qos-recorder run --config THIS-FILE\n"
        "# relative paths are relative to this file's folder\n"
        "[upstream]\n"
        f'ws_url = "{ws_url}"\n'
        f'http_url = "{http_url}"\n'
        'key_env = "QOS_API_KEY"\n\n'
        "[subscribe]\n"
        f"trades = [{listed}]\n"
        f"depth = [{listed}]\n"
        f"snapshots = [{listed}]\n\n"
        "[sink]\n"
        'kind = "sqlite"\n'
        'sqlite_path = "ticks.sqlite"\n\n'
        "[metrics]\n"
        'listen = "127.0.0.1:9464"  # for `qos-recorder status`\n'
    )


def paste_lines(ws_url: str, http_url: str) -> str:
    """What to put in one's own config to record from the simulator."""
    return (
        'to record from it, put in your config (the simulator\'s key is "demo"):\n'
        "  [upstream]\n"
        f'  ws_url = "{ws_url}"\n'
        f'  http_url = "{http_url}"\n'
        "then: QOS_API_KEY=demo qos-recorder run --config YOUR-CONFIG"
    )


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def summary(config: Config) -> str:
    """Rows per table and the gaps, read back through the store's reader."""
    path = config.resolve(config.sink.sqlite_path)
    reader = reader_for(config)
    try:
        lines = [f"database: {path}", "rows per table:"]
        width = max(len(t.name) for t in TABLES)
        for table in TABLES:
            n = sum(reader.count(table.name, c, 0, 2**63 - 1) for c in reader.codes(table.name))
            lines.append(f"  {table.name:<{width}} {n:>8}")
        lines += ["gaps:", format_gaps(read_gaps(reader, 0))]
    finally:
        reader.close()
    return "\n".join(lines)
