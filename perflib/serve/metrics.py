"""Prometheus metrics of one service instance, in its own registry.

Job counts and durations come from the store at scrape time (every writer's jobs, not only those
posted here), and so do the autoscaling signal per pool of GPUs (:mod:`perflib.queue.autoscale`),
live estimate accuracy, open alerts and those waiting for delivery to Alertmanager; the estimate
latency, the records this service took and its own deliveries of alerts are counted as they
happen.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

from perflib.analysis.alerts import SEVERITIES
from perflib.prediction.metrics import WITHIN, within_share
from perflib.queue.autoscale import POOL_LABEL_CAP, RECENT_SECONDS, fold_pools, snapshot_signals
from perflib.queue.snapshot import LiveQueue
from perflib.record import LIVE_STATUSES, PIPELINE_TYPES
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_alerts as alerts

log = logging.getLogger(__name__)

ACCURACY_DAYS = 7  # the live accuracy gauge reads the jobs started in this many days
ESTIMATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StoreCollector:
    """Jobs per pipeline and status with their total seconds, and the live queue's length."""

    def __init__(self, store: Store):
        self.store = store

    def describe(self):
        # Named here so registering the collector does not query the database.
        return self._families()

    def collect(self):
        durations, queue, up = self._families()
        query = (sa.select(jobs.c.pipeline_type, jobs.c.status, sa.func.count().label("jobs"),
                           sa.func.sum(jobs.c.total_seconds).label("seconds"))
                 .group_by(jobs.c.pipeline_type, jobs.c.status))
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(query).all()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        live = dict.fromkeys(LIVE_STATUSES, 0)
        for row in rows:
            durations.add_metric([row.pipeline_type, row.status], row.jobs, row.seconds or 0.0)
            if row.status in live:
                live[row.status] += row.jobs
        for status, count in live.items():
            queue.add_metric([status], count)
        up.add_metric([], 1)
        return [durations, queue, up]

    @staticmethod
    def _families():
        return (
            SummaryMetricFamily("perflib_job_total_seconds",
                                "Jobs in the store and their total seconds, by pipeline and "
                                "status", labels=["pipeline_type", "status"]),
            GaugeMetricFamily("perflib_queue_jobs", "Live jobs: queued or running",
                              labels=["status"]),
            GaugeMetricFamily("perflib_database_up", "1 when the store answered the scrape"),
        )


class PoolCollector:
    """The autoscaling signal per pool (pipeline_type, gpu_name): predicted backlog seconds,
    desired GPUs and the GPUs seen lately, from the live queue's snapshot (the one that
    estimate-time and the dashboard read). A pool is reported while it has live work (then
    its series go), at most POOL_LABEL_CAP pools by name (the rest as ``gpu_name="other"``)."""

    def __init__(self, live_queue: LiveQueue, target_wait_seconds: float):
        if not target_wait_seconds > 0:
            raise ValueError(f"the target queue wait (PERFLIB_THRESHOLD_QUEUE_SECONDS) must be "
                             f"positive, got {target_wait_seconds!r}")
        self.live_queue = live_queue
        self.target_wait_seconds = target_wait_seconds

    def describe(self):
        return self._families()

    def collect(self):
        backlog, desired, gpus = self._families()
        try:
            signals = fold_pools(snapshot_signals(self.live_queue, self.target_wait_seconds))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: no autoscaling signal, database unavailable (%s)",
                        type(exc).__name__)
            return []
        for signal in signals:
            labels = [signal.pipeline_type, signal.gpu_name]
            backlog.add_metric(labels, signal.backlog_seconds)
            desired.add_metric(labels, signal.desired_gpus)
            gpus.add_metric(labels, signal.gpus)
        return [backlog, desired, gpus]

    def _families(self):
        labels = ["pipeline_type", "gpu_name"]
        return (
            GaugeMetricFamily(
                "perflib_backlog_predicted_seconds",
                "Predicted seconds of the pool's queued jobs plus what its running jobs have "
                "left (a job naming no GPU counts in its pipeline's pool with the most GPUs "
                f"lately; beyond {POOL_LABEL_CAP} pools, the rest add up as gpu_name=\"other\")",
                labels=labels),
            GaugeMetricFamily(
                "perflib_desired_gpus",
                f"Fewest GPUs that start every queued job of the pool within "
                f"{self.target_wait_seconds:g} s (FIFO over predicted seconds), never fewer "
                f"than its running jobs; 0 when the pool has no live work, at least 1 when it "
                f"has any", labels=labels),
            GaugeMetricFamily(
                "perflib_pool_gpus",
                f"GPUs that started one of the pool's jobs in the last {RECENT_SECONDS:g} s or "
                f"run one now", labels=labels),
        )


