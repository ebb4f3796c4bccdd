"""Serving an aiohttp app: the simulator, the replay server and the metrics endpoint."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app`` on ``host:port`` (0 picks a free port); returns the runner.

    If the port cannot be bound, the runner is cleaned up and the ``OSError`` raised."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on."""
    for addr in runner.addresses:
        return int(addr[1])
    raise RuntimeError("the app is not listening")
