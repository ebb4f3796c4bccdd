"""Human-readable reports from what a sink stored (``qos-recorder gaps``)."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from typing import Any

from .config import Address, Config
from .exceptions import ConfigError
from .feed import DEPTH, SNAPSHOTS, TRADES
from .gaps import GapUnit
from .protocol import NS
from .schema import GAPS
from .store import Reader, reader_for

GAP_COLUMNS = (
    "ts",
    "end_ts",
    "code",
    "stream",
    "cause",
    "status",
    "backfilled",
    "missing",
    "missing_unit",
    "detail",
    "lost_volume",
    "lost_trades",
)


def parse_time(text: str, option: str = "--since") -> int:
    """``2026-11-26``, ``2026-11-26T14:30`` (UTC unless an offset is given) or unix seconds,
    as nanoseconds."""
    try:
        return int(float(text) * NS)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is not a time such as 2026-11-26T14:30 or unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * NS)


def read_gaps(source: Config | Reader, since_ns: int) -> list[tuple[Any, ...]]:
    """The gaps stored since ``since_ns`` (in the config's store, or any reader), oldest
    first, ``ts``/``end_ts`` in nanoseconds, columns as :data:`GAP_COLUMNS`."""
    if isinstance(source, Config):
        if source.sink.kind == "null":
            return []
        source = reader_for(source)
    pick = [GAPS.names.index(name) for name in GAP_COLUMNS]
    return [tuple(row[i] for i in pick) for row in source.gaps(since_ns, 2**63 - 1)]


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / NS, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(ns: float) -> str:
    """Seconds as whole seconds, the same way in every column (``41s``)."""
    return f"{ns / NS:.0f}s"


def _missing(missing: float | None, unit: str | None) -> str:
    if not missing:
        return "-"
    if unit == GapUnit.SECONDS:
        return _span(missing * NS)
    return f"{missing:g} {unit or ''}".strip()


def _backfilled(stream: str, n: int | None) -> str:
    """What a backfill brought (``stream``: the row's text): trades and bars are counted;
    depth and snapshots have no history, so a backfill there refreshes the current state."""
    if not n:
        return "-"
    if stream in (DEPTH.key, SNAPSHOTS.key):
        return "state refreshed"
    return f"{n} {'trades' if stream == TRADES.key else 'bars'}"


def format_gaps(rows: list[tuple[Any, ...]], now_ns: int | None = None) -> str:
    """An aligned table, one gap a line, with a count per status at the end. A gap that
    still lasts shows how long it has lasted so far (``open 42s``)."""
    if not rows:
        return "no gaps"
    now = time.time_ns() if now_ns is None else now_ns
    header = (
        "start (UTC)",
        "length",
        "code",
        "stream",
        "cause",
        "status",
        "backfilled",
        "not recovered",
        "lost volume",
    )
    lines = [header]
    counts: dict[str, int] = {}
    for row in rows:
        ts, end, code, stream, cause, status, backfilled, missing, unit, _, lost_volume, _ = row
        counts[status] = counts.get(status, 0) + 1
        length = _span(end - ts) if end is not None else f"open {_span(now - ts)}"
        volume = "-" if lost_volume is None else f"{lost_volume:g}"
        lines.append(
            (
                _time(ts),
                length,
                code,
                stream,
                cause,
                status,
                _backfilled(stream, backfilled),
                _missing(missing, unit),
                volume,
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    out.append(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return "\n".join(out)


def fetch_health(listen: Address, timeout: float = 5.0) -> tuple[bool, dict[str, Any]]:
    """Ask a running recorder's ``/healthz``; not running counts as unhealthy."""
    url = f"http://{listen}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return True, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return False, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        return False, {"status": "not running", "reasons": [f"{url}: {exc}"]}


def format_health(h: dict[str, Any]) -> str:
    """A few lines a person reads at a glance."""
    lines = [f"status: {h.get('status')}"]
    lines += [f"  - {reason}" for reason in h.get("reasons", [])]
    if "frames" not in h:
        return "\n".join(lines)
    since = h.get("connected_since")
    lines.append(f"connected since: {_time(int(since * NS)) + ' UTC' if since else '-'}")
    frames = ", ".join(f"{k} {v}" for k, v in h["frames"].items())
    window = h.get("frames_rate_window_seconds", 0)
    rate = (
        f"{h.get('frames_per_second', 0)}/s over the last {window} s"
        if window
        else "rate: measuring"
    )
    lines.append(f"frames: {frames} ({rate})")
    age = h.get("last_frame_age_seconds")
    lines.append(
        f"last frame: {'-' if age is None else f'{age:.1f} s ago'}; "
        f"reconnects: {h.get('reconnects', 0)}"
    )
    if h.get("config_reload_error"):
        lines.append(f"config reload failed: {h['config_reload_error']}")
    rows = ", ".join(f"{k} {v}" for k, v in h.get("rows_written", {}).items()) or "-"
    lines.append(f"rows written: {rows}")
    lines.append(
        f"spool: {h.get('spool_bytes', 0)} bytes in {h.get('spool_segments', 0)} "
        f"segments; open gaps: {h.get('open_gaps', 0)}"
        + (
            f" (oldest {h['oldest_open_gap_age_seconds']:.0f} s)"
            if h.get("oldest_open_gap_age_seconds") is not None
            else ""
        )
        + "; "
        f"backfilled rows: {h.get('backfilled_rows', 0)}"
    )
    return "\n".join(lines)
