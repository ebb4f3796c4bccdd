"""The clocks the recorder reads, as one injectable value.

Wall-clock nanoseconds are the time base of every record's ``recv_ts`` and of the gaps;
monotonic seconds time rates and intervals. The daemon's parts take a :class:`Clock`
instead of calling :mod:`time`, so a test can drive them with its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall-clock ns (``wall_ns``), wall-clock seconds (``wall``) and monotonic seconds."""

    wall_ns: Callable[[], int] = time.time_ns
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


#: the system's clocks
SYSTEM = Clock()
