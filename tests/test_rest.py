"""The REST client: the process's rate limit, the response bound, non-OK answers."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from conftest import wait_for
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
            with pytest.raises(ApiError, match="invalid code: US:NOPE"):
                await rest.post("/snapshot", {"codes": ["US:NOPE"]})
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
