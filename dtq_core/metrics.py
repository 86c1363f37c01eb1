"""Prometheus metrics of one worker (``dtq worker --metrics-port``), with the official client.

Attempts are counted in the worker's main process, where every outcome is
recorded, so a worker running jobs in child processes still exposes one set
of metrics. Queue depths are read from the engine at each scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dtq_core.engine import Engine, Stats
from dtq_core.errors import ConfigError, DtqError
from dtq_core.job import Job, JobStatus
from dtq_core.worker import Observer, Worker

log = logging.getLogger("dtq.metrics")

#: The longest a scrape waits for the engine's queue depths (s). Prometheus gives up on a
#: scrape after 10 s by default; a hung Redis held it about 40 s (its socket timeouts and
#: retries), and the worker's own metrics, which need no engine, went with it.
STATS_BUDGET_S = 3.0
#: Attempt durations in seconds: from a no-op job to a long one.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
#: What an attempt's ending is called in ``dtq_jobs_total{outcome=...}``.
OUTCOMES = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.SCHEDULED: "retried",
    JobStatus.DEAD: "dead",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.QUEUED: "lost",
}


class WorkerMetrics(Observer):
    """The metrics of ``worker``, in a registry of their own; attach with ``worker.observers.append``."""

    def __init__(self, worker: Worker, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        #: The port served on, once :func:`serve_metrics` started the server.
        self.port: int | None = None
        self.jobs = Counter(
            "dtq_jobs",
            "Attempts ended, by plugin and outcome (succeeded, failed, retried, dead, cancelled, lost).",
            ["plugin", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "dtq_job_duration_seconds",
            "Time an attempt ran: from its start to its end (waiting in the worker and recording "
            "the outcome left out).",
            ["plugin"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.recovered = Counter(
            "dtq_leases_recovered",
            "Jobs taken back from workers that stopped renewing their lease.",
            ["plugin"],
            registry=self.registry,
        )
        self._gauges(worker)
        self.registry.register(QueueDepths(worker.engine))

    def _gauges(self, worker: Worker) -> None:
        started = time.monotonic()
        uptime = Gauge(
            "dtq_worker_uptime_seconds", "Seconds since the worker started.", registry=self.registry
        )
        uptime.set_function(lambda: time.monotonic() - started)
        in_hand = Gauge(
            "dtq_worker_jobs_in_hand",
            "Jobs this worker holds: running, and prefetched waiting their turn.",
            registry=self.registry,
        )
        in_hand.set_function(lambda: len(worker.in_hand()))
        slots = Gauge("dtq_worker_concurrency", "Jobs this worker runs at once.", registry=self.registry)
        slots.set(worker.concurrency)

    def attempt_ended(self, job: Job, status: JobStatus, duration_s: float | None) -> None:
        """Count the attempt; time it unless its process died."""
        self.jobs.labels(job.plugin, OUTCOMES.get(status, status.value)).inc()
        if duration_s is not None:
            self.duration.labels(job.plugin).observe(duration_s)

    def leases_recovered(self, plugin: str, count: int) -> None:
        """Count jobs taken back from dead workers."""
        self.recovered.labels(plugin).inc(count)


class QueueDepths(Collector):
    """``dtq_queue_jobs{plugin, state}`` and the dead and failed totals, read from the engine per scrape.

    The read runs in a thread of its own and a scrape waits for it at most
    ``budget_s``: past that, or when the engine fails, the scrape goes without these
    (the worker's own metrics still come). A read still out is waited on again by
    the next scrape, not started anew.
    """

    def __init__(self, engine: Engine, budget_s: float = STATS_BUDGET_S) -> None:
        self.engine = engine
        self.budget_s = budget_s
        self._lock = threading.Lock()
        self._reading: Future[Stats] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One engine read per scrape; nothing when the engine cannot be read in time."""
        stats = self._stats()
        if stats is None:
            return
        depths = GaugeMetricFamily(
            "dtq_queue_jobs",
            "Jobs in each plugin's queue by state (running: leased by a worker, prefetched ones too).",
            labels=["plugin", "state"],
        )
        for queue in stats.queues:
            for state in ("waiting", "scheduled", "running"):
                depths.add_metric([queue.plugin, state], getattr(queue, state))
        yield depths
        yield GaugeMetricFamily("dtq_dead_jobs", "Jobs in the dead letters.", value=stats.dead)
        yield GaugeMetricFamily("dtq_failed_jobs", "Failed jobs still kept.", value=stats.failed)

    def _stats(self) -> Stats | None:
        with self._lock:
            reading = self._reading
            if reading is None or reading.done():
                reading = self._reading = Future()
                threading.Thread(target=self._read, args=(reading,), name="dtq-metrics", daemon=True).start()
        try:
            return reading.result(timeout=self.budget_s)
        except FutureTimeout:
            log.warning(
                "queue depths left out of this scrape: the engine did not answer in %.0f s", self.budget_s
            )
        except DtqError as exc:  # the engine is away: the scrape still serves the worker's own metrics
            log.debug("queue depths left out of this scrape: %s", exc)
        except Exception:  # an engine's bug, say a custom engine without stats: not the scrape's end
            log.exception("queue depths left out of this scrape")
        return None

    def _read(self, reading: Future[Stats]) -> None:
        try:
            reading.set_result(self.engine.stats())
        except BaseException as exc:  # handed to the scrape that waits on it
            reading.set_exception(exc)


def serve_metrics(worker: Worker, port: int, host: str = "0.0.0.0") -> WorkerMetrics:  # noqa: S104
    """Attach metrics to ``worker`` and serve them over HTTP on ``host:port`` (0: any free port)."""
    metrics = WorkerMetrics(worker)
    try:
        server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:  # the port is taken, or not ours to bind
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another --metrics-port "
            "(metrics_port, DTQ_METRICS_PORT), or 0 for any free port"
        ) from exc
    worker.observers.append(metrics)
    metrics.port = server.server_port
    # Said, so that a port chosen by the system (--metrics-port 0) can be found.
    log.info("serving metrics on http://%s:%d/metrics", host, metrics.port)
    return metrics
