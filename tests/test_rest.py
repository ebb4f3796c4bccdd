"""The REST client: the process's rate limit, the response bound, non-OK answers."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import start_recorder, wait_for, write_config
from simulated import SimulatorThread

from recorder.config import Secret, UpstreamConfig
from recorder.exceptions import ApiError, UpstreamError
from recorder.rest import RateLimiter, RestClient


def _client(sim: SimulatorThread, **changes: object) -> RestClient:
    up = dataclasses.replace(UpstreamConfig(http_url=sim.http_url, backoff_initial=0.05), **changes)  # type: ignore[arg-type]
    return RestClient(up, Secret("test-key-0123456789abcdef"), attempts=2)


def test_a_response_over_the_bound_is_refused(sim: SimulatorThread) -> None:
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.market.codes["US:AAPL"].trades)) >= 10)

    async def go() -> None:
        async with _client(sim, max_http_bytes=200) as rest:
            assert await rest.post("/instrument-info", {"codes": ["CF:BTCUSDT"]})
            with pytest.raises(UpstreamError, match=r"1\d{3} bytes is too large|larger than 200"):
                await rest.post("/trade", {"codes": ["US:AAPL", "HK:700"], "count": 50})

    asyncio.run(go())


def test_non_ok_answers_are_api_errors_and_the_key_is_a_header(sim: SimulatorThread) -> None:
    async def go() -> None:
        async with _client(sim) as rest:
            with pytest.raises(ApiError, match="invalid code: XX:NOPE"):
                await rest.post("/snapshot", {"codes": ["XX:NOPE"]})
            assert rest.retries == 1
        async with RestClient(
            UpstreamConfig(http_url=sim.http_url, backoff_initial=0.05), Secret("wrong"), attempts=1
        ) as bad:
            with pytest.raises(ApiError, match="invalid key"):
                await bad.post("/snapshot", {"codes": ["US:AAPL"]})

    asyncio.run(go())


def test_the_limiter_never_lets_more_than_n_requests_into_a_window() -> None:
    async def go() -> list[float]:
        limiter = RateLimiter(3, per=0.5, margin=0.0)
        times = []
        for _ in range(7):
            await limiter.take()
            times.append(time.monotonic())
        return times

    times = asyncio.run(go())
    for i in range(3, len(times)):
        assert times[i] - times[i - 3] >= 0.5 - 1e-3


def test_a_new_limiter_waits_for_what_the_previous_process_spent(tmp_path: Path) -> None:
    state = tmp_path / "rest-budget.json"

    async def spend() -> float:
        limiter = RateLimiter(3, per=0.6, margin=0.0, state=state)
        for _ in range(3):
            await limiter.take()
        return time.monotonic()

    async def next_request() -> float:
        await RateLimiter(3, per=0.6, margin=0.0, state=state).take()  # a restarted process
        return time.monotonic()

    spent = asyncio.run(spend())
    assert len(orjson.loads(state.read_bytes())) == 3
    assert asyncio.run(next_request()) - spent >= 0.55  # waited for the window, not 0
    state.write_bytes(b"not json")  # a damaged file costs the memory, not the process
    asyncio.run(next_request())


def test_kill_9_and_immediate_restarts_stay_inside_the_plans_budget(
    make_sim: Callable[..., SimulatorThread], tmp_path: Path
) -> None:
    # Every start asks for the market calendar and backfills what happened while it was
    # down (/trade, /snapshot, /depth, /history): three starts want more than 10 requests.
    sim = make_sim(trades_per_second=5)
    codes = '"US:AAPL", "HK:700"'
    config = write_config(
        tmp_path / "recorder.toml",
        sim,
        f"""backoff_initial = 0.2
[subscribe]
trades = [{codes}]
depth = [{codes}]
snapshots = [{codes}]
klines = [{codes}]
[sink]
sqlite_path = "ticks.sqlite"
""",
    )

    def requests() -> int:
        return sim.call(lambda: len(sim.sim.http_requests))

    def start(log: Path) -> subprocess.Popen[bytes]:
        return start_recorder(config, log=log)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n, wanted in ((1, 2), (2, 6)):
            procs.append(start(tmp_path / f"run{n}.log"))
            assert wait_for(lambda w=wanted: requests() >= w, timeout=30)  # type: ignore[misc]
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
        log = tmp_path / "run3.log"
        procs.append(start(log))
        assert wait_for(lambda: b"rest_budget_wait" in log.read_bytes(), timeout=30)
        assert requests() <= 10
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(20) == 0
    finally:
        for proc in procs:
            proc.kill()
    assert sim.call(lambda: list(sim.sim.http_over_limit)) == []
