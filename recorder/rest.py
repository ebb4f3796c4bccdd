"""The QOS REST client: one rate limiter for the process, retries with backoff.

The key travels in a ``key`` header, never in the URL. Every request, retries included,
passes the process's one limiter (the plan's 10 requests a minute by default). HTTP 429
and 5xx, timeouts and non-"OK" ``msg`` replies are retried with
jittered backoff; responses larger than ``max_bytes`` are refused.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from .config import Secret, UpstreamConfig
from .exceptions import ApiError, UpstreamError

log = structlog.get_logger("recorder.rest")


class RateLimiter:
    """At most ``rate`` requests in any ``per`` seconds, for the whole process and across
    its restarts.

    A sliding window, not a token bucket: a bucket that starts full lets ``rate`` requests
    go at once and more as it refills, so a server counting "10 per minute" over a sliding
    minute would refuse the eleventh. ``margin`` absorbs the latency between our clock and
    the server's. With a ``state`` file the wall-clock times of the recent requests are
    written there as they are made, and a new process starts from them: a crash loop
    under systemd spends one budget, not one per restart.
    """

    def __init__(
        self, rate: int, per: float = 60.0, margin: float = 1.0, state: Path | None = None
    ) -> None:
        self.rate = rate
        self.per = per + margin
        self.state = state
        self._sent: deque[float] = deque(maxlen=rate)  # monotonic times, oldest first
        self._lock = asyncio.Lock()
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
        offset = time.monotonic() - time.time()
        return sorted(t + offset for t in times)[-self.rate :]

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

    async def take(self) -> None:
        async with self._lock:
            await self._free()
            self._sent.append(time.monotonic())
            self._save()

    def remaining(self) -> int:
        """Requests that could go now without waiting."""
        horizon = time.monotonic() - self.per
        return self.rate - sum(1 for t in self._sent if t > horizon)

    async def ready(self) -> None:
        """Wait until a request could go now, without using it up."""
        async with self._lock:
            await self._free()

    async def _free(self) -> None:
        while len(self._sent) >= self.rate:
            wait = self._sent[0] + self.per - time.monotonic()
            if wait <= 0:
                self._sent.popleft()
            else:
                log.info("rest_budget_wait", seconds=round(wait, 2), per_minute=self.rate)
                await asyncio.sleep(wait)


class RestClient:
    def __init__(
        self, up: UpstreamConfig, key: Secret, attempts: int = 5, budget: Path | None = None
    ) -> None:
        """``budget``: the file that keeps the rate limiter's recent requests (see
        :class:`RateLimiter`)."""
        self.base = up.http_url.rstrip("/")
        self.key = key
        self.timeout = up.http_timeout
        self.max_bytes = up.max_http_bytes
        self.limiter = RateLimiter(up.http_requests_per_minute, state=budget)
        self.attempts = attempts
        self.backoff_initial = up.backoff_initial
        self.requests = 0
        self.retries = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RestClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"key": self.key.reveal(), "Content-Type": "application/json"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path``; the ``data`` of an "OK" answer, retried on failure."""
        delay = self.backoff_initial
        for attempt in range(1, self.attempts + 1):
            await self.limiter.take()
            self.requests += 1
            try:
                return await self._once(path, body)
            except UpstreamError as exc:
                if attempt == self.attempts:
                    raise
                self.retries += 1
                wait = random.uniform(delay / 2, delay)
                log.warning(
                    "rest_retry",
                    path=path,
                    error=str(exc),
                    attempt=attempt,
                    retry_in=round(wait, 2),
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _once(self, path: str, body: dict[str, Any]) -> Any:
        assert self._session is not None, "use RestClient as an async context manager"
        try:
            async with self._session.post(self.base + path, data=orjson.dumps(body)) as resp:
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise UpstreamError(
                        f"{path}: response of {resp.content_length} bytes is too large"
                    )
                raw = await resp.content.read(self.max_bytes + 1)
                if len(raw) > self.max_bytes:
                    raise UpstreamError(f"{path}: response larger than {self.max_bytes} bytes")
                if resp.status != 200:
                    raise UpstreamError(f"{path}: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{path}: {type(exc).__name__}: {exc}") from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{path}: answer is not JSON") from None
        if not isinstance(answer, dict) or answer.get("msg") != "OK":
            msg = answer.get("msg") if isinstance(answer, dict) else None
            raise ApiError(path, str(msg))
        return answer.get("data")
