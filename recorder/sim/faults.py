"""Fault injection for the simulator: switch any of these while it runs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from ..protocol import Wire


@dataclass
class Faults:
    """What the simulator does wrong; change attributes while it runs."""

    close_every: float | None = None
    stall: bool = False
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    error_replies: bool = False
    http_status: int | None = None
    http_fail_count: int | None = None
    http_delay: float = 0.0
    refuse_connections: bool = False


def malformed(frame: dict[str, Any], rng: random.Random) -> str:
    """A broken copy of a push frame: cut short, a bad ``ts``, or a bad code."""
    kind = rng.randrange(3)
    if kind == 0:
        return orjson.dumps(frame).decode()[:-7]
    if kind == 1:
        return orjson.dumps({**frame, Wire.TS: "yesterday"}).decode()
    return orjson.dumps({**frame, Wire.CODE: 42}).decode()
