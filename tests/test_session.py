"""The upstream session against the simulator: reconnects, the 1 request/s rule, refusals."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from itertools import islice, pairwise
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import structlog
from conftest import make_config, rows, run_recorder
from simulated import SimulatorThread
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError

from recorder.config import SubscribeConfig, UpstreamConfig
from recorder.daemon import Recorder
from recorder.exceptions import ApiError, DecodeError
from recorder.protocol import Record, Stream, Trade
from recorder.session import Session, SessionEnded, Target, backoff, retryable
from recorder.sim import Faults

SimFactory = Callable[..., SimulatorThread]


def test_backoff_is_capped_jittered_and_floored_at_half_the_cap() -> None:
    delays = list(islice(backoff(1.0, 8.0, random.Random(1)), 200))
    caps = [min(8.0, 2.0**n) for n in range(200)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed ladder
    assert max(delays[10:]) > 7.5  # reaches the cap...
    assert min(delays[10:]) >= 4.0  # ...and a long outage never hammers the service


def test_the_default_schedule_is_back_within_five_seconds_of_any_outage() -> None:
    up = UpstreamConfig()
    delays = list(islice(backoff(up.backoff_initial, up.backoff_max, random.Random(2)), 1000))
    assert max(delays) <= 5.0
    # handshakes a minute during a long outage: at most 24, at least 12
    assert 12 <= 60 / (sum(delays[10:]) / len(delays[10:])) <= 24


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
        config, until=lambda r: r.status().reconnects >= 3 and r.status().subscribed, timeout=30
    )
    assert recorder.status().reconnects >= 3
    assert sim.call(lambda: sim.sim.connections_opened) >= 3
    assert sim.call(lambda: sim.sim.refusals) == []  # never broke the 1 request/s rule
    assert _spacing_ok(sim)
    # every connection subscribed all three streams again
    kinds = sim.call(lambda: [(c, k) for c, _, k in sim.sim.commands])
    # (the last connection may have been stopped while it was subscribing)
    conns = sorted({c for c, _ in kinds})
    assert len(conns) >= 4
    for conn in conns[:-1]:
        assert {"T", "D", "S"} <= {k for c, k in kinds if c == conn}, conn
    db = tmp_path / "ticks.sqlite"
    (live,) = rows(db, "SELECT count(*) FROM trades WHERE source = 'live'")[0]
    assert live == recorder.status().frames[Stream.TRADES] > 0


def test_reconnects_when_the_server_stalls(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(trades_per_second=20)
    config = make_config(sim, tmp_path, ["US:AAPL"], upstream={"stale_after": 1.5})
    trades_at_reconnect: list[int] = []

    def stall_then_recover(recorder: Recorder, elapsed: float) -> None:
        if elapsed > 2 and recorder.status().reconnects == 0:
            sim.call(lambda: setattr(sim.sim.faults, "stall", True))
        elif recorder.status().reconnects >= 1 and not trades_at_reconnect:
            trades_at_reconnect.append(recorder.status().frames[Stream.TRADES])
            sim.call(lambda: setattr(sim.sim.faults, "stall", False))

    recorder = run_recorder(
        config,
        during=stall_then_recover,
        timeout=30,
        until=lambda r: (
            bool(trades_at_reconnect)
            and r.status().frames[Stream.TRADES] > trades_at_reconnect[0] + 10
        ),
    )
    assert recorder.status().reconnects >= 1
    assert recorder.status().last_disconnect_reason is not None
    assert recorder.status().frames[Stream.TRADES] > trades_at_reconnect[0] + 10


def test_heartbeats_keep_the_session_alive(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(heartbeat_timeout=3.0)
    config = make_config(sim, tmp_path, ["US:AAPL"], upstream={"heartbeat_interval": 1.0})

    def heartbeats() -> int:
        return sim.call(lambda: sum(1 for _, _, kind in sim.sim.commands if kind == "H"))

    # six heartbeats a second apart: twice the simulator's heartbeat timeout
    recorder = run_recorder(config, until=lambda r: heartbeats() >= 6, timeout=20)
    assert heartbeats() >= 6
    assert recorder.status().reconnects == 0
    assert recorder.status().heartbeat_rtt is not None
    assert sim.call(lambda: sim.sim.connections_opened) == 1
    assert _spacing_ok(sim)


def test_a_rejected_subscription_is_a_clear_error(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(max_products=1)
    config = make_config(sim, tmp_path, ["US:AAPL", "US:TSLA"])
    with structlog.testing.capture_logs() as logs:
        recorder = run_recorder(
            config, until=lambda r: r.status().rejected_requests >= 1, timeout=15
        )
    assert recorder.status().rejected_requests >= 1
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
    assert recorder.status().reconnects >= 1
    assert "wrong-key" not in repr(logs)


# --- the session against a fake connection: reply matching and retry decisions ----------


class FakeConnection:
    """The two things a Session uses of a websockets connection: ``send`` and iteration.
    The test plays the server: it reads ``sent`` and pushes frames into ``incoming``."""

    close_code: int | None = None
    close_reason: str | None = None

    def __init__(self) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, text: str) -> None:
        await self.sent.put(orjson.loads(text))

    def __aiter__(self) -> FakeConnection:
        return self

    async def __anext__(self) -> bytes:
        frame = await self.incoming.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


class Events:
    """A Handler that writes down what the session told it."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.subscribed: list[Stream] = []
        self.rejected: list[tuple[str, str]] = []
        self.heartbeats: list[float] = []
        self.got_record = asyncio.Event()

    def on_record(self, record: Record) -> None:
        self.records.append(record)
        self.got_record.set()

    def on_decode_error(self, error: DecodeError) -> None:
        raise AssertionError(error)

    def on_unknown(self) -> None:
        raise AssertionError("unknown frame")

    def on_connected(self) -> None:
        pass

    def on_subscribed(self, stream: Stream, codes: list[str], kt: int | None) -> None:
        self.subscribed.append(stream)

    def on_rejected(self, what: str, msg: str) -> None:
        self.rejected.append((what, msg))

    def on_heartbeat(self, rtt: float) -> None:
        self.heartbeats.append(rtt)

    def on_disconnected(self, reason: str) -> None:
        pass


