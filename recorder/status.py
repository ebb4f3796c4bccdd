"""The recorder's state at one moment, as a frozen value, and the health verdict on it.

Each part of the daemon (session, ingest, writer, spool, backfill, REST client, reference
poller) returns a frozen snapshot of its own figures, named as the fields here;
:meth:`Status.of` composes them, and :meth:`recorder.daemon.Recorder.status` is that
composition. ``/metrics``, ``/healthz`` and ``qos-recorder status`` only render a
:class:`Status`, so none of them reaches into the daemon.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .config import Address, Config, MetricsConfig
from .gaps import GapStatus
from .protocol import NS, Stream

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True, slots=True)
class Status:
    """Everything the recorder reports. Times are wall-clock ns unless said otherwise."""

    now: int
    connected: bool
    connected_since: float | None  # unix seconds
    subscribed: bool
    last_disconnect_reason: str | None
    reconnects: int
    heartbeat_rtt: float | None  # seconds
    frames: Mapping[Stream, int]
    frames_per_second: float
    decode_errors: int
    dead_letter_dropped: int
    rejected_requests: int
    rest_requests: int
    #: REST requests by purpose (trades, sweep, backfill, calendar, instruments, decimals)
    rest_requests_by_purpose: Mapping[str, int]
    #: receive time of the last frame, and of the last trade, per code
    last_frame: Mapping[str, int]
    last_trade: Mapping[str, int]
    #: whether each code's market is open now (None: unknown)
    market_open: Mapping[str, bool | None]
    rest_budget_remaining: int
    rows_written: Mapping[str, int]
    writer_queue: int
    batcher_rows: int
    sink_healthy: bool
    sink_error: str | None
    sink_failures: int
    writer_crashes: int
    writer_error: str | None
    writer_failed: bool
    writer_recovering: bool
    lost_rows: int
    spool_bytes: int
    spool_max_bytes: int
    #: recorded gaps backfilled so far, per (table, status)
    gap_outcomes: Mapping[tuple[str, GapStatus], int]
    spool_segments: int
    spool_rejected_rows: int
    reloads: int
    reload_error: str | None
    open_gaps: int
    #: when the oldest gap that still lasts was found
    oldest_open_gap: int | None
    backfilled_rows: int
    #: seconds of samples ``frames_per_second`` is measured over (0: not measured yet)
    frames_rate_window: float = 0.0
    #: why the service refuses the API key, while it does (HTTP 401 or 403 at the handshake)
    key_refused: str | None = None
    #: rows of batches the sink refused for their content, kept in spool/rejected.ndjson
    rejected_rows: int = 0
    #: damaged spool entries skipped at a drain (their rows are in ``lost_rows`` if known)
    spool_damaged_entries: int = 0
    #: frames for codes (or K-line types) not subscribed: counted, not recorded
    unsubscribed_frames: int = 0
    #: times the SQLite file was deleted or replaced under the recorder (reopened each time)
    sink_replaced: int = 0
    #: how long the database write in flight has run, once past sink.write_stuck_after
    write_stuck_seconds: float = 0.0
    #: the tables whose WAL QuestDB suspended (table -> its error): rows not applied
    suspended_tables: Mapping[str, str] = field(default_factory=dict)
    #: batches the database acknowledged, and batches spooled instead
    batches_written: int = 0
    spooled_batches: int = 0
    #: rows the retention removed
    expired_rows: int = 0
    #: gaps given to the backfill, and those backfilled as far as the API allows
    gaps_submitted: int = 0
    gaps_resolved: int = 0
    backfill_failed_rounds: int = 0
    #: REST requests sent again after a failure
    rest_retries: int = 0
    #: calendar or instruments fetches that failed (tried again later)
    reference_failures: int = 0
    #: why the service refuses the key over REST while the WebSocket took it (backfill and
    #: reference data stop), while it does
    rest_key_refused: str | None = None
    #: spooled batches the database took since
    drained_batches: int = 0
    #: gaps whose end became known (each went to the ledger, and to the backfill)
    gaps_ended: int = 0
    #: trade identities the counter holds (its window, and seconds held for a backfill)
    trade_identities: int = 0
    #: the recorder's own losses: ``dropped`` gaps waiting for the writer, and rows of the
    #: gaps table lost too and written again as they were
    dropped_gaps_pending: bool = False
    gap_rows_rewritten: int = 0

    @classmethod
    def of(cls, *parts: DataclassInstance, **figures: Any) -> Status:
        """The status composed from the parts' snapshots (each names its figures as the
        fields here) and the ``figures`` given; ValueError when a field is given twice or
        by nothing (a default would hide a part that forgot it)."""
        for part in parts:
            for f in dataclasses.fields(part):
                if f.name in figures:
                    raise ValueError(f"Status.{f.name} given twice (by {type(part).__name__})")
                figures[f.name] = getattr(part, f.name)
        missing = _FIELDS - figures.keys()
        if missing:
            raise ValueError(f"Status fields given by no part: {', '.join(sorted(missing))}")
        return cls(**figures)

    def backfill_idle(self) -> bool:
        """Every gap submitted so far was backfilled as far as the API allows."""
        return self.gaps_resolved == self.gaps_submitted

    def last_frame_age(self) -> float | None:
        """Seconds since the newest frame of any code, or None before the first."""
        last = max(self.last_frame.values(), default=None)
        return None if last is None else (self.now - last) / NS

    def oldest_open_gap_age(self) -> float | None:
        """Seconds since the oldest gap that still lasts was found."""
        found = self.oldest_open_gap
        return None if found is None else round((self.now - found) / NS, 3)

    def reasons(self, limits: MetricsConfig) -> list[str]:
        """Why the recorder is unhealthy (none: it is healthy), one readable line each."""
        age = self.last_frame_age()
        spool_fraction = self.spool_bytes / self.spool_max_bytes
        reasons = []
        if self.key_refused:
            reasons.append(
                f"the service refuses the key ({self.key_refused}): check upstream.key_env "
                "or upstream.key_file, and qos-recorder check-config --online"
            )
        elif not self.connected:
            reasons.append(f"disconnected: {self.last_disconnect_reason or 'not yet connected'}")
        elif not self.subscribed:
            reasons.append("connected but not subscribed yet")
        if self.rest_key_refused and not self.key_refused:
            reasons.append(
                f"the service refuses the key over REST ({self.rest_key_refused}): no "
                "backfill and no reference data; check the plan of upstream.key_env or "
                "upstream.key_file, and qos-recorder check-config --online"
            )
        if age is None or age > limits.stale_after:
            reasons.append(
                "no frame received" if age is None else f"stale: last frame {age:.0f} s ago"
            )
        if spool_fraction > limits.spool_warn_fraction:
            reasons.append(f"spool {spool_fraction:.0%} full")
        if not self.sink_healthy:
            reasons.append(f"database unavailable: {self.sink_error}")
        if self.write_stuck_seconds:
            reasons.append(f"database write stuck for {self.write_stuck_seconds:.0f} s")
        for table, error in sorted(self.suspended_tables.items()):
            reasons.append(
                f"QuestDB suspended the WAL of table {table} ({error}): its rows are not "
                f"applied until ALTER TABLE {table} RESUME WAL"
            )
        if self.writer_failed:
            reasons.append(f"writer failed: {self.writer_error}")
        elif self.writer_recovering:
            reasons.append(f"writer restarted after: {self.writer_error}")
        return reasons

    def health(self, limits: MetricsConfig) -> tuple[bool, dict[str, Any]]:
        """Whether the recorder is healthy, and the summary ``/healthz`` and ``status`` show."""
        age = self.last_frame_age()
        reasons = self.reasons(limits)
        summary = {
            "status": "ok" if not reasons else "unhealthy",
            "reasons": reasons,
            "connected_since": self.connected_since,
            "frames": {stream.value: n for stream, n in self.frames.items()},
            "frames_per_second": round(self.frames_per_second, 1),
            "frames_rate_window_seconds": round(self.frames_rate_window),
            "last_frame_age_seconds": None if age is None else round(age, 3),
            "reconnects": self.reconnects,
            "rows_written": dict(self.rows_written),
            "spool_bytes": self.spool_bytes,
            "spool_segments": self.spool_segments,
            "open_gaps": self.open_gaps,
            "oldest_open_gap_age_seconds": self.oldest_open_gap_age(),
            "backfilled_rows": self.backfilled_rows,
            "decode_errors": self.decode_errors,
            "unsubscribed_frames": self.unsubscribed_frames,
            "lost_rows": self.lost_rows,
            "rejected_rows": self.rejected_rows,
            "spool_damaged_entries": self.spool_damaged_entries,
            "sink_file_replaced": self.sink_replaced,
            "write_stuck_seconds": round(self.write_stuck_seconds, 1),
            "suspended_tables": dict(self.suspended_tables),
            "config_reloads": self.reloads,
            "config_reload_error": self.reload_error,
            "writer_crashes": self.writer_crashes,
            "writer_error": self.writer_error,
            "key_refused": self.key_refused is not None or self.rest_key_refused is not None,
        }
        return not reasons, summary


_FIELDS = frozenset(f.name for f in dataclasses.fields(Status))


def progress(now: Status, before: Status | None) -> dict[str, Any]:
    """The routine progress line's fields: frames and rows per stream since the line
    ``before`` (everything, for the first line) and in all, open gaps, spool bytes, REST
    budget left, so a quiet journal still says the recorder is working."""
    seconds = (now.now - before.now) / NS if before else None
    frames = {s.value: n for s, n in now.frames.items()}
    old_frames = {s.value: n for s, n in before.frames.items()} if before else {}
    old_rows = dict(before.rows_written) if before else {}
    return {
        "seconds": None if seconds is None else round(seconds),
        "frames": {k: n - old_frames.get(k, 0) for k, n in frames.items()},
        "rows": {k: n - old_rows.get(k, 0) for k, n in now.rows_written.items()},
        "frames_total": sum(frames.values()),
        "rows_total": sum(now.rows_written.values()),
        "connected": now.connected,
        "open_gaps": now.open_gaps,
        "spool_bytes": now.spool_bytes,
        "rest_budget_left": now.rest_budget_remaining,
    }


class RateMeter:
    """A rate over the last ``samples - 1`` samples of a running total (a minute, sampled
    every second), since the last :meth:`reset` (a new connection): the window it covers
    is stated beside it, so a rate right after a start is not a misleading 0."""

    def __init__(self, samples: int = 61) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=samples)

    def sample(self, at: float, total: int) -> None:
        self._samples.append((at, total))

    def reset(self) -> None:
        self._samples.clear()

    def window(self) -> float:
        """Seconds the rate is measured over; 0 before two samples."""
        return self._samples[-1][0] - self._samples[0][0] if self._samples else 0.0

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


# --- finding a running recorder without trusting the config file as it is now ------------

#: in the spool directory: the running recorder's pid, config and the address its /healthz
#: listens on (the bound port, so ``listen = "127.0.0.1:0"`` works too)
RUNTIME_FILE = "recorder.json"


def write_runtime(spool_dir: Path, listen: Address, config_path: str) -> Path:
    """Say where this recorder answers; replaced atomically."""
    path = spool_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    doc = {"pid": os.getpid(), "listen": str(listen), "config": str(Path(config_path).resolve())}
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(path)
    return path


def read_runtime(spool_dir: Path) -> Address | None:
    """The address a recorder using ``spool_dir`` wrote at start, if it wrote one."""
    try:
        doc = orjson.loads((spool_dir / RUNTIME_FILE).read_bytes())
        return Address.parse(doc["listen"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


_SECTION = re.compile(r"\s*\[\s*([A-Za-z_]+)\s*\]")
_STRING = re.compile(r"""\s*([A-Za-z_]+)\s*=\s*["']([^"']*)["']""")


def loose_settings(path: str) -> tuple[Path, Address | None]:
    """``spool.dir`` (resolved as the recorder resolves it) and ``metrics.listen`` from a
    config file that may be invalid now (a bad edit the running recorder refused): from
    the TOML if it still parses, else line by line; defaults for what cannot be read."""
    values: dict[tuple[str, str], Any] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        text = ""
    try:
        doc = tomllib.loads(text)
        for section in ("spool", "metrics"):
            table = doc.get(section)
            if isinstance(table, dict):
                values.update({(section, k): v for k, v in table.items()})
    except tomllib.TOMLDecodeError:
        section = ""
        for line in text.splitlines():
            if header := _SECTION.match(line):
                section = header.group(1)
            elif pair := _STRING.match(line):
                values[(section, pair.group(1))] = pair.group(2)
    spool = values.get(("spool", "dir"))
    spool_dir = Config(path=path).resolve(spool if isinstance(spool, str) else "spool")
    try:
        listen = Address.parse(str(values[("metrics", "listen")]))
    except (KeyError, ValueError):
        listen = None
    return spool_dir, listen
