"""The QOS REST client, and the one scheduler of the plan's request budget.

::

    RestClient.post(path, body, purpose)
        │  every attempt waits for a slot from the RestScheduler, by urgency (Purpose):
        │  a trades gap's backfill first, the start-up sweep next, other backfill, and
        │  reference data only with budget to spare and no backfill pending
        ├─ Transport.post(url, body, headers)   the network (aiohttp, or a test's)
        └─ classify_rest(error)                  retried, waited for, or final

The key travels in a ``key`` header, never in the URL, and redirects are never followed (the
header would go with them). Every request, retries included, spends the process's one
budget (the plan's 10 requests a minute by default), kept across restarts in a file.
Answers are read whole up to ``max_bytes``, however they arrive.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import structlog

from .config import Secret, UpstreamConfig
from .exceptions import ApiError, HttpStatusError, TransportError, UpstreamError
from .retry import Retry, classify_rest, refuses_key

log = structlog.get_logger("recorder.rest")


class Purpose(enum.Enum):
    """Why a request is made: its urgency, and its label in ``/metrics``."""

    TRADES = "trades"  # a trades gap's backfill: its trades leave /trade's window in seconds
    SWEEP = "sweep"  # the start-up sweep (and a code a reload added)
    BACKFILL = "backfill"  # K-line history, snapshot and depth refreshes of a gap
    CALENDAR = "calendar"  # reference data from here on: only with budget to spare
    INSTRUMENTS = "instruments"

    @property
    def rank(self) -> int:
        """Lower goes first."""
        return _RANK[self]

    @property
    def spare_only(self) -> bool:
        """Reference data: waits for spare budget and for no backfill to be pending."""
        return self.rank >= _RANK[Purpose.CALENDAR]


_RANK = {
    Purpose.TRADES: 0,
    Purpose.SWEEP: 1,
    Purpose.BACKFILL: 2,
    Purpose.CALENDAR: 3,
    Purpose.INSTRUMENTS: 3,
}


class RateLimiter:
    """At most ``rate`` requests in any ``per`` seconds, for the whole process and across
    its restarts.

    A sliding window, not a token bucket: a bucket that starts full lets ``rate`` requests
    go at once and more as it refills, so a server counting "10 per minute" over a sliding
    minute would refuse the eleventh. ``margin`` absorbs the latency between our clock and
    the server's. With a ``state`` file the wall-clock times of the recent requests are
    written there as they are made, and a new process starts from them: a crash loop
    under systemd spends one budget, not one per restart. Times in that file beyond now
    plus a minute come from a clock that stepped back: they are discarded.
    """

    def __init__(
        self, rate: int, per: float = 60.0, margin: float = 1.0, state: Path | None = None
    ) -> None:
        self.rate = rate
        self.per = per + margin
        self.state = state
        self._sent: deque[float] = deque(maxlen=rate)  # monotonic times, oldest first
        self._blocked_until = 0.0  # monotonic: the service said the window is full
        if state is not None:
            self._sent.extend(self._load(state))

    def _load(self, state: Path) -> list[float]:
        """The previous process's request times, as times on this process's clock."""
        try:
            wall = orjson.loads(state.read_bytes())
            times = [float(t) for t in wall if isinstance(t, int | float)]
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            log.warning("rest_budget_unreadable", path=str(state), error=str(exc))
            return []
        now = time.time()
        future = [t for t in times if t > now + 60.0]
        if future:
            log.warning(
                "rest_budget_future_discarded",
                path=str(state),
                times=len(future),
                reason="times beyond now plus a minute: the clock stepped back",
            )
        # a time a little ahead is a small step of the clock: it counts as made now
        kept = [min(t, now) for t in times if t <= now + 60.0]
        offset = time.monotonic() - now
        return sorted(t + offset for t in kept)[-self.rate :]

    def _save(self) -> None:
        if self.state is None:
            return
        offset = time.time() - time.monotonic()
        tmp = self.state.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps([round(t + offset, 3) for t in self._sent]))
            tmp.replace(self.state)
        except OSError as exc:  # the budget still holds in this process
            log.warning("rest_budget_not_saved", path=str(self.state), error=str(exc))

    def free_in(self, n: int = 1) -> float:
        """Seconds until ``n`` requests could go at once (0: now)."""
        now = time.monotonic()
        horizon = now - self.per
        live = [t for t in self._sent if t > horizon]
        over = min(len(live), len(live) + min(n, self.rate) - self.rate)
        wait = 0.0 if over <= 0 else live[over - 1] + self.per - now
        return max(wait, self._blocked_until - now, 0.0)

    def spend(self) -> None:
        """One request goes now (call only when :meth:`free_in` is 0)."""
        self._sent.append(time.monotonic())
        self._save()

    def remaining(self) -> int:
        """Requests that could go now without waiting."""
        if self._blocked_until > time.monotonic():
            return 0
        horizon = time.monotonic() - self.per
        return self.rate - sum(1 for t in self._sent if t > horizon)

    def saturate(self) -> None:
        """The service answered that we are over its rate: its window is fuller than ours
        (another client with the key, a clock apart). Wait until our oldest request leaves
        the window, or a fair share of it when we know of none."""
        now = time.monotonic()
        live = [t for t in self._sent if t > now - self.per]
        until = live[0] + self.per if len(live) >= self.rate else now + self.per / self.rate
        self._blocked_until = max(self._blocked_until, until)

    async def take(self) -> None:
        """Wait for a slot and spend it (first come, first served; see RestScheduler)."""
        while (wait := self.free_in()) > 0:
            log.info("rest_budget_wait", seconds=round(wait, 2), per_minute=self.rate)
            await asyncio.sleep(wait)
        self.spend()


class RestScheduler:
    """Owns the budget: each slot goes to the most urgent request waiting for one.

    Waiting requests are ordered by their purpose's rank, then by arrival. Reference data
    (``spare_only``) goes only while ``reserve`` requests stay free after it and no backfill
    is pending (``backlog()``, which the backfill sets): deferred, by minutes if need be,
    rather than taking the slot a gap's trades will need before they leave ``/trade``'s
    window.
    """

    def __init__(self, limiter: RateLimiter, reserve: int | None = None) -> None:
        self.limiter = limiter
        wanted = reserve if reserve is not None else max(1, limiter.rate // 5)
        self.reserve = max(0, min(wanted, limiter.rate - 1))
        #: requests sent per purpose, retries included
        self.sent: dict[Purpose, int] = dict.fromkeys(Purpose, 0)
        #: whether a backfill is pending (gaps held, queued or in a round); set by the backfill
        self.backlog: Callable[[], bool] = lambda: False
        self._queue: list[tuple[int, int, Purpose]] = []  # (rank, arrival, purpose), sorted
        self._arrivals = itertools.count()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _wait(self, entry: tuple[int, int, Purpose]) -> float | None:
        """Seconds this request must wait before asking again (0: go now; None: until
        the queue changes)."""
        if self._queue[0] is not entry:
            return None
        purpose = entry[2]
        if not purpose.spare_only:
            return self.limiter.free_in()
        if self.backlog():
            return 1.0  # the backlog is polled: a gap can appear at any frame
        return self.limiter.free_in(1 + self.reserve)

    async def slot(self, purpose: Purpose) -> None:
        """Wait for this purpose's turn, then spend one request of the budget."""
        entry = (purpose.rank, next(self._arrivals), purpose)
        bisect.insort(self._queue, entry)
        self._notify()
        logged = False
        try:
            while (wait := self._wait(entry)) != 0:
                if wait is not None and not logged:
                    logged = True
                    event = "rest_deferred" if purpose.spare_only else "rest_budget_wait"
                    log.info(event, purpose=purpose.value, seconds=round(wait, 2))
                changed = self._changed
                try:
                    async with asyncio.timeout(wait):
                        await changed.wait()
                except TimeoutError:
                    pass
            self.limiter.spend()
            self.sent[purpose] += 1
        finally:
            self._queue.remove(entry)
            self._notify()

    async def ready(self) -> None:
        """Wait until a request could go now, without spending it."""
        while (wait := self.limiter.free_in()) > 0:
            log.info("rest_budget_wait", seconds=round(wait, 2), per_minute=self.limiter.rate)
            await asyncio.sleep(wait)


