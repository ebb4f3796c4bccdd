"""The chaos run behind ``scripts/chaos``: the simulator and the real recorder process under a
seeded random schedule of faults, then a reconciliation of the store with the ground truth.

Faults: every fault the simulator has (connections closed once or every few seconds, a
stalled server, dropped and malformed frames, refused commands, HTTP 429/500), handshakes
refused for long outages (past ``/trade``'s window of 50 trades), the SQLite file locked
by another writer (the database down), and the recorder stopped with SIGTERM or killed
with SIGKILL and started again.

The report counts, over the trades the market produced while the recorder was recording:
expected, stored, recovered by backfill, lost; lost trades outside every unfilled gap row
of their code (must be 0); stored trades the market never produced, or more often than it
did (must be 0); and the gaps' estimated lost volume against the real one.

``--questdb`` records into a real QuestDB (the newest pinned release, started here by
``recorder.sim.questdb``) instead of SQLite: the database faults become the server stopped
with SIGSTOP or killed with ``kill -9`` and restarted, and the reconciliation reads the
server's tables (copied into a SQLite file once every WAL transaction is applied).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.protocol import NS
from recorder.sim import Faults, SimConfig, Simulator
from recorder.sim.questdb import NEWEST, QuestDB

KEY = "chaos-key"
CODES = ("US:AAPL", "HK:700", "SH:600519", "CF:BTCUSDT")
Identity = tuple[str, int, float, float, int]  # code, ts (ns), price, size, side


@dataclass
class Run:
    """One chaos run's moving parts and what happened."""

    opts: argparse.Namespace
    sim: Simulator
    dir: Path
    rng: random.Random
    proc: asyncio.subprocess.Process | None = None
    faults: list[str] = field(default_factory=list)
    starts: int = 0
    qdb: QuestDB | None = None

    @property
    def db(self) -> Path:
        return self.dir / "ticks.sqlite"

    async def start(self) -> None:
        self.starts += 1
        log = (self.dir / f"recorder-{self.starts}.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recorder",
            "run",
            "--config",
            str(self.dir / "recorder.toml"),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "QOS_CHAOS_KEY": KEY},
        )
        log.close()

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        self.proc = None
        return code


def _config(run: Run, port: int) -> None:
    codes = ", ".join(f'"{c}"' for c in CODES)
    sink = '[sink]\nkind = "sqlite"\nsqlite_path = "ticks.sqlite"'
    if run.qdb is not None:
        sink = f'[sink]\nkind = "questdb"\nquestdb = "{run.qdb.conf}"'
    (run.dir / "recorder.toml").write_text(
        f"""[upstream]
ws_url = "ws://127.0.0.1:{port}/ws"
http_url = "http://127.0.0.1:{port}"
key_env = "QOS_CHAOS_KEY"
stale_after = 5.0
heartbeat_interval = 10.0
heartbeat_timeout = 5.0
[subscribe]
trades = [{codes}]
depth = [{codes}]
snapshots = [{codes}]
{sink}
retry_interval = 1.0
[spool]
dir = "spool"
[log]
dead_letter = "dead-letter.ndjson"
"""
    )


# --- faults: each applies itself, waits, and clears itself --------------------------------


async def _for(run: Run, seconds: float, on: Callable[[], None], off: Callable[[], None]) -> None:
    on()
    await asyncio.sleep(seconds)
    off()


def _set(faults: Faults, name: str, value: Any) -> Callable[[], None]:
    return lambda: setattr(faults, name, value)


async def close_once(run: Run) -> str:
    await run.sim.disconnect_all("chaos: connection closed")
    return "connection closed"


async def close_every(run: Run) -> str:
    every, seconds = run.rng.uniform(3, 8), run.rng.uniform(15, 30)
    f = run.sim.faults
    await _for(run, seconds, _set(f, "close_every", every), _set(f, "close_every", None))
    return f"closed every {every:.0f} s for {seconds:.0f} s"


async def stall(run: Run) -> str:
    seconds = run.rng.uniform(8, 40)
    f = run.sim.faults
    await _for(run, seconds, _set(f, "stall", True), _set(f, "stall", False))
    return f"server stalled {seconds:.0f} s"


