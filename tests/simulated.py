"""The simulator on its own event loop in a background thread, for tests that drive a
recorder (or a plain client) from the test's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from recorder.sim import Faults, SimConfig, Simulator

T = TypeVar("T")


class LoopThread:
    """A server on its own event loop in a background thread: ``with`` starts it and waits
    until it listens, and stops it. A subclass serves in :meth:`_listen`, an async context
    that yields the port it bound."""

    name = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=self.name)
        self._listening = threading.Event()
        self._stop: asyncio.Event | None = None
        self._life: concurrent.futures.Future[None] | None = None

    def __enter__(self: S) -> S:
        self._thread.start()
        self._life = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        if not self._listening.wait(10):
            self._life.result(1)  # raises what went wrong
            raise RuntimeError(f"the {self.name} did not start listening within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._life is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._life.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()  # else the garbage collector closes it, inside a later test

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self._listen() as port:
            self.port = port
            self._listening.set()
            await self._stop.wait()

    def _listen(self) -> AbstractAsyncContextManager[int]:
        raise NotImplementedError

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result (thread-safe access)."""

        async def run() -> T:
            return fn()

        return self.run(run())

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


S = TypeVar("S", bound=LoopThread)


class SimulatorThread(LoopThread):
    """``with SimulatorThread(config) as sim:`` a simulator on a free loopback port."""

    name = "qos-sim"

    def __init__(
        self,
        config: SimConfig | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        # round the clock unless a test asks for market hours: tests run at any hour
        self.sim = Simulator(config or SimConfig(market_hours=False), faults)
        super().__init__(host, port)

    def _listen(self) -> AbstractAsyncContextManager[int]:
        return self.sim.serving(self.host, self.port)
