"""The simulator over real sockets: message shapes, plan limits, faults, consistency."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import KEY, wait_for
from hypothesis import given
from hypothesis import strategies as st
from simulated import SimulatorThread
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from recorder import protocol
from recorder.exceptions import DecodeError
from recorder.markets import bar_open, is_open
from recorder.protocol import NS, market_of
from recorder.sim import Faults, Market
from recorder.sim.market import us_session

SimFactory = Callable[..., SimulatorThread]


def _ws(sim: SimulatorThread, key: str = KEY) -> ClientConnection:
    return connect(sim.ws_url, additional_headers={"key": key}, open_timeout=5)


def _post(sim: SimulatorThread, path: str, body: dict[str, Any], key: str = KEY) -> Any:
    request = urllib.request.Request(
        f"{sim.http_url}{path}?key={key}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _reply(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next reply of ``kind``, skipping pushes."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if frame.get("type") == kind:
            return frame
    raise AssertionError(f"no {kind} reply")


def _pushes(ws: ClientConnection, n: int, tp: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        frame = json.loads(ws.recv(timeout=5))
        if "tp" in frame and (tp is None or frame["tp"] == tp):
            out.append(frame)
    return out


def test_reply_shape_and_push_shapes(sim: SimulatorThread) -> None:
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": ["US:AAPL,TSLA"], "reqid": 7}))
        reply = _reply(ws, "T")
        assert reply["msg"] == "OK" and reply["reqid"] == 7 and isinstance(reply["time"], int)
        for frame in _pushes(ws, 5, "T"):
            assert set(frame) == {"tp", "c", "p", "v", "ts", "d"}
            assert isinstance(frame["p"], str) and isinstance(frame["ts"], int)
            assert isinstance(protocol.decode(json.dumps(frame), 0), protocol.Trade)


def test_invalid_key_is_refused(sim: SimulatorThread) -> None:
    with pytest.raises(InvalidStatus) as info:
        _ws(sim, key="wrong")
    assert info.value.response.status_code == 401
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]}, key="wrong") == (
        200,
        {"msg": "invalid key"},
    )


def test_one_websocket_per_key(sim: SimulatorThread) -> None:
    with _ws(sim) as first:
        with _ws(sim) as second, pytest.raises(ConnectionClosed) as info:
            second.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert "1 WebSocket per key" in info.value.rcvd.reason
        first.send(json.dumps({"type": "H"}))
        assert _reply(first, "H")["msg"] == "OK"


def test_one_request_per_second(sim: SimulatorThread) -> None:
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "H"}))
        ws.send(json.dumps({"type": "S", "codes": ["US:AAPL"]}))
        assert _reply(ws, "H")["msg"] == "OK"
        assert "at most 1 request per second" in _reply(ws, "S")["msg"]
        assert sim.call(lambda: not any(c.subs.codes["S"] for c in sim.sim.conns.values()))


def test_product_limit(make_sim: SimFactory) -> None:
    sim = make_sim(codes=tuple(f"US:S{chr(65 + i)}" for i in range(11)))
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": [f"US:S{chr(65 + i)}" for i in range(11)]}))
        assert _reply(ws, "T")["msg"] == "product limit exceeded: plan allows 10"


def test_unknown_markets_and_malformed_codes_are_refused(sim: SimulatorThread) -> None:
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": ["XX:NOPE"]}))
        assert _reply(ws, "T")["msg"] == "invalid code: XX:NOPE"
        time.sleep(1.05)
        ws.send(json.dumps({"type": "T", "codes": ["US:no spaces"]}))
        assert _reply(ws, "T")["msg"] == "invalid code: US:no spaces"


def test_http_limit_per_minute(sim: SimulatorThread) -> None:
    answers = [_post(sim, "/snapshot", {"codes": ["US:AAPL"]})[1]["msg"] for _ in range(11)]
    assert answers[:10] == ["OK"] * 10
    assert answers[10] == "request limit exceeded: 10 per minute"


def test_heartbeat_timeout_closes_the_socket(make_sim: SimFactory) -> None:
    sim = make_sim(heartbeat_timeout=0.5)
    with _ws(sim) as ws, pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.reason == "heartbeat timeout"


def test_every_http_endpoint(sim: SimulatorThread) -> None:
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.market.codes["US:AAPL"].trades) >= 3))
    endpoints: list[tuple[str, dict[str, Any], str]] = [
        ("/snapshot", {"codes": ["US:AAPL"]}, "lp"),
        ("/depth", {"codes": ["US:AAPL"]}, "b"),
        ("/trade", {"codes": ["US:AAPL"], "count": 3}, "p"),
        ("/instrument-info", {"codes": ["US:AAPL", "CF:BTCUSDT"]}, "e"),
        ("/kline", {"kline_reqs": [{"c": "US:AAPL", "co": 2, "a": 0, "kt": 1}]}, "k"),
        (
            "/history",
            {"kline_reqs": [{"c": "US:AAPL", "co": 2, "a": 0, "kt": 1, "e": int(time.time())}]},
            "k",
        ),
    ]
    for path, body, first_key in endpoints:
        status, answer = _post(sim, path, body)
        assert status == 200 and answer["msg"] == "OK", path
        assert first_key in answer["data"][0] and "tp" not in answer["data"][0], path
    status, answer = _post(sim, "/market-calendar", {"market": ["HK"]})
    assert answer["data"]["HK"][0].endswith(",F")
    status, answer = _post(sim, "/product-list", {"market": ["US"]})
    assert {"code": "US:AAPL", "name": "US:AAPL"} in answer["data"]["US"]
    status, answer = _post(sim, "/trade", {"codes": ["US:AAPL"], "count": 51})
    assert answer["msg"] == "count must be 1 to 50"


def test_market_is_consistent_across_streams(make_sim: SimFactory) -> None:
    sim = make_sim(trades_per_second=30, seed=5)
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.truth)) > 3000, timeout=20)
    truth: list[dict[str, Any]] = sim.call(lambda: list(sim.sim.truth))
    for code in ("US:AAPL", "CF:BTCUSDT"):
        trades = [f for f in truth if f["tp"] == "T" and f["c"] == code]
        volume = Decimal(0)
        turnover = Decimal(0)
        index = 0
        base: tuple[Decimal, Decimal] | None = None  # the day's volume before the start
        for frame in (f for f in truth if f["c"] == code):
            if frame["tp"] == "T":
                volume += Decimal(frame["v"])
                turnover += Decimal(frame["p"]) * Decimal(frame["v"])
                index += 1
            elif frame["tp"] == "S":
                if base is None:
                    base = (Decimal(frame["v"]) - volume, Decimal(frame["t"]) - turnover)
                # a snapshot's cumulative v and t are the day before the start plus exactly
                # the trades before it
                assert Decimal(frame["v"]) == base[0] + volume
                assert Decimal(frame["t"]) == base[1] + turnover
            elif frame["tp"] == "D":
                assert Decimal(frame["b"][0]["p"]) <= Decimal(
                    trades[index - 1]["p"] if index else frame["a"][0]["p"]
                )
                assert Decimal(frame["b"][0]["p"]) < Decimal(frame["a"][0]["p"])
        # K-lines aggregate the trades: the last push of each 1-minute bar
        bars: dict[int, dict[str, Any]] = {}
        for frame in truth:
            if frame["tp"] == "K" and frame["c"] == code and frame["kt"] == 1:
                bars[frame["ts"]] = frame
        for opened, bar in bars.items():
            in_bar = [t for t in trades if bar_open(t["ts"], 1) == opened]
            assert Decimal(bar["v"]) == sum(Decimal(t["v"]) for t in in_bar)
            assert bar["o"] == in_bar[0]["p"] and bar["cl"] == in_bar[-1]["p"]
            assert Decimal(bar["h"]) == max(Decimal(t["p"]) for t in in_bar)
        # several identical trades share a second
        same = Counter((t["ts"], t["p"], t["v"], t["d"]) for t in trades)
        assert max(same.values()) >= 2
    # /trade serves the latest 50 trades produced before the request
    _, answer = _post(sim, "/trade", {"codes": ["US:AAPL"], "count": 50})
    served = answer["data"]
    after = sim.call(lambda: list(sim.sim.truth))  # the market may have moved on meanwhile
    produced = [
        {k: v for k, v in f.items() if k != "tp"}
        for f in after
        if f["tp"] == "T" and f["c"] == "US:AAPL"
    ]
    ends = [i for i in range(50, len(produced) + 1) if produced[i - 50 : i] == served]
    assert ends and ends[-1] >= sum(1 for f in truth if f["tp"] == "T" and f["c"] == "US:AAPL")


def test_fault_close_every(make_sim: SimFactory) -> None:
    sim = make_sim(Faults(close_every=0.5))
    with _ws(sim) as ws, pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.reason == "injected disconnect"


def test_fault_stall_keeps_the_socket_silent(sim: SimulatorThread) -> None:
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": ["US:AAPL"]}))
        _reply(ws, "T")
        sim.call(lambda: setattr(sim.sim.faults, "stall", True))
        time_stalled = time.monotonic()
        with pytest.raises(TimeoutError):
            while True:
                ws.recv(timeout=1.0)  # drain frames in flight, then silence
        assert time.monotonic() - time_stalled >= 1.0
        sim.call(lambda: setattr(sim.sim.faults, "stall", False))
        assert _pushes(ws, 1, "T")


def test_fault_drop_rate_drops_silently(sim: SimulatorThread) -> None:
    sim.call(lambda: setattr(sim.sim.faults, "drop_rate", 0.5))
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": ["US:AAPL", "US:TSLA"]}))
        _reply(ws, "T")
        received = _pushes(ws, 20, "T")
    dropped = sim.call(lambda: [f for _, f in sim.sim.dropped])
    sent = sim.call(lambda: sim.sim.sent_frames("T"))
    sent_ids = {id(f) for f in sent}
    assert dropped and not any(id(d) in sent_ids for d in dropped)
    assert received == sent[:20]


def test_fault_malformed_frames(sim: SimulatorThread) -> None:
    sim.call(lambda: setattr(sim.sim.faults, "malformed_rate", 0.5))
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "T", "codes": ["US:AAPL", "US:TSLA"]}))
        bad = 0
        for _ in range(40):
            try:
                protocol.decode(ws.recv(timeout=5), 0)
            except DecodeError:
                bad += 1
    assert bad > 0


def test_fault_error_replies(sim: SimulatorThread) -> None:
    sim.call(lambda: setattr(sim.sim.faults, "error_replies", True))
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "H"}))
        assert _reply(ws, "H")["msg"] == "service temporarily unavailable"


@pytest.mark.parametrize("status", [429, 500])
def test_fault_http_status(sim: SimulatorThread, status: int) -> None:
    sim.call(lambda: setattr(sim.sim.faults, "http_status", status))
    sim.call(lambda: setattr(sim.sim.faults, "http_fail_count", 2))
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[0] == status
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[0] == status
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[1]["msg"] == "OK"


def test_fault_http_delay(sim: SimulatorThread) -> None:
    sim.call(lambda: setattr(sim.sim.faults, "http_delay", 0.5))
    start = time.monotonic()
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[1]["msg"] == "OK"
    assert time.monotonic() - start >= 0.5


def test_export_truth(sim: SimulatorThread, tmp_path: Path) -> None:
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.truth)) > 10)
    path = tmp_path / "truth.ndjson"
    sim.call(lambda: sim.sim.export_truth(str(path)))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) >= 10 and all("truth" in line or "sent" in line for line in lines)


def test_any_past_range_is_served_consistently_across_intervals(make_sim: SimFactory) -> None:
    sim = make_sim(trades_per_second=10, seed=8)
    assert wait_for(lambda: sim.call(lambda: len(sim.sim.truth)) > 200)
    market = sim.sim.market
    long_ago = int(time.time()) - 40 * 86400

    def bars(kt: int, count: int, end: int | None) -> list[dict[str, Any]]:
        return sim.call(lambda: market.bars("HK:700", kt, count, end))

    ones, fives = bars(1, 60, long_ago), bars(5, 12, long_ago)
    assert len(ones) == 60 and len(fives) == 12 and fives[-1]["ts"] <= long_ago
    assert bars(1, 60, long_ago) == ones  # deterministic
    for five in fives[-10:]:
        inside = [b for b in ones if five["ts"] <= b["ts"] < five["ts"] + 300]
        if len(inside) == 5:  # a 5-minute bar aggregates its five 1-minute bars
            assert (five["o"], five["cl"]) == (inside[0]["o"], inside[-1]["cl"])
            assert Decimal(five["v"]) == sum(Decimal(b["v"]) for b in inside)
            assert Decimal(five["h"]) == max(Decimal(b["h"]) for b in inside)
    (day,) = bars(1001, 1, None)  # today's bar: the past minutes and the live ones
    (snapshot,) = _post(sim, "/snapshot", {"codes": ["HK:700"]})[1]["data"]
    assert day["o"] == snapshot["o"] and Decimal(day["h"]) <= Decimal(snapshot["h"])
    assert Decimal(day["v"]) <= Decimal(snapshot["v"])  # the snapshot is newer or the same
    weeks = bars(1007, 3, long_ago)
    days = bars(1001, 21, long_ago)
    week = weeks[-2]  # a whole week in the past
    inside = [d for d in days if week["ts"] <= d["ts"] < week["ts"] + 7 * 86400]
    assert len(inside) == 7 and Decimal(week["v"]) == sum(Decimal(d["v"]) for d in inside)


# --- market hours ----------------------------------------------------------------------

_WED = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)  # a Wednesday


def _codes_pushed(at: dt.datetime, market_hours: bool = True) -> set[str]:
    now = at.timestamp()
    market = Market(
        ("HK:700", "SH:600519", "US:AAPL", "CF:BTCUSDT"),
        trades_per_second=100,
        clock=lambda: now,
        market_hours=market_hours,
    )
    return {frame["c"] for frame in market.step(now)}


@pytest.mark.parametrize(
    "utc, pushed",
    [
        ((2, 0), {"HK:700", "SH:600519", "US:AAPL", "CF:BTCUSDT"}),  # 10:00 in Asia, 21:00 ET
        ((4, 30), {"US:AAPL", "CF:BTCUSDT"}),  # 12:30 in Asia: the lunch breaks
        ((19, 0), {"US:AAPL", "CF:BTCUSDT"}),  # 03:00 in Asia, 14:00 ET
        ((8, 55), {"CF:BTCUSDT"}),  # 16:55 in Hong Kong, 03:55 ET: the US pause
    ],
)
def test_each_market_trades_in_its_hours_only(utc: tuple[int, int], pushed: set[str]) -> None:
    at = _WED.replace(hour=utc[0], minute=utc[1])
    assert _codes_pushed(at) == pushed
    # round the clock, for tests: every code at any hour
    assert _codes_pushed(at, market_hours=False) == {"HK:700", "SH:600519", "US:AAPL", "CF:BTCUSDT"}
    saturday = at + dt.timedelta(days=3)
    assert _codes_pushed(saturday) <= {"CF:BTCUSDT", "US:AAPL"}  # US: Friday's night session


@given(st.integers(min_value=1_700_000_000, max_value=1_900_000_000))
def test_the_simulator_and_the_gap_detector_agree_on_the_hours(ts: int) -> None:
    pushed = _codes_pushed(dt.datetime.fromtimestamp(ts, dt.UTC))
    for code in ("HK:700", "SH:600519", "US:AAPL", "CF:BTCUSDT"):
        assert (code in pushed) == (is_open(market_of(code), ts * NS) is not False), code


@pytest.mark.parametrize(
    "et, session", [((5, 0), 2), ((10, 0), 3), ((17, 0), 4), ((21, 0), 1), ((3, 55), 0)]
)
def test_us_snapshots_carry_the_session_of_the_moment(et: tuple[int, int], session: int) -> None:
    at = dt.datetime(2026, 11, 25, *et, tzinfo=ZoneInfo("America/New_York"))
    assert us_session(int(at.timestamp())) == session


# --- fault switches at run time ----------------------------------------------------------


def _control(sim: SimulatorThread, route: str, key: str = "ctl-key") -> tuple[int, Any]:
    method = "GET" if route == "" else "POST"
    request = urllib.request.Request(
        f"{sim.http_url}/control{route}{'&' if '?' in route else '?'}key={key}", method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fault_switches_rehearse_an_outage_without_a_restart(make_sim: SimFactory) -> None:
    sim = make_sim(control_key="ctl-key")
    assert _control(sim, "", key=KEY) == (
        403,
        {"msg": "the control routes want the control key"},
    )  # a data key cannot switch faults
    status, state = _control(sim, "")
    assert status == 200 and not any(state["switches"].values())

    with _ws(sim) as ws:
        assert wait_for(lambda: _control(sim, "")[1]["connections"] == 1)
        assert _control(sim, "/drop")[0] == 200
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)

    # an outage: handshakes refused for a while, then accepted again by themselves
    status, state = _control(sim, "/outage?seconds=1")
    assert status == 200 and state["switches"]["refuse_connections"] is True
    with pytest.raises(InvalidStatus) as info:
        _ws(sim)
    assert info.value.response.status_code == 503

    def accepted() -> bool:
        try:
            with _ws(sim):
                pass
        except InvalidStatus:
            return False
        return True

    assert wait_for(accepted, timeout=10)

    # error replies until cleared; HTTP answers with a status
    assert _control(sim, "/errors")[1]["switches"]["error_replies"] is True
    with _ws(sim) as ws:
        ws.send(json.dumps({"type": "S", "codes": ["US:AAPL"]}))
        assert _reply(ws, "S")["msg"] == "service temporarily unavailable"
    assert _control(sim, "/http?status=502")[1]["switches"]["http_status"] == 502
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[0] == 502
    assert _control(sim, "/stall")[1]["switches"]["stall"] is True
    status, state = _control(sim, "/clear")
    assert status == 200 and not any(state["switches"].values())
    assert _post(sim, "/snapshot", {"codes": ["US:AAPL"]})[1]["msg"] == "OK"
    assert _control(sim, "/stall?seconds=-1") == (
        400,
        {"msg": "seconds must be more than 0 and at most 86400"},
    )


def test_the_past_has_bars_in_market_hours_only() -> None:
    now = _WED.replace(hour=10).timestamp()  # Hong Kong closed since 08:00 UTC
    market = Market(("HK:700", "CF:BTCUSDT"), clock=lambda: now)

    def ts_of(bars: list[dict[str, Any]]) -> list[int]:
        return [b["ts"] for b in bars]

    week_ago = int(now) - 7 * 86400
    ones = market.bars("HK:700", 1, 600, week_ago)
    assert len(ones) == 600 and all(is_open("HK", t * NS) for t in ts_of(ones))
    fives = market.bars("HK:700", 5, 60, week_ago)
    for five in fives[-20:]:  # a 5-minute bar is still its 1-minute bars
        inside = [b for b in ones if five["ts"] <= b["ts"] < five["ts"] + 300]
        if inside and inside[0]["ts"] > ones[0]["ts"]:
            assert Decimal(five["v"]) == sum(Decimal(b["v"]) for b in inside)
    days = market.bars("HK:700", 1001, 10, None)
    weekdays = {dt.datetime.fromtimestamp(t, dt.UTC).weekday() for t in ts_of(days)}
    assert len(days) == 10 and weekdays <= {0, 1, 2, 3, 4}  # no bar for a closed day
    crypto = ts_of(market.bars("CF:BTCUSDT", 1, 120, week_ago))
    assert crypto == list(range(crypto[0], crypto[0] + 120 * 60, 60))  # 24 h, every minute