async def _cut_off(run: Run, fault: str, seconds: float, reason: str) -> None:
    """Switch a fault on, drop every connection (so the next one meets it), wait, clear."""
    setattr(run.sim.faults, fault, True)
    await run.sim.disconnect_all(reason)
    await asyncio.sleep(seconds)
    setattr(run.sim.faults, fault, False)


async def refuse(run: Run) -> str:
    seconds = run.rng.uniform(20, 60)
    await _cut_off(run, "refuse_connections", seconds, "chaos: outage")
    return f"outage, handshakes refused {seconds:.0f} s"


async def drops(run: Run) -> str:
    rate, seconds = run.rng.uniform(0.01, 0.1), run.rng.uniform(10, 30)
    f = run.sim.faults
    await _for(run, seconds, _set(f, "drop_rate", rate), _set(f, "drop_rate", 0.0))
    return f"{rate:.0%} of frames dropped for {seconds:.0f} s"


async def malformed(run: Run) -> str:
    rate, seconds = run.rng.uniform(0.01, 0.1), run.rng.uniform(10, 30)
    f = run.sim.faults
    await _for(run, seconds, _set(f, "malformed_rate", rate), _set(f, "malformed_rate", 0.0))
    return f"{rate:.0%} malformed frames for {seconds:.0f} s"


async def refused_commands(run: Run) -> str:
    seconds = run.rng.uniform(5, 20)
    await _cut_off(run, "error_replies", seconds, "chaos: resubscribe refused")
    return f"commands refused {seconds:.0f} s"


async def http_errors(run: Run) -> str:
    status, seconds = run.rng.choice((429, 500)), run.rng.uniform(10, 40)
    f = run.sim.faults
    await run.sim.disconnect_all("chaos: with HTTP errors")  # so a backfill meets them
    await _for(run, seconds, _set(f, "http_status", status), _set(f, "http_status", None))
    return f"HTTP {status} for {seconds:.0f} s"


async def database_down(run: Run) -> str:
    seconds = run.rng.uniform(10, 40)
    if run.qdb is not None:
        return await _questdb_down(run.qdb, seconds, run.rng.random() < 0.5)
    release = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(run.db, isolation_level=None, timeout=30)
        con.execute("BEGIN IMMEDIATE")  # another writer holds the file
        release.wait(seconds + 60)
        con.execute("ROLLBACK")
        con.close()

    holder = threading.Thread(target=hold)
    holder.start()
    await asyncio.sleep(seconds)
    release.set()
    await asyncio.to_thread(holder.join)
    return f"database locked {seconds:.0f} s"


async def _questdb_down(qdb: QuestDB, seconds: float, kill: bool) -> str:
    if kill:
        qdb.kill()
        await asyncio.sleep(seconds)
        await asyncio.to_thread(qdb.start)
        return f"QuestDB killed (kill -9), restarted after {seconds:.0f} s"
    qdb.pause()
    await asyncio.sleep(seconds)
    qdb.resume()
    return f"QuestDB stalled (SIGSTOP) {seconds:.0f} s"


async def sigterm_restart(run: Run) -> str:
    code = await run.stop(signal.SIGTERM)
    down = run.rng.uniform(1, 20)
    await asyncio.sleep(down)
    await run.start()
    return f"SIGTERM (exit {code}), restarted after {down:.0f} s"


async def kill_restart(run: Run) -> str:
    await run.stop(signal.SIGKILL)
    down = run.rng.uniform(0, 20)
    await asyncio.sleep(down)
    await run.start()
    return f"kill -9, restarted after {down:.0f} s"


FAULTS: tuple[Callable[[Run], Awaitable[str]], ...] = (
    close_once,
    close_every,
    stall,
    refuse,
    drops,
    malformed,
    refused_commands,
    http_errors,
    database_down,
    sigterm_restart,
    kill_restart,
)


# --- reconciliation --------------------------------------------------------------------------


@dataclass
class GapRow:
    code: str
    start: int
    end: int | None
    cause: str
    status: str
    lost_volume: float | None

    def covers(self, ts: int) -> bool:
        return self.start <= ts and (self.end is None or ts <= self.end)


