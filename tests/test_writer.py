"""No loss while the database is down: the writer spools, then drains in order."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from conftest import (
    make_config,
    rows,
    run_recorder,
    sigterm,
    start_recorder,
    wait_for,
    write_config,
)
from prometheus_client import generate_latest
from simulated import SimulatorThread
from truth import check_trades

from recorder.batching import Batch
from recorder.daemon import Recorder
from recorder.exceptions import WriterFailed
from recorder.protocol import NS, Stream
from recorder.sim.ilp import IlpServer, Receiver
from recorder.sinks.null import NullSink
from recorder.sinks.sqlite import SQLiteSink
from recorder.spool import Spool
from recorder.writer import Writer

SimFactory = Callable[..., SimulatorThread]
OUTAGE = float(os.environ.get("QOS_OUTAGE_SECONDS", "30"))
LOCK_SECONDS = float(os.environ.get("QOS_LOCK_SECONDS", "30"))


def _identities(state: Receiver) -> set[tuple[object, ...]]:
    """The trade identities the receiver got; a re-sent batch repeats them, and QuestDB's
    dedup keys fold repeats into one row."""
    return {
        (
            r.symbols["code"],
            r.ts,
            r.fields["price"],
            r.fields["size"],
            r.fields["side"],
            r.fields["k"],
        )
        for r in state.table("trades")
    }


def _drained(recorder: Recorder) -> bool:
    return (
        not recorder.status().spool_segments
        and recorder.status().writer_queue == 0
        and recorder.status().sink_healthy
    )


def test_ilp_answering_503_then_refusing_connections_loses_nothing(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=30, seed=31)
    codes = ["US:AAPL", "HK:700", "CF:BTCUSDT"]
    with IlpServer() as ilp:
        config = make_config(
            sim,
            tmp_path,
            codes,
            sink={"kind": "questdb", "questdb": ilp.conf, "retry_interval": 0.5},
            subscribe={"depth": [], "snapshots": []},
        )
        phases: list[str] = []

        def outage(recorder: Recorder, elapsed: float) -> None:
            if not phases and recorder.status().batches_written > 3:
                ilp.state.mode = "fail"  # the database answers 503
                phases.append(f"503 at {elapsed:.1f}")
            elif len(phases) == 1 and elapsed > float(phases[0].split()[-1]) + OUTAGE / 2:
                ilp.stop()  # then refuses connections
                phases.append(f"down at {elapsed:.1f}")
            elif len(phases) == 2 and elapsed > float(phases[1].split()[-1]) + OUTAGE / 2:
                ilp.state.mode = "ok"
                ilp.start()
                phases.append(f"back at {elapsed:.1f}")

        recorder = run_recorder(
            config,
            during=outage,
            timeout=OUTAGE + 60,
            until=lambda r: len(phases) == 3 and _drained(r) and r.status().drained_batches > 0,
        )
        state = ilp.state
    assert len(phases) == 3, phases
    now = recorder.status()
    assert now.sink_failures > 0 and now.spooled_batches > 0 and now.lost_rows == 0
    assert state.failed_writes > 0
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    received = recorder.status().frames[Stream.TRADES]
    # every identity the recorder received reached the database; re-sent batches carry the
    # same identities, which QuestDB's dedup keys fold into one row
    identities = _identities(state)
    assert len(identities) == received
    check_trades(sorted(identities), sent[:received])


def test_a_locked_sqlite_file_loses_nothing_and_duplicates_nothing(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=30, seed=32)
    config = make_config(sim, tmp_path, ["US:AAPL", "CF:BTCUSDT"], sink={"retry_interval": 0.5})
    db = tmp_path / "ticks.sqlite"
    release = threading.Event()
    locked: list[float] = []

    def hold_lock() -> None:
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")  # another writer holds the file
        release.wait(LOCK_SECONDS + 30)
        con.execute("ROLLBACK")
        con.close()

    holder = threading.Thread(target=hold_lock)

    def lock(recorder: Recorder, elapsed: float) -> None:
        if not locked and recorder.status().batches_written > 3:
            holder.start()
            locked.append(elapsed)
        elif locked and not release.is_set() and elapsed > locked[0] + LOCK_SECONDS:
            release.set()

    recorder = run_recorder(
        config,
        during=lock,
        timeout=LOCK_SECONDS + 60,
        until=lambda r: release.is_set() and _drained(r) and r.status().drained_batches > 0,
    )
    holder.join()
    assert recorder.status().sink_failures > 0 and recorder.status().spooled_batches > 0
    received = recorder.status().frames[Stream.TRADES]
    stored = rows(db, "SELECT code, ts, price, size, side, k FROM trades")
    assert len(stored) == received
    check_trades(stored, sim.call(lambda: sim.sim.sent_frames("T"))[:received])


def test_sigterm_while_the_database_is_down_spools_and_the_next_start_drains(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=30, seed=33)
    with IlpServer(mode="fail") as ilp:
        config = write_config(
            tmp_path / "recorder.toml",
            sim,
            f"""[subscribe]