class AlertCollector:
    """Open (unacknowledged) alerts by severity, and those a delivery to Alertmanager left
    pending, from the table: every process's deliveries (``perflib maintain`` too), not only
    this service's."""

    def __init__(self, store: Store):
        self.store = store

    def describe(self):
        return self._families()

    def collect(self):
        open_, pending = self._families()
        query = (sa.select(alerts.c.severity, sa.func.count().label("alerts"),
                           sa.func.sum(sa.case((alerts.c.delivery == "pending", 1),
                                               else_=0)).label("pending"))
                 .where(alerts.c.acknowledged.is_(False)).group_by(alerts.c.severity))
        try:
            with self.store.engine.connect() as conn:
                rows = {row.severity: row for row in conn.execute(query)}
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: no alert counts, database unavailable (%s)",
                        type(exc).__name__)
            return []
        for severity in SEVERITIES:
            open_.add_metric([severity], rows[severity].alerts if severity in rows else 0)
        pending.add_metric([], sum(int(row.pending or 0) for row in rows.values()))
        return [open_, pending]

    @staticmethod
    def _families():
        return (GaugeMetricFamily("perflib_alerts_open", "Alerts not acknowledged, by severity",
                                  labels=["severity"]),
                GaugeMetricFamily("perflib_alerts_undelivered",
                                  "Open alerts a delivery to Alertmanager could not send (by "
                                  "any perflib process); they go again at the next check"))


class AccuracyCollector:
    """Live accuracy per pipeline: the share of its latest `jobs` successful estimated jobs
    (started in the last ACCURACY_DAYS) that finished within ±20% of their estimate (the
    retraining rule's measure); no series for a pipeline without such jobs."""

    def __init__(self, store: Store, jobs: int):
        self.store = store
        self.jobs = jobs

    def describe(self):
        return self._families()

    def collect(self):
        accuracy, counted = self._families()
        outcome = sa.func.coalesce(jobs.c.processing_seconds, jobs.c.total_seconds)
        since = datetime.now(timezone.utc) - timedelta(days=ACCURACY_DAYS)
        try:
            estimated = (jobs.c.status == "success") & (jobs.c.predicted_seconds > 0) \
                & (outcome > 0) & (jobs.c.started_at >= since)
            with self.store.engine.connect() as conn:
                for pipeline in PIPELINE_TYPES:  # an index range each, never a scan
                    rows = conn.execute(sa.select(outcome, jobs.c.predicted_seconds).where(
                        estimated, jobs.c.pipeline_type == pipeline).order_by(
                        jobs.c.started_at.desc()).limit(self.jobs)).all()
                    if rows:
                        actual, predicted = zip(*rows)
                        accuracy.add_metric([pipeline], within_share(actual, predicted))
                        counted.add_metric([pipeline], len(rows))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: no accuracy, database unavailable (%s)", type(exc).__name__)
            return []
        return [accuracy, counted]

    def _families(self):
        return (GaugeMetricFamily("perflib_estimate_accuracy",
                                  f"Share of the pipeline's latest {self.jobs} successful "
                                  f"estimated jobs of the last {ACCURACY_DAYS} days that "
                                  f"finished within ±{WITHIN:.0%} of their "
                                  "estimate", labels=["pipeline_type"]),
                GaugeMetricFamily("perflib_estimate_accuracy_jobs",
                                  "Jobs perflib_estimate_accuracy is measured over",
                                  labels=["pipeline_type"]))


class ServiceMetrics:
    """The registry and the instruments the endpoints update."""

    def __init__(self, live_queue: LiveQueue, target_wait_seconds: float,
                 accuracy_jobs: int = 30, alertmanagers: tuple[str, ...] = ()):
        self.registry = CollectorRegistry()
        self.estimate_seconds = Histogram(
            "perflib_estimate_seconds", "Time to answer estimate-time",
            buckets=ESTIMATE_BUCKETS, registry=self.registry)
        self.records = Counter(
            "perflib_api_records", "Job records taken by record-metrics, by outcome "
            "(stored, already_stored, spooled)", ["outcome"], registry=self.registry)
        self.dead_letters = Counter(
            "perflib_dead_letter_records", "Job records the database refused for what they "
            "hold, kept in the spool folder's dead-letter file and never retried",
            registry=self.registry)
        self.alert_deliveries = Counter(
            "perflib_alert_deliveries", "Deliveries of alerts to each Alertmanager by this "
            "service, by outcome (delivered, failed: after its retries)",
            ["alertmanager", "outcome"], registry=self.registry)
        for alertmanager in alertmanagers:  # at 0 from the start, so a rate() sees the first
            for outcome in ("delivered", "failed"):
                self.alert_deliveries.labels(alertmanager, outcome)
        self.registry.register(StoreCollector(live_queue.store))
        self.registry.register(PoolCollector(live_queue, target_wait_seconds))
        self.registry.register(AlertCollector(live_queue.store))
        self.registry.register(AccuracyCollector(live_queue.store, accuracy_jobs))

    def count_delivery(self, alertmanager: str, delivered: bool) -> None:
        self.alert_deliveries.labels(alertmanager, "delivered" if delivered else "failed").inc()
