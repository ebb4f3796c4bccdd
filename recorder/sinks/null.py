"""A sink that counts and discards, for benchmarks."""

from __future__ import annotations

from collections.abc import Iterable

from ..batching import Batch
from ..identity import Identity
from ..schema import Row


class NullSink:
    name = "null"

    def __init__(self) -> None:
        self.rows = 0
        self.batches = 0

    def open(self) -> None:
        pass

    def write(self, batch: Batch) -> None:
        self.rows += len(batch)
        self.batches += 1

    def trade_counts(self, since_ns: int) -> Iterable[tuple[Identity, int]]:
        return ()

    def last_times(self) -> dict[tuple[str, str], int]:
        return {}

    def open_gaps(self) -> list[Row]:
        return []

    def volume_anchors(self, codes: Iterable[str]) -> dict[str, tuple[float, int, float]]:
        return {}

    def expire(self, table: str, before_ns: int) -> int:
        return 0

    def claim(self) -> None:
        """Nothing to hold: the server keeps its own consistency."""

    def close(self) -> None:
        pass