def _identity(frame: dict[str, Any]) -> Identity:
    return (frame["c"], frame["ts"] * NS, float(frame["p"]), float(frame["v"]), frame["d"])


def reconcile(db: Path, truth: list[dict[str, Any]]) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (first, last) = con.execute(
            "SELECT min(ts), max(ts) FROM trades WHERE source = 'live'"
        ).fetchone()
        lo, hi = first + NS, last - NS  # whole seconds the recorder was there for
        stored_rows = con.execute(
            "SELECT code, ts, price, size, side, source FROM trades WHERE ts BETWEEN ? AND ?",
            (lo, hi),
        ).fetchall()
        gaps = [
            GapRow(*row)
            for row in con.execute(
                "SELECT code, ts, end_ts, cause, status, lost_volume FROM gaps "
                "WHERE stream = 'trades' AND status != 'filled'"
            )
        ]
        statuses = dict(con.execute("SELECT status, count(*) FROM gaps GROUP BY status"))
    finally:
        con.close()
    expected = Counter(_identity(f) for f in truth if f["tp"] == "T" and lo <= f["ts"] * NS <= hi)
    stored = Counter(tuple(r[:5]) for r in stored_rows)
    lost = expected - stored
    invented = stored - expected
    by_code: dict[str, list[GapRow]] = {}
    for gap in gaps:
        by_code.setdefault(gap.code, []).append(gap)
    uncovered = Counter(
        {
            key: n
            for key, n in lost.items()
            if not any(g.covers(key[1]) for g in by_code.get(key[0], ()))
        }
    )
    per_gap = []
    for gap in gaps:
        actual = sum(k[3] * n for k, n in lost.items() if k[0] == gap.code and gap.covers(k[1]))
        per_gap.append((gap, actual))
    estimated = [(g, a) for g, a in per_gap if g.lost_volume is not None]
    return {
        "window": (lo, hi),
        "expected": sum(expected.values()),
        "stored": sum(stored.values()),
        "backfilled": sum(1 for r in stored_rows if r[5] == "backfill"),
        "lost": sum(lost.values()),
        "uncovered": sum(uncovered.values()),
        "uncovered_sample": [list(k) for k in list(uncovered)[:5]],
        "invented_or_duplicated": sum(invented.values()),
        "gap_statuses": statuses,
        "unfilled_trade_gaps": len(gaps),
        "lost_volume_actual": sum(k[3] * n for k, n in lost.items()),
        "lost_volume_estimated": sum(g.lost_volume or 0.0 for g, _ in estimated),
        "lost_volume_actual_where_estimated": sum(a for _, a in estimated),
        "gaps_without_estimate": sum(1 for g, _ in per_gap if g.lost_volume is None),
        "per_gap": [
            {
                "code": g.code,
                "start": g.start // NS,
                "seconds": None if g.end is None else round((g.end - g.start) / NS),
                "cause": g.cause,
                "status": g.status,
                "estimated": g.lost_volume,
                "actual": a,
            }
            for g, a in per_gap
        ],
    }


def report(run: Run, result: dict[str, Any], minutes: float) -> str:
    r = result
    lines = [
        f"chaos run: {minutes:g} min, seed {run.opts.seed}, {len(CODES)} codes at "
        f"{run.opts.rate:g} trades/s each, {len(run.faults)} faults, "
        f"{run.starts} recorder starts",
        "faults: " + ", ".join(f"{name} {n}" for name, n in sorted(Counter(run.faults).items())),
        f"trades expected {r['expected']}, stored {r['stored']} "
        f"(recovered by backfill {r['backfilled']}), lost {r['lost']}",
        f"lost trades outside every unfilled gap row of their code: {r['uncovered']}",
        f"invented or duplicated trades: {r['invented_or_duplicated']}",
        f"gaps by status: {', '.join(f'{k} {v}' for k, v in sorted(r['gap_statuses'].items()))}",
        f"lost volume: actual {r['lost_volume_actual']:g}; where gaps carry an estimate, "
        f"estimated {r['lost_volume_estimated']:g} vs actual "
        f"{r['lost_volume_actual_where_estimated']:g}; "
        f"{r['gaps_without_estimate']} unfilled gap(s) without an estimate",
    ]
    unfilled = [g for g in r["per_gap"] if g["actual"] or g["estimated"]]
    if unfilled:
        lines.append("unfilled trades gaps with loss (code, seconds, cause, status, est, actual):")
        for g in unfilled:
            est = "-" if g["estimated"] is None else f"{g['estimated']:g}"
            lines.append(
                f"  {g['code']:<11} {g['seconds']!s:>5} {g['cause']:<10} {g['status']:<13} "
                f"{est:>8} {g['actual']:g}"
            )
    verdict = r["uncovered"] == 0 and r["invented_or_duplicated"] == 0
    lines.append(f"reconciliation: {'PASS' if verdict else 'FAIL'}")
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------


