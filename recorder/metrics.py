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
    """Renders the recorder's status at scrape time, one family of metrics after another
    (the order of the scrape text)."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        for family in (_traffic, _queues, _losses, _writing, _session, _gaps_and_freshness):
            yield from family(st)


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, samples: Mapping[str, float]
) -> Metric:
    """``family`` with one sample per label value of ``samples``."""
    for label, value in samples.items():
        family.add_metric([label], value)
    return family


def _traffic(st: Status) -> Iterator[Metric]:
    """What came in (frames, refusals) and what went out (REST requests, rows)."""
    yield _labelled(
        CounterMetricFamily("qos_frames", "Frames received per stream", labels=["stream"]),
        {stream.value: n for stream, n in st.frames.items()},
    )
    yield _counter("qos_decode_errors", "Frames that could not be decoded", st.decode_errors)
    yield _counter(
        "qos_dead_letter_dropped",
        "Undecodable frames not written to the dead-letter file (full or unwritable)",
        st.dead_letter_dropped,
    )
    yield _counter(
        "qos_unsubscribed_frames",
        "Frames for codes never subscribed, dropped (one series: their codes are not kept)",
        st.unsubscribed_frames,
    )
    yield _counter("qos_rejected_requests", "Commands and requests refused", st.rejected_requests)
    yield _labelled(
        CounterMetricFamily(
            "qos_rest_requests",
            "REST requests made, retries included, by purpose",
            labels=["purpose"],
        ),
        st.rest_requests_by_purpose,
    )
    yield _labelled(
        CounterMetricFamily("qos_rows_written", "Rows acknowledged by the sink", labels=["table"]),
        st.rows_written,
    )


def _queues(st: Status) -> Iterator[Metric]:
    """What waits: the writer queue, the next batch, the spool, the REST budget."""
    yield _gauge("qos_writer_queue_batches", "Batches waiting for the writer", st.writer_queue)
    yield _gauge("qos_batcher_rows", "Rows collected for the next batch", st.batcher_rows)
    yield _gauge("qos_spool_bytes", "Bytes in the spool", st.spool_bytes)
    yield _gauge("qos_spool_segments", "Segment files in the spool", st.spool_segments)
    yield _gauge(
        "qos_spool_max_bytes", "The spool's size limit (spool.max_bytes)", st.spool_max_bytes
    )
    yield _gauge(
        "qos_rest_budget_remaining",
        "REST requests the plan's per-minute budget allows now",
        st.rest_budget_remaining,
    )


def _losses(st: Status) -> Iterator[Metric]:
    """How gaps ended, and rows not written where they belong."""
    gaps = CounterMetricFamily(
        "qos_gaps",
        "Gaps backfilled as far as the API allows, by stream and how they ended",
        labels=["stream", "status"],
    )
    for table in MARKET_TABLES:
        for status in ENDED:
            gaps.add_metric([table, status], st.gap_outcomes.get((table, status), 0))
    yield gaps
    yield _counter(
        "qos_spool_rejected_rows", "Rows a full spool could not keep", st.spool_rejected_rows
    )
    yield _counter("qos_lost_rows", "Rows neither written nor kept", st.lost_rows)
    yield _counter(
        "qos_rejected_rows",
        "Rows the sink refused for their content, kept in spool/rejected.ndjson",
        st.rejected_rows,
    )
    yield _counter(
        "qos_spool_damaged_entries",
        "Damaged spool entries skipped at a drain (segments kept as *.damaged)",
        st.spool_damaged_entries,
    )


def _writing(st: Status) -> Iterator[Metric]:
    """The database and the writer thread."""
    yield _gauge(
        "qos_sink_write_stuck_seconds",
        "How long the database write in flight has run, once past write_stuck_after (else 0)",
        st.write_stuck_seconds,
    )
    yield _gauge(
        "qos_sink_tables_suspended",
        "Tables whose WAL QuestDB suspended (their rows are not applied; status names them)",
        len(st.suspended_tables),
    )
    yield _counter(
        "qos_sink_file_replaced",
        "Times the SQLite file was deleted or replaced under the recorder (reopened)",
        st.sink_replaced,
    )
    yield _counter("qos_sink_failures", "Writes the sink did not acknowledge", st.sink_failures)
    yield _counter(
        "qos_writer_crashes",
        "Unexpected exceptions the writer thread's supervisor caught",
        st.writer_crashes,
    )
    yield _gauge(
        "qos_writer_failed",
        "1 once the writer gave up (the process then exits non-zero)",
        1 if st.writer_failed else 0,
    )


def _session(st: Status) -> Iterator[Metric]:
    """The upstream session, the config reloads and the key."""
    yield _counter("qos_reconnects", "Sessions that ended", st.reconnects)
    yield _counter("qos_config_reloads", "Config reloads applied (SIGHUP)", st.reloads)
    yield _gauge(
        "qos_config_reload_failed",
        "1 while the last reload was refused (the running config is kept)",
        1 if st.reload_error else 0,
    )
    yield _gauge("qos_connected", "1 while the session is connected", 1 if st.connected else 0)
    yield _gauge(
        "qos_key_refused",
        "1 while the service refuses the API key (HTTP 401/403 at the handshake)",
        1 if st.key_refused or st.rest_key_refused else 0,
    )
    if st.heartbeat_rtt is not None:
        yield _gauge("qos_heartbeat_rtt_seconds", "Last heartbeat round trip", st.heartbeat_rtt)


def _gaps_and_freshness(st: Status) -> Iterator[Metric]:
    """Gaps still open, rows recovered, how fresh each code is and whether its market is open."""
    yield _gauge("qos_open_gaps", "Gaps still lasting or not backfilled yet", st.open_gaps)
    yield _gauge(
        "qos_oldest_open_gap_age_seconds",
        "Seconds since the oldest gap that still lasts was found (0: none)",
        st.oldest_open_gap_age() or 0.0,
    )
    yield _counter("qos_backfilled_rows", "Rows recovered by backfill", st.backfilled_rows)
    yield _ages("qos_last_frame_age_seconds", "Seconds since the last frame", st.last_frame, st)
    yield _ages(
        "qos_last_trade_age_seconds", "Seconds since the last trade received", st.last_trade, st
    )
    yield _labelled(
        GaugeMetricFamily(
            "qos_market_open",
            "1 while the code's market is open, 0 while closed (absent: hours unknown)",
            labels=["code"],
        ),
        {
            code: 1 if is_open else 0
            for code, is_open in st.market_open.items()
            if is_open is not None
        },
    )


def _ages(name: str, doc: str, times: Mapping[str, int], st: Status) -> Metric:
    """A gauge per code: seconds from each receive time to the status's ``now``."""
    family = GaugeMetricFamily(name, doc, labels=["code"])
    for code, seen in times.items():
        family.add_metric([code], (st.now - seen) / 1e9)
    return family
