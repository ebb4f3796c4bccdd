"""The REST client: the retry classifier, the budget and its scheduler by urgency, the
response bound, bodies that arrive slowly or large, redirects, non-OK answers."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import KEY, start_recorder, wait_for, write_config
from hostile import Answer, Hostile
from hypothesis import given
from hypothesis import strategies as st
from simulated import SimulatorThread
from structlog.testing import capture_logs

from recorder.config import Secret, UpstreamConfig
from recorder.exceptions import (
    ApiError,
    DecodeError,
    HttpStatusError,
    TransportError,
    UpstreamError,
)
from recorder.rest import Purpose, RateLimiter, RestClient, RestScheduler
from recorder.retry import Retry, classify_reply, classify_rest, refuses_key


def _client(url: str, **changes: object) -> RestClient:
    up = dataclasses.replace(UpstreamConfig(http_url=url, backoff_initial=0.05), **changes)  # type: ignore[arg-type]
    return RestClient(up, Secret(KEY), attempts=2)


# --- the classifiers (pure) ------------------------------------------------------------------


def test_transport_errors_5xx_and_429_are_retried_other_statuses_are_final() -> None:
    assert classify_rest(TransportError("/trade: ServerDisconnectedError")) is Retry.BACKOFF
    for status in (429, 500, 502, 503, 504):
        assert classify_rest(HttpStatusError("/trade", status)) is Retry.BACKOFF, status
    for status in (301, 302, 307, 308, 400, 401, 403, 404):
        assert classify_rest(HttpStatusError("/trade", status)) is Retry.FINAL, status
    # an answer of the wrong shape or too large: the same request gets the same answer
    assert classify_rest(UpstreamError("/trade: response larger than 8 bytes")) is Retry.FINAL
    assert classify_rest(DecodeError("bad trade", b"{}")) is Retry.FINAL


def test_a_refused_key_is_told_from_the_other_final_answers() -> None:
    for refusal in (
        HttpStatusError("/trade", 401),
        HttpStatusError("/trade", 403),
        ApiError("/trade", "invalid key"),
        ApiError("/trade", "Key expired"),
    ):
        assert refuses_key(refusal) and classify_rest(refusal) is Retry.FINAL, refusal
    for other in (
        HttpStatusError("/trade", 404),
        HttpStatusError("/trade", 500),
        ApiError("/trade", "invalid code: XX:NOPE"),
        TransportError("/trade: ServerDisconnectedError"),
    ):
        assert not refuses_key(other), other


def test_the_rate_limit_waits_for_the_window_any_other_msg_is_final() -> None:
    for msg in (
        "request limit exceeded: 10 per minute",
        "request too frequent: at most 1 request per second",
        "Too Many Requests",
    ):
        assert classify_rest(ApiError("/trade", msg)) is Retry.WINDOW, msg
        assert classify_reply(msg) is Retry.WINDOW, msg
    for msg in (
        "invalid code: XX:NOPE",
        "product limit exceeded: plan allows 10",
        "invalid key",
        "None",
    ):
        assert classify_rest(ApiError("/trade", msg)) is Retry.FINAL, msg
        assert classify_reply(msg) is Retry.FINAL, msg


@given(st.text(st.characters(blacklist_characters="fF"), max_size=80))
def test_a_msg_without_the_rate_limits_words_is_final(msg: str) -> None:
    # without an f, neither "frequent", "rate limit" nor "request limit" can be in it... nor
    # "too many requests"; the classifier must call every such refusal final
    assert classify_rest(ApiError("/snapshot", msg)) is Retry.FINAL
    assert classify_reply(msg) is Retry.FINAL


# --- answers over the network ------------------------------------------------------------------


def test_a_response_over_the_bound_is_refused(sim: SimulatorThread) -> None:
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.market.codes["US:AAPL"].trades)) >= 10)

    async def go() -> None:
        async with _client(sim.http_url, max_http_bytes=200) as rest:
            assert await rest.post("/instrument-info", {"codes": ["CF:BTCUSDT"]}, Purpose.SWEEP)
            with pytest.raises(UpstreamError, match=r"/trade: .*(too large|larger than 200)"):
                await rest.post(
                    "/trade", {"codes": ["US:AAPL", "HK:700"], "count": 50}, Purpose.TRADES
                )
            assert rest.retries == 0  # the same request would get the same answer

    asyncio.run(go())


def test_a_final_msg_spends_one_request_not_five(sim: SimulatorThread) -> None:
    async def go() -> None:
        up = UpstreamConfig(http_url=sim.http_url, backoff_initial=0.05)
        async with RestClient(up, Secret(KEY), attempts=5) as rest:
            with pytest.raises(ApiError, match="invalid code: XX:NOPE"):
                await rest.post("/snapshot", {"codes": ["XX:NOPE"]}, Purpose.BACKFILL)
            assert (rest.requests, rest.retries) == (1, 0)
        async with RestClient(up, Secret("wrong"), attempts=5) as bad:
            with pytest.raises(ApiError, match="invalid key"):
                await bad.post("/snapshot", {"codes": ["US:AAPL"]}, Purpose.BACKFILL)
            assert bad.requests == 1

    asyncio.run(go())
    assert [p for _, p in sim.call(lambda: list(sim.sim.http_requests))] == ["/snapshot"]


def test_5xx_is_retried_and_the_rate_limit_msg_waits_for_the_window() -> None:
    answers = iter(
        [
            Answer(b"busy", 503),
            Answer.json({"msg": "request limit exceeded: 10 per minute"}),
            Answer.ok([]),
        ]
    )
    with Hostile() as up:
        up.http["/trade"] = lambda request: next(answers)

        async def go() -> list[MutableMapping[str, Any]]:
            # 600 a minute: the window's share after a rate-limit answer is 0.1 s
            async with _client(up.http_url, http_requests_per_minute=600) as rest:
                rest.attempts = 5
                with capture_logs() as logs:
                    assert await rest.post("/trade", {"codes": ["US:AAPL"]}, Purpose.TRADES) == []
                assert (rest.requests, rest.retries) == (3, 2)
                return logs

        logs = asyncio.run(go())
        assert len(up.requests) == 3
    retries = [e["retry"] for e in logs if e["event"] == "rest_retry"]
    assert retries == ["backoff", "window"]


def test_a_body_that_drips_in_chunks_is_read_whole() -> None:
    trades = [
        {"c": "US:AAPL", "p": "1.5", "v": "10", "ts": 1_741_960_243 + i, "d": 1} for i in range(50)
    ]
    body = orjson.dumps({"msg": "OK", "data": trades})
    with Hostile() as up:
        pieces = [body[i : i + 700] for i in range(0, len(body), 700)]
        up.http["/trade"] = Answer(chunks=pieces, drip=0.05)  # 50 ms apart
        up.http["/snapshot"] = Answer.ok([{"c": "US:AAPL", "lp": "1." + "0" * 690_000}])

        async def go() -> None:
            async with _client(up.http_url) as rest:
                got = await rest.post("/trade", {"codes": ["US:AAPL"]}, Purpose.TRADES)
                assert got == trades
                big = await rest.post("/snapshot", {"codes": ["US:AAPL"]}, Purpose.BACKFILL)
                assert len(big[0]["lp"]) == 690_002  # a 690 KB body, whole
                assert rest.retries == 0

        asyncio.run(go())
    assert len(pieces) > 2


def test_a_redirect_is_not_followed_and_the_key_stays_home() -> None:
    with Hostile() as up, Hostile() as elsewhere:
        up.http["/trade"] = Answer.redirect(elsewhere.http_url + "/trade", 307)
        up.http["/snapshot"] = Answer.redirect(elsewhere.http_url + "/collect", 302)

        async def go() -> None:
            async with _client(up.http_url) as rest:
                with pytest.raises(HttpStatusError, match=r"HTTP 307 .*not followed"):
                    await rest.post("/trade", {"codes": ["US:AAPL"]}, Purpose.TRADES)
                with pytest.raises(HttpStatusError, match="HTTP 302"):
                    await rest.post("/snapshot", {"codes": ["US:AAPL"]}, Purpose.BACKFILL)
                assert rest.requests == 2  # final: not retried

        asyncio.run(go())
        assert elsewhere.requests == []  # the other origin never heard from us
        assert [r.headers.get("key") for r in up.requests] == [KEY, KEY]


# --- the budget ------------------------------------------------------------------------------


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


def test_budget_times_from_a_clock_that_stepped_back_are_discarded(tmp_path: Path) -> None:
    state = tmp_path / "rest-budget.json"
    now = time.time()
    # a day ahead (the clock stepped back a day), and a few seconds ahead (a small step)
    state.write_bytes(orjson.dumps([now + 86400, now + 86000, now + 5]))
    with capture_logs() as logs:
        limiter = RateLimiter(10, state=state)
    assert limiter.remaining() == 9  # the small step counts as made now; the rest is gone
    assert limiter.free_in() == 0
    (event,) = [e for e in logs if e["event"] == "rest_budget_future_discarded"]
    assert event["times"] == 2


async def _grants(scheduler: RestScheduler, purposes: list[Purpose]) -> list[Purpose]:
    """The order in which ``purposes``, asking one after another, get their slots."""
    order: list[Purpose] = []

    async def ask(purpose: Purpose) -> None:
        await scheduler.slot(purpose)
        order.append(purpose)

    async with asyncio.TaskGroup() as tg:
        for purpose in purposes:
            tg.create_task(ask(purpose))
            await asyncio.sleep(0)  # they arrive in this order
    return order


def test_reference_data_never_goes_ahead_of_a_backfill() -> None:
    async def go() -> list[Purpose]:
        scheduler = RestScheduler(RateLimiter(2, per=0.3, margin=0.0), reserve=0)
        for _ in range(2):  # the budget is spent: everyone waits for the window
            await scheduler.slot(Purpose.TRADES)
        asking = [Purpose.CALENDAR, Purpose.INSTRUMENTS, Purpose.BACKFILL, Purpose.SWEEP]
        return await _grants(scheduler, [*asking, Purpose.TRADES])

    order = asyncio.run(go())
    assert order == [
        Purpose.TRADES,
        Purpose.SWEEP,
        Purpose.BACKFILL,
        Purpose.CALENDAR,
        Purpose.INSTRUMENTS,
    ]


async def _yield() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_reference_data_waits_while_a_backfill_is_pending_and_for_spare_budget() -> None:
    async def go() -> tuple[int, int, int]:
        scheduler = RestScheduler(RateLimiter(4, per=0.4, margin=0.0), reserve=1)
        pending = True
        scheduler.backlog = lambda: pending
        calendar = asyncio.create_task(scheduler.slot(Purpose.CALENDAR))
        await _yield()
        held = scheduler.sent[Purpose.CALENDAR]  # the budget is free, a backfill is pending
        pending = False
        await scheduler.slot(Purpose.TRADES)
        await scheduler.slot(Purpose.TRADES)
        await calendar  # 2 of 4 spent: it goes, leaving the reserve
        instruments = asyncio.create_task(scheduler.slot(Purpose.INSTRUMENTS))
        await _yield()
        deferred = scheduler.sent[Purpose.INSTRUMENTS]  # 1 left = the reserve: it waits
        await instruments  # until the window frees
        return held, deferred, scheduler.sent[Purpose.INSTRUMENTS]

    assert asyncio.run(go()) == (0, 0, 1)


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
        for n, wanted in ((1, 2), (2, 5)):
            procs.append(start(tmp_path / f"run{n}.log"))
            assert wait_for(lambda w=wanted: requests() >= w, timeout=30)  # type: ignore[misc]
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
        log = tmp_path / "run3.log"
        procs.append(start(log))
        assert wait_for(
            lambda: b"rest_budget_wait" in log.read_bytes() or b"rest_deferred" in log.read_bytes(),
            timeout=30,
        )
        assert requests() <= 10
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(20) == 0
    finally:
        for proc in procs:
            proc.kill()
    assert sim.call(lambda: list(sim.sim.http_over_limit)) == []
