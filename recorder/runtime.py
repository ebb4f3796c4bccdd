"""Running a process's event loop: uvloop where installed, signals, interpreter tuning.

Shared by ``qos-recorder run``, ``replay --serve``, ``simulate`` and ``demo``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .serving import bound_port, serve


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` to completion on uvloop where it is installed, on asyncio otherwise."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: how systemd and Ctrl-C end the process."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def tune() -> None:
    """Interpreter settings for the recording process, each chosen by measurement
    (``scripts/bench``): the writer thread's SQLite steps release the GIL, and under full
    load each re-acquire waited a whole 5 ms switch interval (1 ms: SQLite path 35k -> 47k
    msgs/s, others unchanged); a larger first GC generation and freezing start-up objects
    cut collection time on the per-frame allocations by about a tenth."""
    sys.setswitchinterval(0.001)
    gc.set_threshold(50_000, 20, 20)
    gc.freeze()


async def serve_until_stopped(
    app: web.Application, host: str, port: int, banner: Callable[[int], str]
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, printing ``banner(port)`` once listening."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    runner = await serve(app, host, port)
    print(banner(bound_port(runner)), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
