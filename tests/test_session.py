"""The upstream session against the simulator: reconnects, the 1 request/s rule, refusals."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import islice, pairwise
from pathlib import Path

import structlog
from conftest import make_config, rows, run_recorder

from recorder.daemon import Recorder
from recorder.session import backoff
from recorder.simulator import Faults, SimulatorThread

SimFactory = Callable[..., SimulatorThread]


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    delays = list(islice(backoff(1.0, 8.0, random.Random(1)), 200))
    assert all(0.1 <= d <= 8.0 for d in delays)
    assert max(delays[:3]) <= 4.0  # 1, 2, 4 caps for the first three
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed ladder
    assert max(delays[10:]) > 6.0  # reaches the cap


def _spacing_ok(sim: SimulatorThread, minimum: float = 1.0) -> bool:
    commands = sim.call(lambda: list(sim.sim.commands))
    by_conn: dict[int, list[float]] = {}
    for conn, at, _ in commands:
        by_conn.setdefault(conn, []).append(at)
    return all(b - a >= minimum for times in by_conn.values() for a, b in pairwise(times))


def test_reconnects_and_resubscribes_when_the_server_drops(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(Faults(close_every=2.5), trades_per_second=20)
    config = make_config(sim, tmp_path, ["US:AAPL", "HK:700"])
    recorder = run_recorder(
        config, until=lambda r: r.stats.reconnects >= 3 and r.stats.subscribed, timeout=30
    )
    assert recorder.stats.reconnects >= 3
    assert sim.call(lambda: sim.sim.connections_opened) >= 3
    assert sim.call(lambda: sim.sim.refusals) == []  # never broke the 1 request/s rule
    assert _spacing_ok(sim)
    # every connection subscribed all three streams again
    kinds = sim.call(lambda: [(c, k) for c, _, k in sim.sim.commands])
    for conn in {c for c, _ in kinds}:
        subscribed = {k for c, k in kinds if c == conn}
        assert {"T", "D", "S"} <= subscribed or conn == max(c for c, _ in kinds)
    db = tmp_path / "ticks.sqlite"
    (live,) = rows(db, "SELECT count(*) FROM trades WHERE source = 'live'")[0]
    assert live == recorder.stats.frames["T"] > 0


def test_reconnects_when_the_server_stalls(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(trades_per_second=20)
    config = make_config(sim, tmp_path, ["US:AAPL"], upstream={"stale_after": 1.5})
    trades_at_reconnect: list[int] = []

    def stall_then_recover(recorder: Recorder, elapsed: float) -> None:
        if elapsed > 2 and recorder.stats.reconnects == 0:
            sim.call(lambda: setattr(sim.sim.faults, "stall", True))
        elif recorder.stats.reconnects >= 1 and not trades_at_reconnect:
            trades_at_reconnect.append(recorder.stats.frames["T"])
            sim.call(lambda: setattr(sim.sim.faults, "stall", False))

    recorder = run_recorder(
        config,
        during=stall_then_recover,
        timeout=30,
        until=lambda r: (
            bool(trades_at_reconnect) and r.stats.frames["T"] > trades_at_reconnect[0] + 10
        ),
    )
    assert recorder.stats.reconnects >= 1
    assert recorder.stats.last_disconnect_reason is not None
    assert recorder.stats.frames["T"] > trades_at_reconnect[0] + 10


def test_heartbeats_keep_the_session_alive(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(heartbeat_timeout=3.0)
    config = make_config(sim, tmp_path, ["US:AAPL"], upstream={"heartbeat_interval": 1.0})
    recorder = run_recorder(config, seconds=7)
    assert recorder.stats.reconnects == 0
    assert recorder.stats.heartbeat_rtt is not None
    assert sim.call(lambda: sim.sim.connections_opened) == 1
    assert _spacing_ok(sim)


def test_a_rejected_subscription_is_a_clear_error(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(max_products=1)
    config = make_config(sim, tmp_path, ["US:AAPL", "US:TSLA"])
    with structlog.testing.capture_logs() as logs:
        recorder = run_recorder(config, until=lambda r: r.stats.rejected >= 1, timeout=15)
    assert recorder.stats.rejected >= 1
    errors = [e for e in logs if e["log_level"] == "error"]
    assert any(e["event"] == "request_rejected" and "product limit" in e["msg"] for e in errors)


def test_a_refused_key_is_logged_and_retried(sim: SimulatorThread, tmp_path: Path) -> None:
    config = make_config(sim, tmp_path, ["US:AAPL"])
    with structlog.testing.capture_logs() as logs:
        from recorder.config import Secret

        recorder = Recorder(config, Secret("wrong-key"))
        import asyncio

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.5, stop.set)
            await recorder.run(stop)

        asyncio.run(main())
    assert any(e["event"] == "auth_rejected" and e["status"] == 401 for e in logs)
    assert recorder.stats.reconnects >= 1
    assert "wrong-key" not in repr(logs)
