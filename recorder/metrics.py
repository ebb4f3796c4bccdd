"""Prometheus metrics and the health check, served on ``metrics.listen``.

The hot path only bumps plain counters on :class:`~recorder.daemon.Stats`; a collector reads
them when Prometheus scrapes, so recording pays nothing for metrics. Batch sizes and flush
latencies are histograms observed once per batch. ``/healthz`` answers 200 while the
session is connected, subscribed and fresh, and 503 with the reasons otherwise.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .batching import Batch
from .exceptions import ConfigError

if TYPE_CHECKING:
    from .daemon import Recorder

_STREAMS = {"T": "trades", "D": "depth", "S": "snapshots", "K": "klines"}


class Metrics:
    """The recorder's registry: scraped counters plus two histograms."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.registry = CollectorRegistry(auto_describe=False)
        self.batch_rows = Histogram(
            "qos_batch_rows",
            "Rows per batch written to the sink",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
            registry=self.registry,
        )
        self.flush_seconds = Histogram(
            "qos_flush_seconds",
            "Seconds from handing a batch to the sink to its acknowledgement",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_Scraped(recorder))
        self._rates: deque[tuple[float, int]] = deque(maxlen=13)

    def on_flush(self, batch: Batch, seconds: float) -> None:
        """Called by the writer thread after each acknowledged batch."""
        self.batch_rows.observe(len(batch))
        self.flush_seconds.observe(seconds)

    def sample(self) -> None:
        """Remember the frame total every few seconds, for the rate in ``/healthz``."""
        self._rates.append((time.monotonic(), sum(self.recorder.stats.frames.values())))

    def rate(self) -> float:
        if len(self._rates) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rates[0], self._rates[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the recorder is healthy, and a summary for ``/healthz`` and ``status``."""
        rec = self.recorder
        stats, cfg = rec.stats, rec.config.metrics
        last = max(stats.last_frame.values(), default=None)
        age = None if last is None else (time.time_ns() - last) / 1e9
        spool_fraction = rec.spool.total_bytes / rec.config.spool.max_bytes
        reasons = []
        if not stats.connected:
            reasons.append(f"disconnected: {stats.last_disconnect_reason or 'not yet connected'}")
        elif not stats.subscribed:
            reasons.append("connected but not subscribed yet")
        if age is None or age > cfg.stale_after:
            reasons.append(
                "no frame received" if age is None else f"stale: last frame {age:.0f} s ago"
            )
        if spool_fraction > cfg.spool_warn_fraction:
            reasons.append(f"spool {spool_fraction:.0%} full")
        if not rec.writer.stats.healthy:
            reasons.append(f"database unavailable: {rec.writer.stats.last_error}")
        summary = {
            "status": "ok" if not reasons else "unhealthy",
            "reasons": reasons,
            "connected_since": stats.connected_since,
            "frames": {_STREAMS[k]: v for k, v in stats.frames.items()},
            "frames_per_second": round(self.rate(), 1),
            "last_frame_age_seconds": None if age is None else round(age, 3),
            "reconnects": stats.reconnects,
            "rows_written": dict(rec.writer.stats.rows),
            "spool_bytes": rec.spool.total_bytes,
            "spool_segments": rec.spool.segments,
            "open_gaps": rec.open_gaps(),
            "backfilled_rows": rec.backfiller.rows,
            "decode_errors": stats.decode_errors,
            "lost_rows": rec.writer.stats.lost_rows,
        }
        return not reasons, summary

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, summary = self.health()
        return web.Response(
            body=orjson.dumps(summary), status=200 if ok else 503, content_type="application/json"
        )


class _Scraped(Collector):
    """Reads the recorder's counters at scrape time."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        rec = self.recorder
        stats, wstats = rec.stats, rec.writer.stats
        frames = CounterMetricFamily("qos_frames", "Frames received per stream", labels=["stream"])
        for tp, n in stats.frames.items():
            frames.add_metric([_STREAMS[tp]], n)
        yield frames
        yield CounterMetricFamily(
            "qos_decode_errors", "Frames that could not be decoded", value=stats.decode_errors
        )
        yield CounterMetricFamily(
            "qos_rejected_requests", "Commands and requests refused", value=stats.rejected
        )
        rows = CounterMetricFamily(
            "qos_rows_written", "Rows acknowledged by the sink", labels=["table"]
        )
        for table, n in wstats.rows.items():
            rows.add_metric([table], n)
        yield rows
        yield GaugeMetricFamily(
            "qos_writer_queue_batches", "Batches waiting for the writer", value=rec.writer.pending
        )
        yield GaugeMetricFamily(
            "qos_batcher_rows", "Rows collected for the next batch", value=len(rec.batcher)
        )
        yield GaugeMetricFamily(
            "qos_spool_bytes", "Bytes in the spool", value=rec.spool.total_bytes
        )
        yield GaugeMetricFamily(
            "qos_spool_segments", "Segment files in the spool", value=rec.spool.segments
        )
        yield CounterMetricFamily(
            "qos_spool_rejected_rows",
            "Rows a full spool could not keep",
            value=rec.spool.rejected_rows,
        )
        yield CounterMetricFamily(
            "qos_lost_rows", "Rows neither written nor kept", value=wstats.lost_rows
        )
        yield CounterMetricFamily(
            "qos_sink_failures", "Writes the sink did not acknowledge", value=wstats.failures
        )
        yield CounterMetricFamily("qos_reconnects", "Sessions that ended", value=stats.reconnects)
        yield GaugeMetricFamily(
            "qos_connected", "1 while the session is connected", value=1 if stats.connected else 0
        )
        if stats.heartbeat_rtt is not None:
            yield GaugeMetricFamily(
                "qos_heartbeat_rtt_seconds", "Last heartbeat round trip", value=stats.heartbeat_rtt
            )
        yield GaugeMetricFamily("qos_open_gaps", "Gaps not backfilled yet", value=rec.open_gaps())
        yield CounterMetricFamily(
            "qos_backfilled_rows", "Rows recovered by backfill", value=rec.backfiller.rows
        )
        age = GaugeMetricFamily(
            "qos_last_frame_age_seconds", "Seconds since the last frame", labels=["code"]
        )
        now = time.time_ns()
        for code, seen in stats.last_frame.items():
            age.add_metric([code], (now - seen) / 1e9)
        yield age


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` (or ``"[::1]:9464"``) as host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics.listen: {listen!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)
