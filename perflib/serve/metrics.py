"""Prometheus metrics of one service instance, in its own registry.

Job counts and durations come from the store at scrape time (every writer's jobs, not only those
posted here); the estimate latency and the records this service took are counted as they happen.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.record import LIVE_STATUSES

log = logging.getLogger(__name__)

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


class ServiceMetrics:
    """The registry and the instruments the endpoints update."""

    def __init__(self, store: Store):
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
        self.registry.register(StoreCollector(store))
