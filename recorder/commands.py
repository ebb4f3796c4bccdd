"""The server side of the QOS WebSocket commands, without I/O: a client's text parsed into a
:class:`Command`, its reply built, its codes checked, its subscriptions kept.

Two servers answer the protocol (``qos-protocol.md``): the simulator (:mod:`recorder.sim.server`)
and the replay server (:mod:`recorder.replay`). Both parse, reply and subscribe through this
module, so a client sees one protocol whichever it talks to; what each serves beyond that
(the simulator's limits and ``R*`` requests, the replay's playback) stays with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .config import check_code_entry
from .protocol import STREAMS, Stream, split_codes

#: the reply to a text that is not a JSON object with a ``type``
INVALID_REQUEST: dict[str, Any] = {"type": "", "msg": "invalid request"}


class CommandRefused(ValueError):
    """A command answered with a non-"OK" ``msg``: the exception's text."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command a client sent: its ``type`` and the whole request object."""

    kind: str
    req: dict[str, Any]

    @property
    def subscription(self) -> tuple[Stream, bool] | None:
        """The stream a subscribe or cancel command names and whether it adds, else None."""
        return Stream.of_command(self.kind)

    def reply(self, msg: str = "OK", data: list[Any] | None = None) -> dict[str, Any]:
        """The reply: the same type, ``msg``, the server's time, the ``reqid`` echoed."""
        reply: dict[str, Any] = {"type": self.kind, "msg": msg, "time": int(time.time())}
        if "reqid" in self.req:
            reply["reqid"] = self.req["reqid"]
        if data is not None:
            reply["data"] = data
        return reply


def parse(text: str) -> Command | None:
    """The command in a client's text frame, or None where it is not one (answer with
    :data:`INVALID_REQUEST`)."""
    try:
        req = orjson.loads(text)
        kind = req["type"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return Command(kind, req)


def request_codes(req: dict[str, Any], explain: bool = False) -> list[str]:
    """The codes of a request's ``codes`` list, split (``"US:AAPL,TSLA"`` is two).

    Raises :class:`CommandRefused` where ``codes`` is not a list of strings or an entry is
    malformed: ``invalid code: <entry>`` as the service answers, or with ``explain`` what is
    wrong with it (the replay server's clients are debugging their own code)."""
    entries = req.get("codes")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise CommandRefused("codes must be a list of strings")
    for entry in entries:
        problem = check_code_entry(entry)
        if problem is not None:
            raise CommandRefused(f"invalid code: {problem if explain else entry}")
    return split_codes(entries)


@dataclass(slots=True)
class Subscriptions:
    """What one connection is subscribed to: codes per push type, (code, kt) for K-lines."""

    codes: dict[str, set[str]] = field(default_factory=lambda: {s.tp: set() for s in STREAMS})
    klines: set[tuple[str, int]] = field(default_factory=set)

    def change(self, stream: Stream, adding: bool, codes: list[str], kt: Any) -> None:
        """Subscribe ``codes`` to ``stream`` (or cancel them); ``kt`` counts for K-lines."""
        if stream is Stream.KLINES:
            pairs = {(c, kt) for c in codes}
            if adding:
                self.klines |= pairs
            else:
                self.klines -= pairs
        elif adding:
            self.codes[stream.tp] |= set(codes)
        else:
            self.codes[stream.tp] -= set(codes)

    def wants(self, tp: str, code: str, kt: int | None = None) -> bool:
        """Whether a push of type ``tp`` for ``code`` (and K-line type ``kt``) goes out."""
        if tp == Stream.KLINES.tp:
            return (code, kt) in self.klines
        return code in self.codes[tp]

    def products(self) -> set[str]:
        """Every code subscribed to anything (the plan limits how many)."""
        return set().union(*self.codes.values()) | {c for c, _ in self.klines}
