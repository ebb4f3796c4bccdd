"""The recorder's own losses, as ``dropped`` gaps, kept across a restart.

The writer thread reports rows that will not reach the database (:meth:`Losses.on_dropped`);
they become ``dropped`` gaps (:class:`~recorder.gaps.DroppedRows`), written to the ledger
once the writer can take them (:meth:`Losses.write`, every second and at stop). Gaps the
writer still could not take at stop wait in ``dropped-gaps.json`` in the state directory
for the next start (:meth:`Losses.keep`, :meth:`Losses.reload`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from .batching import Batch
from .config import Secret
from .feed import Feed, Other
from .gaps import DroppedRows, Gap, GapCause
from .schema import GAPS, gap_of, gap_row

log = structlog.get_logger("recorder")


@dataclass(frozen=True, slots=True)
class LossesSnapshot:
    """The losses' figures (names as in :class:`~recorder.status.Status`)."""

    #: ``dropped`` gaps wait for the writer to take them
    dropped_gaps_pending: bool
    #: rows of the gaps table lost too, written again as they were
    gap_rows_rewritten: int


class Losses:
    """``dropped`` gaps from the writer's reports to the ledger, or to the state file."""

    def __init__(self, path: Path, key: Secret, clock: Callable[[], int] = time.time_ns) -> None:
        """``path``: the state file; ``key``: scrubbed from the reasons written; ``clock``:
        wall-clock ns."""
        self.path = path
        self.key = key
        self.dropped = DroppedRows(clock)

    def __bool__(self) -> bool:
        """Whether gaps wait to be written."""
        return bool(self.dropped)

    def snapshot(self) -> LossesSnapshot:
        return LossesSnapshot(
            dropped_gaps_pending=bool(self.dropped), gap_rows_rewritten=self.dropped.rewritten
        )

    def on_dropped(self, batch: Batch, why: str, rows: int | None, kept: bool) -> None:
        """The writer thread's report of rows that will not reach the database."""
        lost_gaps = batch.tables.get(GAPS.name)
        data = {t: r for t, r in batch.tables.items() if t != GAPS.name}
        if data:
            self.dropped.add_rows(data, why)
        elif not lost_gaps:  # unreadable rows: their times are about the batch's cut
            self.dropped.add("*", Feed.of(Other.UNKNOWN), batch.seq, batch.seq, rows, why)
        if lost_gaps and not kept:
            # lost for want of space, not for what they hold: written again as they were
            self.dropped.again(gap_of(row) for row in lost_gaps)

    def write(self, record: Callable[[Gap, str | None], None]) -> None:
        """The ``dropped`` gaps to ``record(gap, event)`` (the writer can take them now);
        ``event``: the log event of a new loss, None for a gaps row written again."""
        for gap in self.dropped.take():
            if gap.cause is GapCause.DROPPED:
                gap.detail = self.key.scrub(gap.detail or "")
                record(gap, "gap")
            else:
                record(gap, None)

    def keep(self) -> None:
        """At stop: ``dropped`` gaps the writer could not take (the spool full, the database
        down) wait in the state directory for the next start, which writes them."""
        left = self.dropped.take()
        if not left:
            return
        try:
            kept = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            kept = []
        rows = [*(kept if isinstance(kept, list) else []), *(gap_row(g) for g in left)]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(rows))
            tmp.replace(self.path)
        except OSError as exc:
            log.error("dropped_gaps_not_kept", path=str(self.path), error=str(exc))
            return
        log.warning("dropped_gaps_kept", gaps=len(left), path=str(self.path))

    def reload(self) -> None:
        """At start: the ``dropped`` gaps the last run kept, to be written."""
        try:
            kept = orjson.loads(self.path.read_bytes())
            gaps = [gap_of(tuple(row)) for row in kept]
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.error("dropped_gaps_unreadable", path=str(self.path), error=str(exc))
            return
        self.dropped.again(gaps, lost=False)
        self.path.unlink(missing_ok=True)
        log.info("dropped_gaps_reloaded", gaps=len(gaps))
