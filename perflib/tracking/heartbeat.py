"""Live GPU readings for the dashboard: a tracked process reports its sampler's latest reading.

A daemon thread per (process, database) wakes every ``MIN_INTERVAL_S`` seconds, turns the
sampler's latest :class:`~perflib.tracking.sampler.ResourceSample` into one heartbeat per GPU (or
one for the host when NVML has no GPU: CPU and RAM only) and upserts them. It never touches the
pipeline's thread, and a database that cannot take the write costs one INFO line, never a
failure: the next beat simply tries again (a heartbeat is a reading of now, not history worth
keeping).
"""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone
from typing import Any

import psutil

from perflib.config import safe_url
from perflib.store import Store
from perflib.store.heartbeats import MIN_INTERVAL_S, write_heartbeats
from perflib.threads import PerProcess, PeriodicThread
from perflib.tracking.sampler import BYTES_PER_MB, ResourceSample, ResourceSampler

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()
RAM_TOTAL_MB = psutil.virtual_memory().total / BYTES_PER_MB


def heartbeats_of(sample: ResourceSample, hostname: str = HOSTNAME) -> list[dict[str, Any]]:
    """One heartbeat per GPU of `sample`, or a single host heartbeat when it has none."""
    host = {"hostname": hostname, "cpu_pct": sample.cpu_pct, "ram_used_mb": sample.ram_used_mb,
            "ram_total_mb": RAM_TOTAL_MB}
    if not sample.gpus:
        return [{**host, "gpu_index": None}]
    return [{**host, "gpu_index": index, "gpu_name": reading.name,
             "gpu_util_pct": reading.gpu_util_pct, "vram_used_mb": reading.vram_used_mb,
             "vram_total_mb": reading.vram_total_mb, "power_w": reading.power_w,
             "temperature_c": reading.temperature_c}
            for index, reading in sorted(sample.gpus.items())]


class HeartbeatPublisher:
    """Writes the sampler's latest reading to `store` every `interval` seconds on a daemon
    thread, until :meth:`stop`."""

    def __init__(self, store: Store, sampler: ResourceSampler, interval: float = MIN_INTERVAL_S,
                 hostname: str = HOSTNAME):
        self.store = store
        self.sampler = sampler
        self.interval = interval
        self.hostname = hostname
        self._thread = PeriodicThread(self.beat, interval, "perflib-heartbeat")
        self._failing = False

    def start(self) -> "HeartbeatPublisher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    def beat(self) -> int:
        """Write the latest reading now; returns the rows written (0 when there was no reading
        yet, the rows were fresh enough, or the database could not take them)."""
        sample = self.sampler.latest
        if sample is None:
            return 0
        try:
            written = write_heartbeats(self.store, heartbeats_of(sample, self.hostname),
                                       datetime.now(timezone.utc), self.interval)
        except Exception as exc:  # down, locked, read-only: the next beat tries again
            if not self._failing:  # at INFO: the job writer warns about an outage, once
                log.info("perflib could not write GPU heartbeats to %s (%s); retrying every "
                         "%g s", safe_url(self.store.url), type(exc).__name__, self.interval)
            self._failing = True
            return 0
        if self._failing:
            log.info("perflib GPU heartbeats are written again")
        self._failing = False
        return written


_publishers: PerProcess[HeartbeatPublisher] = PerProcess()


def heartbeat_for(store: Store, sampler: ResourceSampler) -> HeartbeatPublisher | None:
    """The one running publisher of this process for `store`'s database, started on first use
    (None when ``PERFLIB_HEARTBEAT_SECONDS`` is 0)."""
    interval = store.config.heartbeat_seconds
    if not interval:
        return None
    key = (store.url.render_as_string(hide_password=False), store.config.db_schema)
    return _publishers.get(key, lambda: HeartbeatPublisher(store, sampler, interval).start())


def stop_all() -> None:
    """Stop every publisher of this process (tests, which open many databases, call this)."""
    for publisher in _publishers.clear():
        publisher.stop()