def copy_questdb(qdb: QuestDB, db: Path) -> Path:
    """The server's trades and gaps, once every WAL transaction is applied, in a SQLite
    file with the columns :func:`reconcile` reads (times in ns)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = qdb.rows("SELECT name, writerTxn, sequencerTxn, suspended FROM wal_tables()")
        if all(w == s and not sus for name, w, s, sus in state if name in ("trades", "gaps")):
            break
        time.sleep(0.5)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE trades (code, ts, price, size, side, source)")
    con.execute("CREATE TABLE gaps (code, ts, end_ts, cause, status, lost_volume, stream)")
    con.executemany(
        "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?)",
        qdb.rows(
            "SELECT code, cast(ts AS LONG) * 1000, price, size, side, source FROM trades",
        ),
    )
    con.executemany(
        "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?, ?)",
        qdb.rows(
            "SELECT code, cast(ts AS LONG) * 1000, cast(end_ts AS LONG) * 1000, cause, status,"
            " lost_volume, stream FROM gaps"
        ),
    )
    con.commit()
    con.close()
    return db


async def chaos(opts: argparse.Namespace, directory: Path) -> int:
    rng = random.Random(opts.seed)
    sim = Simulator(
        SimConfig(
            codes=CODES,
            seed=opts.seed,
            keys=(KEY,),
            trades_per_second=opts.rate,
            heartbeat_timeout=60,
            market_hours=False,  # every code trades whatever the hour of the run
        )
    )
    run = Run(opts, sim, directory, rng)
    if opts.questdb:
        run.qdb = QuestDB(NEWEST, directory / "questdb").start()
        print(f"  {run.qdb.describe()}", file=sys.stderr, flush=True)
    try:
        return await _chaos(run, opts, directory)
    finally:
        if run.qdb is not None:
            run.qdb.stop()


async def _chaos(run: Run, opts: argparse.Namespace, directory: Path) -> int:
    rng, sim = run.rng, run.sim
    async with sim.serving() as port:
        _config(run, port)
        await run.start()
        deadline = time.monotonic() + opts.minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(opts.quiet / 2, opts.quiet))
            fault = rng.choice(FAULTS)
            what = await fault(run)
            run.faults.append(fault.__name__)
            print(f"  {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)
        # let the last reconnect and backfill round finish before the final stop
        await asyncio.sleep(opts.settle)
        code = await run.stop(signal.SIGTERM)
        if code != 0:
            print(f"chaos: the recorder's final stop exited {code}", file=sys.stderr)
        truth = list(sim.truth)
    db = run.db if run.qdb is None else copy_questdb(run.qdb, directory / "from-questdb.sqlite")
    result = reconcile(db, truth)
    (directory / "report.json").write_text(json.dumps(result, indent=1))
    print(report(run, result, opts.minutes))
    print(f"files: {directory}", file=sys.stderr)
    return 0 if result["uncovered"] == 0 and result["invented_or_duplicated"] == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=4.0, help="trades per second per code")
    parser.add_argument("--quiet", type=float, default=20.0, help="most seconds between faults")
    parser.add_argument("--settle", type=float, default=25.0, help="seconds before the stop")
    parser.add_argument("--dir", help="keep the run's files here (default: a temp folder)")
    parser.add_argument(
        "--questdb", action="store_true", help="record into a real QuestDB instead of SQLite"
    )
    opts = parser.parse_args()
    directory = Path(opts.dir or tempfile.mkdtemp(prefix="qos-chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(chaos(opts, directory)))


if __name__ == "__main__":
    main()