trades = ["US:AAPL", "HK:700"]
[sink]
kind = "questdb"
questdb = "{ilp.conf}"
retry_interval = 0.5
""",
        )
        proc = start_recorder(config)
        spooled = wait_for(lambda: len(list((tmp_path / "spool").glob("*.seg"))) > 0, 30)
        pushed = wait_for(lambda: len(sim.call(lambda: sim.sim.sent_frames("T"))) > 200, 30)
        stopped, _ = sigterm(proc)
        assert spooled and pushed
        received = stopped["frames"]["trades"]
        assert stopped["spool_bytes"] > 0 and stopped["lost_rows"] == 0 and received > 200
        assert ilp.state.table("trades") == []
        # the database is back: the next start drains the spool first
        ilp.state.mode = "ok"
        proc = start_recorder(config)
        try:
            assert wait_for(lambda: not list((tmp_path / "spool").glob("*.seg")), 30)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        finally:
            proc.kill()
        identities = _identities(ilp.state)
    first_run = sim.call(lambda: [f for c, f in sim.sim.sent if f["tp"] == "T" and c == 1])
    check_trades(
        sorted(i for i in identities if i in _keys(first_run[:received])), first_run[:received]
    )


def _keys(frames: list[dict[str, object]]) -> set[tuple[object, ...]]:
    from collections import Counter

    from truth import trade_key

    seen: Counter[tuple[object, ...]] = Counter()
    out: set[tuple[object, ...]] = set()
    for f in frames:
        key = trade_key(f)
        out.add((*key, seen[key]))
        seen[key] += 1
    return out


def test_writer_spools_when_its_queue_is_full_and_keeps_order(tmp_path: Path) -> None:
    class SlowSink(NullSink):
        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()
            self.order: list[int] = []

        def write(self, batch: Batch) -> None:
            self.gate.wait(10)
            self.order.append(batch.tables["trades"][0][0])
            super().write(batch)

    sink = SlowSink()
    writer = Writer(sink, Spool(tmp_path / "spool"), max_pending=2, retry_interval=0.05)
    writer.start()
    batches = [
        Batch({"trades": [(i, "US:AAPL", "US", 1.0, 1.0, 1, 0, "live", 0)]}, i) for i in range(10)
    ]
    for batch in batches:
        writer.submit(batch)
    # submit never waited on the slow database: the overflow went to the spooler thread
    assert wait_for(lambda: writer.stats.spooled_batches > 0)
    sink.gate.set()
    assert wait_for(lambda: sink.batches == 10 and not writer.spool)
    assert sink.order == list(range(10))  # the order they were cut in, spooled or not
    assert writer.close(5)


class CrashingSink(SQLiteSink):
    """A sink with a bug: ``write`` raises something that is not a SinkError, ``crashes``
    times (forever when None), then works."""

    def __init__(self, path: Path, crashes: int | None) -> None:
        super().__init__(path)
        self.crashes = crashes

    def write(self, batch: Batch) -> None:
        if self.crashes is None or self.crashes > 0:
            if self.crashes is not None:
                self.crashes -= 1
            raise RuntimeError("a bug in the sink")
        super().write(batch)


def test_a_writer_that_crashes_recovers_loses_nothing_and_says_so(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=30, seed=34)
    config = make_config(sim, tmp_path, ["US:AAPL", "HK:700"])
    sink = CrashingSink(tmp_path / "ticks.sqlite", crashes=3)
    seen: list[dict[str, Any]] = []

    def health(recorder: Recorder, elapsed: float) -> None:
        ok, summary = recorder.status().health(config.metrics)
        if not ok:
            seen.append(summary)

    with structlog.testing.capture_logs() as logs:
        recorder = run_recorder(
            config,
            sink=sink,
            during=health,
            timeout=60,
            until=lambda r: (
                r.status().writer_crashes >= 3 and _drained(r) and r.status().batches_written > 5
            ),
        )
    assert recorder.status().writer_crashes == 3 and not recorder.status().writer_failed
    crashed = [e for e in logs if e["event"] == "writer_crashed"]
    assert len(crashed) == 1 and "RuntimeError: a bug in the sink" in crashed[0]["error"]
    assert any(
        "writer restarted after: RuntimeError: a bug in the sink" in s["reasons"] for s in seen
    )
    received = recorder.status().frames[Stream.TRADES]
    stored = rows(tmp_path / "ticks.sqlite", "SELECT code, ts, price, size, side, k FROM trades")
    assert len(stored) == received > 0
    check_trades(stored, sim.call(lambda: sim.sim.sent_frames("T"))[:received])
    assert not (tmp_path / "spool" / "rejected.ndjson").exists()


def test_a_writer_that_keeps_crashing_stops_the_recorder_with_an_error_and_spools_all(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=30, seed=35)
    config = make_config(sim, tmp_path, ["US:AAPL"])
    holder: list[Recorder] = []

    def keep(recorder: Recorder, elapsed: float) -> None:
        holder[:1] = [recorder]

    with pytest.raises(ExceptionGroup) as info:  # the recorder stops on its own, failing
        run_recorder(
            config,
            sink=CrashingSink(tmp_path / "ticks.sqlite", None),
            during=keep,
            until=lambda r: False,
            timeout=60,
        )
    (failed,) = info.value.subgroup(WriterFailed).exceptions  # type: ignore[union-attr]
    while isinstance(failed, ExceptionGroup):
        (failed,) = failed.exceptions
    assert isinstance(failed, WriterFailed) and "crashed 5 times in a row" in str(failed)
    (recorder,) = holder
    assert recorder.status().writer_failed and recorder.status().lost_rows == 0
    # everything received is in the spool, or set aside in rejected.ndjson (the batch that
    # crashed the writer max_crashes - 1 times): drain both into a working sink
    received = recorder.status().frames[Stream.TRADES]
    writer = Writer(SQLiteSink(tmp_path / "ticks.sqlite"), Spool(tmp_path / "spool"))
    writer.start()
    assert wait_for(lambda: not writer.spool, timeout=20)
    for kept in _rejected(tmp_path / "spool"):
        assert "crashed the writer 4 times" in kept["error"]
        writer.submit(
            Batch({t: [tuple(r) for r in rs] for t, rs in kept["batch"]["tables"].items()}, 0)
        )
    assert writer.close(5)
    stored = rows(tmp_path / "ticks.sqlite", "SELECT code, ts, price, size, side, k FROM trades")
    assert len(stored) == received > 0
    check_trades(stored, sim.call(lambda: sim.sim.sent_frames("T"))[:received])


def test_retention_deletes_whole_old_days_and_keeps_today(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=10, seed=36)
    db = tmp_path / "ticks.sqlite"
    today = int(time.time()) // 86400 * 86400
    old = [  # 12,000 trades and a gap, two and three days ago
        (
            (today - 86400 * (2 + i % 2)) * NS + i,
            "US:AAPL",
            "US",
            1.0,
            1.0,
            1,
            0,
            "live",
            0,
            0,
            None,
        )
        for i in range(12_000)
    ]
    sink = SQLiteSink(db)
    sink.write(Batch({"trades": old}, seq=1))
    sink.close()
    config = make_config(
        sim, tmp_path, ["US:AAPL"], retention={"trades": 0, "depth": 1, "gaps": 365}
    )
    recorder = run_recorder(
        config,
        timeout=30,
        until=lambda r: r.status().expired_rows >= 12_000 and r.status().frames[Stream.TRADES] > 20,
    )
    (before_today,) = rows(db, "SELECT count(*) FROM trades WHERE ts < ?", today * NS)[0]
    sql = "SELECT count(*) FROM trades WHERE ts >= ? AND source = 'live'"
    (live,) = rows(db, sql, today * NS)[0]
    assert before_today == 0 and recorder.status().expired_rows == 12_000
    assert live == recorder.status().frames[Stream.TRADES] > 20  # today's rows all stay


# --- #21 item 1: a batch a sink refuses for its content never stops the writer --------------


def _trade_row(ts: int, i: int = 0) -> tuple[object, ...]:
    return (ts, "US:AAPL", "US", 1.0 + i, 1.0, 1, 0, "live", 7)


def _rejected(spool_dir: Path) -> list[dict[str, Any]]:
    path = spool_dir / "rejected.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "ts",
    [10_000_000_000 * NS, 1741960243000 * NS],  # past int64; past what JSON carries too
    ids=["far-future", "milliseconds"],
)
def test_a_batch_sqlite_cannot_hold_is_set_aside_and_the_writer_goes_on(
    tmp_path: Path, ts: int
) -> None:
    db = tmp_path / "ticks.sqlite"
    writer = Writer(SQLiteSink(db), Spool(tmp_path / "spool"), retry_interval=0.05)
    writer.start()
    good_ts = 1741960243 * NS
    writer.submit(Batch({"trades": [_trade_row(good_ts, 0), _trade_row(ts, 1)]}, 1))
    writer.submit(Batch({"trades": [_trade_row(good_ts, 2)]}, 2))
    assert wait_for(lambda: writer.stats.batches >= 1 and writer.stats.rejected_rows == 2)
    assert writer.close(5)
    assert writer.stats.lost_rows == 0 and not writer.failed.is_set()
    assert writer.stats.crashes <= 1  # at most the one crash that set the batch aside
    assert rows(db, "SELECT price FROM trades") == [(3.0,)]
    (kept,) = _rejected(tmp_path / "spool")
    assert "Overflow" in kept["error"] or "too large" in kept["error"]
    assert [row[0] for row in kept["batch"]["tables"]["trades"]] in (
        [good_ts, ts],
        [good_ts, repr(ts)],  # an int JSON cannot carry is kept as text
    )
    assert not writer.spool  # nothing left to retry for ever


class PoisonedSink(SQLiteSink):
    """A sink with a bug that one batch (``seq``) triggers every time."""

    def __init__(self, path: Path, seq: int) -> None:
        super().__init__(path)
        self.seq = seq
        self.tries = 0

    def write(self, batch: Batch) -> None:
        if batch.seq == self.seq:
            self.tries += 1
            raise RuntimeError("a bug this batch triggers")
        super().write(batch)


def test_a_spooled_batch_that_crashes_the_writer_is_set_aside_not_a_crash_loop(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    ts = 1741960243 * NS
    for seq in (1, 2, 3):  # left by the last run; batch 2 kills the writer every time
        spool.append(Batch({"trades": [_trade_row(ts, seq)]}, seq))
    spool.close()
    sink = PoisonedSink(tmp_path / "ticks.sqlite", seq=2)
    writer = Writer(sink, Spool(tmp_path / "spool"), retry_interval=0.05, max_crashes=3)
    writer.start()
    assert wait_for(lambda: not writer.spool and writer.stats.rejected_rows == 1, timeout=20)
    assert writer.close(5)
    assert not writer.failed.is_set() and sink.tries == 2 and writer.stats.lost_rows == 0
    assert rows(tmp_path / "ticks.sqlite", "SELECT price FROM trades") == [(2.0,), (4.0,)]
    (kept,) = _rejected(tmp_path / "spool")
    assert "crashed the writer 2 times" in kept["error"] and kept["batch"]["seq"] == 2


def test_a_far_future_and_a_millisecond_ts_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    from hostile import Hostile

    far = '{"tp":"T","c":"US:AAPL","p":"1","v":"1","ts":10000000000,"d":1}'
    ms = '{"tp":"T","c":"US:AAPL","p":"1","v":"1","ts":1741960243000,"d":1}'
    good = '{"tp":"T","c":"US:AAPL","p":"2","v":"1","ts":1741960243,"d":1}'
    with Hostile() as up:
        up.frames += [far, ms, good]
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})
        recorder = run_recorder(
            config, until=lambda r: r.status().rows_written.get("trades", 0) >= 1, timeout=20
        )
    assert recorder.status().decode_errors == 2 and not recorder.status().writer_crashes
    assert rows(tmp_path / "ticks.sqlite", "SELECT price FROM trades") == [(2.0,)]
    dead = [
        orjson.loads(line) for line in (tmp_path / "dead-letter.ndjson").read_bytes().splitlines()
    ]
    assert [d["frame"] for d in dead] == [far, ms]
    assert all("'ts'" in d["reason"] for d in dead)


# --- #17 item 6: the writer owned like a task, with a watchdog on sink.write ----------------


class HangingSink(SQLiteSink):
    """A database that stops answering: ``write`` waits for ``gate`` once ``hang`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hang = threading.Event()
        self.gate = threading.Event()

    def write(self, batch: Batch) -> None:
        if self.hang.is_set():
            self.gate.wait(30)
        super().write(batch)


def test_a_stuck_sink_write_is_reported_in_log_status_health_and_metrics(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=20, seed=37)
    config = make_config(sim, tmp_path, ["US:AAPL"], sink={"write_stuck_after": 0.5})
    sink = HangingSink(tmp_path / "ticks.sqlite")
    seen: dict[str, Any] = {}

    with structlog.testing.capture_logs() as logs:

        def hang_then_release(recorder: Recorder, elapsed: float) -> None:
            if not sink.hang.is_set() and recorder.status().batches_written > 3:
                sink.hang.set()
            status = recorder.status()
            logged = any(e["event"] == "sink_write_stuck" for e in logs)
            if status.write_stuck_seconds and logged and "stuck" not in seen:
                seen["stuck"] = status.write_stuck_seconds
                seen["health"] = status.health(config.metrics)
                seen["metrics"] = generate_latest(recorder.metrics.registry).decode()
                sink.gate.set()
            if "stuck" in seen and any(e["event"] == "sink_write_unstuck" for e in logs):
                seen["after"] = status.health(config.metrics)

        recorder = run_recorder(
            config, sink=sink, during=hang_then_release, until=lambda r: "after" in seen
        )
    assert seen["stuck"] > 0.5
    ok, summary = seen["health"]
    assert not ok and any(r.startswith("database write stuck for") for r in summary["reasons"])
    assert "qos_sink_write_stuck_seconds " in seen["metrics"]
    stuck_line = next(
        line for line in seen["metrics"].splitlines() if line.startswith("qos_sink_write_stuck")
    )
    assert float(stuck_line.split()[-1]) > 0.5
    assert [e["event"] for e in logs if "stuck" in e["event"]] == [
        "sink_write_stuck",
        "sink_write_unstuck",
    ]
    assert not any("stuck" in r for r in seen["after"][1]["reasons"])
    assert recorder.status().lost_rows == 0


class WatchedSpool(Spool):
    """The real spool, noting which thread appends (the event loop must never)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.appended_by: list[str] = []

    def append(self, batch: Batch) -> None:
        self.appended_by.append(threading.current_thread().name)
        super().append(batch)


def test_the_overflow_is_spooled_off_the_submitting_thread_and_keeps_order(
    tmp_path: Path,
) -> None:
    """#17 item 5: submit() (the frame loop) only queues; the spooler thread writes."""

    class SlowSink(NullSink):
        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()
            self.order: list[int] = []

        def write(self, batch: Batch) -> None:
            self.gate.wait(10)
            self.order.append(batch.seq)
            super().write(batch)

    sink, spool = SlowSink(), WatchedSpool(tmp_path / "spool")
    writer = Writer(sink, spool, max_pending=2, retry_interval=0.05)
    writer.start()
    for seq in range(40):
        writer.submit(Batch({"trades": [_trade_row(seq * NS)]}, seq))
        if seq == 20:
            sink.gate.set()  # the database comes back while batches still overflow
    assert wait_for(lambda: sink.batches == 40 and not writer.spool)
    assert writer.close(5)
    assert spool.appended_by and "MainThread" not in spool.appended_by
    assert set(spool.appended_by) <= {"qos-spooler", "qos-writer"}
    # what was written directly and what went through the spool reached it in order
    assert sorted(set(sink.order)) == list(range(40))
    firsts = [sink.order.index(seq) for seq in range(40)]
    assert firsts == sorted(firsts)
