"""Clients written the way the vendor's examples are (websocket-client with ``sleep(1)``
between commands, ``H`` sent with the first command, plain HTTP POSTs with the reference's
bodies), against the simulator with its default options: every answer is OK and every
push has the documented shape. Written from ``qos-protocol.md``, not copied."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import websocket
from conftest import KEY
from simulated import SimulatorThread

from recorder.sim import SimConfig

# the reference's own example codes, as list entries
REFERENCE_CODES = ["US:AAPL,TSLA", "HK:700,9988", "SH:600519", "SZ:000001,002594"]
CRYPTO = ["CF:BTCUSDT,ETHUSDT"]
PUSH_FIELDS = {
    "T": {"tp", "c", "p", "v", "ts", "d"},
    "D": {"tp", "c", "b", "a", "ts"},
    "K": {"tp", "c", "o", "cl", "h", "l", "v", "ts", "kt"},
}


def _vendor_style_session(url: str, key: str, commands: list[dict[str, Any]]) -> list[str]:
    """Connect with the key in the URL, send ``H`` with the first command, then the others
    one ``sleep(1)`` apart; the ``msg`` of every reply."""
    ws = websocket.create_connection(f"{url}?key={key}", timeout=10)
    try:
        ws.send(json.dumps({"type": "H"}))
        for i, command in enumerate(commands):
            if i:
                time.sleep(1)
            ws.send(json.dumps(command))
        answers: list[str] = []
        deadline = time.monotonic() + 10
        while len(answers) < len(commands) + 1 and time.monotonic() < deadline:
            frame = json.loads(ws.recv())
            if "type" in frame:
                answers.append(frame["msg"])
        return answers
    finally:
        ws.close()


def test_commands_one_second_apart_with_h_first_are_accepted_20_runs_of_20(
    make_sim: Callable[..., SimulatorThread],
) -> None:
    keys = tuple(f"vendor-{i}" for i in range(20))  # one socket per key: 20 runs at once
    sim = make_sim(keys=keys, strict=False)
    commands = [
        {"type": "S", "codes": REFERENCE_CODES},
        {"type": "T", "codes": REFERENCE_CODES},
        {"type": "D", "codes": ["US:AAPL"]},
    ]
    results: dict[str, list[str]] = {}

    def run(key: str) -> None:
        results[key] = _vendor_style_session(sim.ws_url, key, commands)

    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == sorted(keys)
    assert all(answers == ["OK"] * 4 for answers in results.values()), results
    assert sim.call(lambda: list(sim.sim.refusals)) == []


def test_any_well_formed_code_is_served_and_pushes_have_the_documented_shapes() -> None:
    with SimulatorThread(SimConfig(keys=(KEY,), trades_per_second=20, market_hours=False)) as sim:
        ws = websocket.create_connection(sim.ws_url, header=[f"key: {KEY}"], timeout=10)
        try:
            ws.send(json.dumps({"type": "T", "codes": ["HK:9988", "SZ:000001", "US:YMM"]}))
            time.sleep(1)
            ws.send(json.dumps({"type": "K", "codes": CRYPTO, "kt": 1}))
            time.sleep(1)
            ws.send(json.dumps({"type": "T", "codes": ["XX:NOPE"]}))  # not a market
            replies: list[dict[str, Any]] = []
            pushes: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while (len(replies) < 3 or len(pushes) < 30) and time.monotonic() < deadline:
                frame = json.loads(ws.recv())
                (replies if "type" in frame else pushes).append(frame)
        finally:
            ws.close()
    assert [r["msg"] for r in replies] == ["OK", "OK", "invalid code: XX:NOPE"]
    assert {p["c"] for p in pushes if p["tp"] == "T"} == {"HK:9988", "SZ:000001", "US:YMM"}
    assert {p["c"] for p in pushes if p["tp"] == "K"} <= {"CF:BTCUSDT", "CF:ETHUSDT"}
    for push in pushes:
        assert set(push) == PUSH_FIELDS[push["tp"]], push
        assert isinstance(push["ts"], int)
        assert all(isinstance(push[k], str) for k in ("p", "v", "o", "cl", "h", "l") if k in push)


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}{path}?key={KEY}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def test_plain_http_posts_with_the_references_bodies() -> None:
    with SimulatorThread(SimConfig(keys=(KEY,), trades_per_second=20, market_hours=False)) as sim:
        now = int(time.time())
        base = sim.http_url
        requests: list[tuple[str, dict[str, Any]]] = [
            ("/instrument-info", {"codes": ["US:AAPL", "HK:700", "SZ:000001", "CF:BTCUSDT"]}),
            ("/snapshot", {"codes": ["SH:600519", "US:YMM"]}),
            ("/depth", {"codes": ["HK:9988"]}),
            ("/trade", {"codes": ["US:AAPL,TSLA"], "count": 50}),
            ("/kline", {"kline_reqs": [{"c": "US:AAPL,TSLA", "co": 3, "a": 0, "kt": 1001}]}),
            ("/history", {"kline_reqs": [{"c": "HK:700", "co": 5, "a": 0, "kt": 1, "e": now}]}),
            ("/market-calendar", {"market": ["HK", "US"]}),
            ("/product-list", {"market": ["US", "CM"]}),
        ]
        answers = {path: _post(base, path, body) for path, body in requests}
    assert {path: a["msg"] for path, a in answers.items()} == dict.fromkeys(answers, "OK")
    info = {i["c"]: i for i in answers["/instrument-info"]["data"]}
    assert (info["US:AAPL"]["e"], info["US:AAPL"]["tc"], info["US:AAPL"]["ls"]) == (
        "NASDAQ",
        "USD",
        1,
    )
    assert (info["HK:700"]["e"], info["HK:700"]["tc"], info["HK:700"]["ls"]) == ("HKEX", "HKD", 100)
    assert (info["SZ:000001"]["e"], info["SZ:000001"]["tc"]) == ("SZSE", "CNY")
    for stock in ("US:AAPL", "HK:700", "SZ:000001"):
        assert all(isinstance(info[stock][k], int) for k in ("ls", "ts", "os"))
        assert all(isinstance(info[stock][k], str) for k in ("ep", "na", "dy", "nc", "ne"))
    assert set(info["CF:BTCUSDT"]) == {"c", "e", "tc"}
    assert {s["c"] for s in answers["/snapshot"]["data"]} == {"SH:600519", "US:YMM"}
    kline = answers["/kline"]["data"]
    assert {entry["c"] for entry in kline} == {"US:AAPL", "US:TSLA"}
    assert all(len(entry["k"]) == 3 for entry in kline)  # any past range is served
    (history,) = answers["/history"]["data"]
    assert len(history["k"]) == 5 and all(bar["ts"] <= now for bar in history["k"])
    assert set(answers["/market-calendar"]["data"]) == {"HK", "US"}
