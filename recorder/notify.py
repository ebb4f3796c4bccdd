"""The sd_notify protocol: READY, WATCHDOG and STOPPING datagrams to ``$NOTIFY_SOCKET``.

No dependency: it is one datagram per message. Outside systemd (no ``NOTIFY_SOCKET``)
every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self.address: str | None = None
        if address:
            # an abstract socket is given with a leading '@'
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        #: seconds between WATCHDOG=1 pings (half the watchdog timeout), or None
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None

    def send(self, message: str) -> None:
        if self.address is None:
            return
        # systemd gone (shutting down): there is nobody left to tell
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(message.encode(), self.address)

    def ready(self, status: str = "recording") -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    async def keep_alive(self) -> None:
        """Send WATCHDOG=1 pings from the event loop, so a hung loop stops them and systemd
        restarts the process; returns at once when there is no watchdog."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=flushing")
