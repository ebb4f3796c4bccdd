"""Prometheus metrics and the health check, served on ``metrics.listen``.

Both render a :class:`~recorder.status.Status` taken when Prometheus scrapes or a client
asks, so recording pays nothing for metrics. Batch sizes and flush latencies are histograms
observed once per batch. ``/healthz`` answers 200 while the session is connected,
subscribed and fresh, and 503 with the reasons otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .batching import Batch
from .config import MetricsConfig
from .gaps import ENDED
from .schema import MARKET_TABLES
from .status import Status


class Metrics:
    """The recorder's registry: scraped counters plus two histograms."""

    def __init__(self, status: Callable[[], Status], limits: MetricsConfig) -> None:
        self.status = status
        self.limits = limits
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
        self.registry.register(_Scraped(status))

    def on_flush(self, batch: Batch, seconds: float) -> None:
        """Called by the writer thread after each acknowledged batch."""
        self.batch_rows.observe(len(batch))
        self.flush_seconds.observe(seconds)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, summary = self.status().health(self.limits)
        return web.Response(
            body=orjson.dumps(summary), status=200 if ok else 503, content_type="application/json"
        )


class _Scraped(Collector):
    """Renders the recorder's status at scrape time."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        frames = CounterMetricFamily("qos_frames", "Frames received per stream", labels=["stream"])
        for stream, n in st.frames.items():
            frames.add_metric([stream.value], n)
        yield frames
        yield CounterMetricFamily(
            "qos_decode_errors", "Frames that could not be decoded", value=st.decode_errors
        )
        yield CounterMetricFamily(
            "qos_dead_letter_dropped",
            "Undecodable frames not written to the dead-letter file (full or unwritable)",
            value=st.dead_letter_dropped,
        )
        yield CounterMetricFamily(
            "qos_unsubscribed_frames",
            "Frames for codes never subscribed, dropped (one series: their codes are not kept)",
            value=st.unsubscribed_frames,
        )
        yield CounterMetricFamily(
            "qos_rejected_requests", "Commands and requests refused", value=st.rejected_requests
        )
        rest = CounterMetricFamily(
            "qos_rest_requests",
            "REST requests made, retries included, by purpose",
            labels=["purpose"],
        )
        for purpose, n in st.rest_requests_by_purpose.items():
            rest.add_metric([purpose], n)
        yield rest
        rows = CounterMetricFamily(
            "qos_rows_written", "Rows acknowledged by the sink", labels=["table"]
        )
        for table, n in st.rows_written.items():
            rows.add_metric([table], n)
        yield rows
        yield GaugeMetricFamily(
            "qos_writer_queue_batches", "Batches waiting for the writer", value=st.writer_queue
        )
        yield GaugeMetricFamily(
            "qos_batcher_rows", "Rows collected for the next batch", value=st.batcher_rows
        )
        yield GaugeMetricFamily("qos_spool_bytes", "Bytes in the spool", value=st.spool_bytes)
        yield GaugeMetricFamily(
            "qos_spool_segments", "Segment files in the spool", value=st.spool_segments
        )
        yield GaugeMetricFamily(
            "qos_spool_max_bytes",
            "The spool's size limit (spool.max_bytes)",
            value=st.spool_max_bytes,
        )
        yield GaugeMetricFamily(
            "qos_rest_budget_remaining",
            "REST requests the plan's per-minute budget allows now",
            value=st.rest_budget_remaining,
        )
        gaps = CounterMetricFamily(
            "qos_gaps",
            "Gaps backfilled as far as the API allows, by stream and how they ended",
            labels=["stream", "status"],
        )
        for table in MARKET_TABLES:
            for status in ENDED:
                gaps.add_metric([table, status], st.gap_outcomes.get((table, status), 0))
        yield gaps
        yield CounterMetricFamily(
            "qos_spool_rejected_rows",
            "Rows a full spool could not keep",
            value=st.spool_rejected_rows,
        )
        yield CounterMetricFamily(
            "qos_lost_rows", "Rows neither written nor kept", value=st.lost_rows
        )
        yield CounterMetricFamily(
            "qos_rejected_rows",
            "Rows the sink refused for their content, kept in spool/rejected.ndjson",
            value=st.rejected_rows,
        )
        yield CounterMetricFamily(
            "qos_spool_damaged_entries",
            "Damaged spool entries skipped at a drain (segments kept as *.damaged)",
            value=st.spool_damaged_entries,
        )
        yield GaugeMetricFamily(
            "qos_sink_write_stuck_seconds",
            "How long the database write in flight has run, once past write_stuck_after (else 0)",
            value=st.write_stuck_seconds,
        )
        yield GaugeMetricFamily(
            "qos_sink_tables_suspended",
            "Tables whose WAL QuestDB suspended (their rows are not applied; status names them)",
            value=len(st.suspended_tables),
        )
        yield CounterMetricFamily(
            "qos_sink_file_replaced",
            "Times the SQLite file was deleted or replaced under the recorder (reopened)",
            value=st.sink_replaced,
        )
        yield CounterMetricFamily(
            "qos_sink_failures", "Writes the sink did not acknowledge", value=st.sink_failures
        )
        yield CounterMetricFamily(
            "qos_writer_crashes",
            "Unexpected exceptions the writer thread's supervisor caught",
            value=st.writer_crashes,
        )
        yield GaugeMetricFamily(
            "qos_writer_failed",
            "1 once the writer gave up (the process then exits non-zero)",
            value=1 if st.writer_failed else 0,
        )
        yield CounterMetricFamily("qos_reconnects", "Sessions that ended", value=st.reconnects)
        yield CounterMetricFamily(
            "qos_config_reloads", "Config reloads applied (SIGHUP)", value=st.reloads
        )
        yield GaugeMetricFamily(
            "qos_config_reload_failed",
            "1 while the last reload was refused (the running config is kept)",
            value=1 if st.reload_error else 0,
        )
        yield GaugeMetricFamily(
            "qos_connected", "1 while the session is connected", value=1 if st.connected else 0
        )
        yield GaugeMetricFamily(
            "qos_key_refused",
            "1 while the service refuses the API key (HTTP 401/403 at the handshake)",
            value=1 if st.key_refused or st.rest_key_refused else 0,
        )
        if st.heartbeat_rtt is not None:
            yield GaugeMetricFamily(
                "qos_heartbeat_rtt_seconds", "Last heartbeat round trip", value=st.heartbeat_rtt
            )
        yield GaugeMetricFamily(
            "qos_open_gaps", "Gaps still lasting or not backfilled yet", value=st.open_gaps
        )
        yield GaugeMetricFamily(
            "qos_oldest_open_gap_age_seconds",
            "Seconds since the oldest gap that still lasts was found (0: none)",
            value=st.oldest_open_gap_age() or 0.0,
        )
        yield CounterMetricFamily(
            "qos_backfilled_rows", "Rows recovered by backfill", value=st.backfilled_rows
        )
        yield _ages("qos_last_frame_age_seconds", "Seconds since the last frame", st.last_frame, st)
        yield _ages(
            "qos_last_trade_age_seconds", "Seconds since the last trade received", st.last_trade, st
        )
        market = GaugeMetricFamily(
            "qos_market_open",
            "1 while the code's market is open, 0 while closed (absent: hours unknown)",
            labels=["code"],
        )
        for code, is_open in st.market_open.items():
            if is_open is not None:
                market.add_metric([code], 1 if is_open else 0)
        yield market


def _ages(name: str, doc: str, times: Mapping[str, int], st: Status) -> Metric:
    """A gauge per code: seconds from each receive time to the status's ``now``."""
    family = GaugeMetricFamily(name, doc, labels=["code"])
    for code, seen in times.items():
        family.add_metric([code], (st.now - seen) / 1e9)
    return family