# --- transports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer, its body read whole."""

    status: int
    body: bytes


class Transport(Protocol):
    """The network under the client (in the manner of httpx's ``transport=``): tests may
    swap it, the policy above it stays."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; TransportError when nothing usable came back, UpstreamError
        when the answer is larger than the bound."""
        ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """The real network: one aiohttp session, redirects refused, bodies read to the end."""

    def __init__(self, timeout: float, max_bytes: int) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as resp:
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise UpstreamError(f"response of {resp.content_length} bytes is too large")
                chunks: list[bytes] = []
                size = 0
                # the whole body, in as many reads as it takes to arrive (one read returns
                # only what is buffered: a body in two TCP segments would be cut)
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UpstreamError(f"response larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
                return Response(resp.status, b"".join(chunks))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True, slots=True)
class RestSnapshot:
    """The REST client's figures (names as in :class:`~recorder.status.Status`)."""

    rest_requests: int
    #: by purpose (trades, sweep, backfill, calendar, instruments), retries included
    rest_requests_by_purpose: dict[str, int]
    rest_budget_remaining: int
    rest_retries: int
    #: why the service refuses the key over REST, while it does (its last answer said so)
    rest_key_refused: str | None


class RestClient:
    """POSTs to the QOS REST API through the scheduler, classifying every failure."""

    def __init__(
        self,
        up: UpstreamConfig,
        key: Secret,
        attempts: int = 5,
        budget: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        """``budget``: the file that keeps the recent requests (see :class:`RateLimiter`);
        ``transport``: the network (default: aiohttp)."""
        self.base = up.http_url.rstrip("/")
        self.key = key
        self.scheduler = RestScheduler(RateLimiter(up.http_requests_per_minute, state=budget))
        self.attempts = attempts
        self.backoff_initial = up.backoff_initial
        self.retries = 0
        self.key_refused: str | None = None
        self.transport: Transport = transport or AiohttpTransport(
            up.http_timeout, up.max_http_bytes
        )

    @property
    def limiter(self) -> RateLimiter:
        return self.scheduler.limiter

    @property
    def requests(self) -> int:
        """Requests sent, retries included."""
        return sum(self.scheduler.sent.values())

    def snapshot(self) -> RestSnapshot:
        return RestSnapshot(
            rest_requests=self.requests,
            rest_requests_by_purpose={p.value: n for p, n in self.scheduler.sent.items()},
            rest_budget_remaining=self.limiter.remaining(),
            rest_retries=self.retries,
            rest_key_refused=self.key_refused,
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.aclose()

    async def post(self, path: str, body: dict[str, Any], purpose: Purpose) -> Any:
        """POST ``body`` to ``path`` when ``purpose``'s turn comes; the ``data`` of an "OK"
        answer. Failures are retried as :func:`~recorder.retry.classify_rest` says."""
        delay = self.backoff_initial
        headers = {"key": self.key.reveal(), "Content-Type": "application/json"}
        payload = orjson.dumps(body)
        for attempt in range(1, self.attempts + 1):
            await self.scheduler.slot(purpose)
            try:
                try:
                    response = await self.transport.post(self.base + path, payload, headers)
                except UpstreamError as exc:  # TransportError, or too large: name the path
                    raise type(exc)(f"{path}: {exc}") from None
                data = answer_data(path, response)
                self.key_refused = None
                return data
            except UpstreamError as exc:
                if refuses_key(exc):  # a state, until an answer takes the key again
                    self.key_refused = self.key.scrub(str(exc))
                verdict = classify_rest(exc)
                if verdict is Retry.FINAL or attempt == self.attempts:
                    raise
                self.retries += 1
                wait = 0.0
                if verdict is Retry.WINDOW:
                    self.limiter.saturate()  # the next slot waits for the service's window
                else:
                    wait = random.uniform(delay / 2, delay)
                    delay = min(delay * 2, 30.0)
                log.warning(
                    "rest_retry",
                    path=path,
                    purpose=purpose.value,
                    error=str(exc),
                    attempt=attempt,
                    retry=verdict.value,
                    retry_in=round(wait, 2),
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")


def answer_data(path: str, response: Response) -> Any:
    """The ``data`` of an answer; the error it is otherwise (HttpStatusError, ApiError, or
    TransportError for a body that is not JSON, most likely cut short)."""
    if response.status != 200:
        raise HttpStatusError(path, response.status)
    try:
        answer = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        raise TransportError(f"{path}: answer is not JSON ({len(response.body)} bytes)") from None
    if not isinstance(answer, dict) or answer.get("msg") != "OK":
        msg = answer.get("msg") if isinstance(answer, dict) else None
        raise ApiError(path, str(msg))
    return answer.get("data")
