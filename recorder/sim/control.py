"""Fault switches on a running simulator, over HTTP: rehearse an outage against your own
config without restarting the simulator (a restarted one has another history).

Every route wants the control key (``key`` query parameter or header), never a data key:

- ``POST /control/drop``: close every WebSocket now;
- ``POST /control/refuse?seconds=N``: refuse new WebSocket handshakes (HTTP 503);
- ``POST /control/outage?seconds=N``: both: drop, then refuse for N seconds;
- ``POST /control/stall?seconds=N``: keep connections open but send nothing;
- ``POST /control/errors?seconds=N``: answer every command with an error ``msg``;
- ``POST /control/http?status=503&seconds=N``: answer every HTTP endpoint with ``status``;
- ``POST /control/clear``: every switch off;
- ``GET /control``: the switches now.

Without ``seconds`` a switch stays on until cleared.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

if TYPE_CHECKING:
    from .server import Simulator

#: the switches a route turns on: the Faults attribute and its "on" value
_SWITCHES: Final[dict[str, str]] = {
    "refuse": "refuse_connections",
    "stall": "stall",
    "errors": "error_replies",
    "http": "http_status",
}
_OFF: Final[dict[str, Any]] = {
    "refuse_connections": False,
    "stall": False,
    "error_replies": False,
    "http_status": None,
}


class Control:
    """The control routes of one simulator; timed switches turn off by themselves."""

    def __init__(self, sim: Simulator, key: str) -> None:
        self.sim, self.key = sim, key
        self._timers: dict[str, asyncio.TimerHandle] = {}
        app = sim.app
        app.router.add_get("/control", self._state)
        app.router.add_post("/control/drop", self._drop)
        app.router.add_post("/control/outage", self._outage)
        app.router.add_post("/control/clear", self._clear)
        for name in _SWITCHES:
            app.router.add_post(f"/control/{name}", self._switch)

    def _allowed(self, request: web.Request) -> web.Response | None:
        given = request.query.get("key") or request.headers.get("key") or ""
        if secrets.compare_digest(given, self.key):
            return None
        return web.json_response({"msg": "the control routes want the control key"}, status=403)

    def _state_body(self) -> dict[str, Any]:
        faults = self.sim.faults
        return {
            "msg": "OK",
            "switches": {attr: getattr(faults, attr) for attr in _OFF},
            "connections": len(self.sim.conns),
        }

    async def _state(self, request: web.Request) -> web.Response:
        return self._allowed(request) or web.json_response(self._state_body())

    async def _drop(self, request: web.Request) -> web.Response:
        if refused := self._allowed(request):
            return refused
        await self.sim.disconnect_all("control: connection dropped")
        return web.json_response(self._state_body())

    async def _outage(self, request: web.Request) -> web.Response:
        if refused := self._allowed(request):
            return refused
        try:
            self._set("refuse_connections", True, _seconds(request))
        except ValueError as exc:
            return web.json_response({"msg": str(exc)}, status=400)
        await self.sim.disconnect_all("control: outage")
        return web.json_response(self._state_body())

    async def _switch(self, request: web.Request) -> web.Response:
        if refused := self._allowed(request):
            return refused
        attr = _SWITCHES[request.path.rsplit("/", 1)[1]]
        try:
            value: Any = True
            if attr == "http_status":
                value = int(request.query.get("status", "503"))
                if not 100 <= value <= 599:
                    raise ValueError(f"status {value} is not an HTTP status")
            self._set(attr, value, _seconds(request))
        except ValueError as exc:
            return web.json_response({"msg": str(exc)}, status=400)
        return web.json_response(self._state_body())

    async def _clear(self, request: web.Request) -> web.Response:
        if refused := self._allowed(request):
            return refused
        for attr in _OFF:
            self._set(attr, _OFF[attr], None)
        return web.json_response(self._state_body())

    def _set(self, attr: str, value: Any, seconds: float | None) -> None:
        """Turn a switch to ``value``, back off after ``seconds`` when given."""
        timer = self._timers.pop(attr, None)
        if timer is not None:
            timer.cancel()
        setattr(self.sim.faults, attr, value)
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._timers[attr] = loop.call_later(seconds, self._off, attr)

    def _off(self, attr: str) -> None:
        self._timers.pop(attr, None)
        setattr(self.sim.faults, attr, _OFF[attr])


def _seconds(request: web.Request) -> float | None:
    text = request.query.get("seconds")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"seconds={text!r} is not a number") from None
    if not 0 < seconds <= 86400:
        raise ValueError("seconds must be more than 0 and at most 86400")
    return seconds
