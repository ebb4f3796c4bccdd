"""The scripted hostile server itself: a recorder talks to it, and its answers arrive as
scripted (whole when dripped, not followed when redirected)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
from conftest import make_config, rows, run_recorder
from hostile import Answer, Hostile, Request

from recorder.daemon import Recorder

TRADE = '{"tp":"T","c":"US:AAPL","p":"212.5","v":"3","ts":1741960243,"d":1}'


def test_a_recorder_subscribes_and_records_a_scripted_frame(tmp_path: Path) -> None:
    with Hostile() as up:
        up.frames.append(TRADE)
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})

        def stored(recorder: Recorder) -> bool:
            return recorder.status().rows_written.get("trades", 0) >= 1

        recorder = run_recorder(config, until=stored, timeout=20)
        assert stored(recorder)
        assert {"T"} <= {c.get("type") for c in up.commands}
    got = rows(tmp_path / "ticks.sqlite", "SELECT code, price, size, side FROM trades")
    assert got == [("US:AAPL", 212.5, 3.0, 1)]


def test_answers_drip_redirect_and_follow_the_script() -> None:
    with Hostile() as up:
        up.http["/trade"] = Answer(chunks=[b'{"msg":"OK",', b'"data":[]}'], drip=0.05)
        up.http["/kline"] = Answer.redirect("http://example.invalid/steal")
        up.http["/snapshot"] = lambda request: Answer.ok(request.json()["codes"])

        async def client() -> tuple[bytes, int, str, bytes]:
            async with aiohttp.ClientSession() as http:
                async with http.post(up.http_url + "/trade", json={}) as r:
                    dripped = await r.read()
                async with http.post(up.http_url + "/kline", allow_redirects=False) as r:
                    status, location = r.status, r.headers["Location"]
                async with http.post(up.http_url + "/snapshot", json={"codes": ["X:Y"]}) as r:
                    echoed = await r.read()
            return dripped, status, location, echoed

        dripped, status, location, echoed = asyncio.run(client())
        assert dripped == b'{"msg":"OK","data":[]}'
        assert (status, location) == (307, "http://example.invalid/steal")
        assert echoed == b'{"msg":"OK","data":["X:Y"]}'
        assert [r.path for r in up.requests] == ["/trade", "/kline", "/snapshot"]
        assert isinstance(up.requests[0], Request)


def test_frames_of_the_wrong_shape_are_dead_letters_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    """#21 item 3: each of these crashed the daemon with a traceback."""
    pq = '{"lp":"1","yp":"1","h":"1","l":"1","ts":1741960243000,"v":"1","t":"1"}'
    bad = [
        '{"tp":[1]}',
        '{"tp":{}}',
        '{"tp":"S","c":"US:AAPL","lp":"1","yp":"1","o":"1","h":"1","l":"1","ts":1741960243,'
        '"v":"1","t":"1","s":0,"pq":' + pq + "}",
        '{"tp":"T","c":"US:AAPL","p":"1_000","v":"1","ts":1741960243,"d":1}',
    ]
    with Hostile() as up:
        up.frames += [*bad, TRADE]
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": []})

        def stored(recorder: Recorder) -> bool:
            return recorder.status().rows_written.get("trades", 0) >= 1

        recorder = run_recorder(config, until=stored, timeout=20)
        assert stored(recorder) and up.connections == 1  # one session: none of it ended it
    assert recorder.status().decode_errors == len(bad)
    dead = (tmp_path / "dead-letter.ndjson").read_text().splitlines()
    assert [orjson.loads(line)["frame"] for line in dead] == bad