def _session(events: Events, **upstream: Any) -> tuple[Session, FakeConnection]:
    fake = FakeConnection()
    up = UpstreamConfig(**{"request_interval": 0.0, "heartbeat_timeout": 2.0, **upstream})
    sub = SubscribeConfig(trades=("US:AAPL",), depth=("US:AAPL",))
    return Session(cast(ClientConnection, fake), up, Target(sub), events), fake


def test_replies_are_matched_by_reqid_and_a_heartbeat_reply_without_one_by_type() -> None:
    async def main() -> Events:
        events = Events()
        session, fake = _session(events, heartbeat_interval=0.01)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(session.run())
            first, second = await fake.sent.get(), await fake.sent.get()
            assert (first["type"], second["type"]) == ("T", "H")  # H goes while T waits
            # answer out of order: the H reply carries no reqid, the T reply its own
            await fake.incoming.put(orjson.dumps({"type": "H", "msg": "OK"}))
            await fake.incoming.put(
                orjson.dumps({"type": "T", "msg": "OK", "reqid": first["reqid"]})
            )
            third = await fake.sent.get()
            assert third["type"] == "D" and third["reqid"] not in (first["reqid"], None)
            await fake.incoming.put(
                orjson.dumps({"type": "D", "msg": "OK", "reqid": third["reqid"]})
            )
            await fake.incoming.put(b'{"tp":"T","c":"US:AAPL","p":"1.5","v":"2","ts":1,"d":1}')
            await events.got_record.wait()  # frames are read in order: D's reply came first
            task.cancel()
        return events

    events = asyncio.run(main())
    assert events.subscribed == [Stream.TRADES, Stream.DEPTH]
    assert len(events.heartbeats) == 1 and events.rejected == []
    assert [(t.code, t.price) for t in events.records if isinstance(t, Trade)] == [("US:AAPL", 1.5)]


def test_an_unanswered_command_ends_the_session() -> None:
    async def main() -> None:
        session, fake = _session(Events(), heartbeat_timeout=0.2)
        with pytest.raises(ExceptionGroup) as info:
            await session.run()
        (ended,) = info.value.exceptions
        assert isinstance(ended, SessionEnded) and "no reply to T" in str(ended)
        assert (await fake.sent.get())["type"] == "T"

    asyncio.run(main())


def test_a_refused_subscription_is_reported_and_not_retried_unless_too_frequent() -> None:
    async def main() -> Events:
        events = Events()
        session, fake = _session(events)
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(session.run())
                sent = await fake.sent.get()
                reply = {"type": "T", "reqid": sent["reqid"], "msg": "request too frequent"}
                await fake.incoming.put(orjson.dumps(reply))
                sent = await fake.sent.get()  # retried: the refusal was about timing
                reply = {"type": "T", "reqid": sent["reqid"], "msg": "invalid code: US:AAPL"}
                await fake.incoming.put(orjson.dumps(reply))
        assert any(isinstance(e, ApiError) for e in _leaves(info.value))
        assert fake.sent.empty()  # not retried after a real refusal
        return events

    events = asyncio.run(main())
    assert [msg for _, msg in events.rejected] == ["request too frequent", "invalid code: US:AAPL"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionResetError("reset"), True),
        (OSError("unreachable"), True),
        (TimeoutError(), True),
        (ConnectionClosedError(None, None), True),
        (SessionEnded("no frame for 61 s"), True),
        (ApiError("subscribe", "service temporarily unavailable"), True),
        (ValueError("a bug of ours"), False),
        (KeyError("a bug of ours"), False),
        (AssertionError(), False),
    ],
)
def test_which_errors_are_worth_reconnecting_after(error: BaseException, retry: bool) -> None:
    assert retryable(error) is retry
