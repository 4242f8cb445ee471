"""The live dashboard's one payload: a lane per GPU with its running job and latest heartbeat,
the queue with when each job should start and finish, open alerts, 14 days of normalised
generation time per pipeline with its change-points, and how good the recent estimates were.

Everything is read — live rows, heartbeats, stored daily aggregates and alerts — so a wall
screen can poll it every few seconds. The queue comes from the live queue's snapshot
(:class:`perflib.queue.snapshot.LiveQueue`, shared with estimate-time and ``/metrics``): the
only model work is pricing a live job that came without an estimate, once per job (remembered
for a few minutes).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from perflib.analysis.alerts import list_alerts
from perflib.analysis.recent_activity import (busy_seconds_today, normalised_daily_seconds,
                                   recent_estimates, within_share)
from perflib.cache import TtlCache
from perflib.queue.live_jobs import LiveJob
from perflib.queue.snapshot import FLEET_DAYS, LiveQueue
from perflib.record import GpuHeartbeat
from perflib.serve.schemas import one_or_many
from perflib.store import Store
from perflib.store.heartbeats import read_heartbeats
from perflib.store.schema import generation_performance as jobs

TREND_DAYS = 14
RECENT_ESTIMATES = 100
STALE_AFTER_S = 15.0  # three missed heartbeats: the reading is shown as old
SLOW_TTL_S = 60.0  # what changes slowly is read again after 30–60 s
CHANGE_POINT = "trend_change_point"
MAX_HEARTBEATS = 1024  # GPUs in one heartbeat post


# -- the payload --------------------------------------------------------------------------------
class GpuReading(BaseModel):
    """The latest heartbeat of a GPU (GPU fields null where NVML has none)."""

    reported_at: datetime
    age_seconds: float
    stale: bool = Field(description=f"no heartbeat for more than {STALE_AFTER_S:g} s")
    gpu_util_pct: float | None
    vram_used_mb: float | None
    vram_total_mb: float | None
    power_w: float | None
    temperature_c: float | None
    cpu_pct: float | None
    ram_used_mb: float | None
    ram_total_mb: float | None


class RunningJob(BaseModel):
    job_id: str
    pipeline_type: str
    job_type: str | None
    started_at: datetime | None
    elapsed_seconds: float
    predicted_seconds: float | None
    progress: float | None = Field(description="elapsed ÷ predicted, at most 1")


class GpuLane(BaseModel):
    """One GPU (``gpu_index`` null: a host's only lane when its jobs or heartbeats name none)."""

    hostname: str | None
    gpu_index: int | None
    gpu_name: str | None
    running: list[RunningJob]
    reading: GpuReading | None
    idle_seconds_today: float = Field(description="seconds since UTC midnight with no job")


class QueuedJob(BaseModel):
    position: int = Field(description="1 is next")
    job_id: str
    pipeline_type: str
    job_type: str | None
    submitted_at: datetime | None
    predicted_seconds: float
    expected_start_seconds: float = Field(description="seconds from generated_at")
    expected_finish_seconds: float = Field(description="seconds from generated_at")


class OpenAlert(BaseModel):
    id: int
    severity: str
    alert_type: str
    pipeline_type: str | None
    message: str
    first_seen: datetime
    last_seen: datetime


class TrendDay(BaseModel):
    day: date
    normalised_seconds: float | None
    jobs: int


class ChangePointMark(BaseModel):
    day: date
    change_pct: float
    before_seconds: float | None
    after_seconds: float | None


class PipelineSparkline(BaseModel):
    pipeline_type: str
    days: list[TrendDay]
    change_points: list[ChangePointMark]


class EstimatePair(BaseModel):
    job_id: str
    pipeline_type: str
    predicted_seconds: float
    actual_seconds: float


class EstimateAccuracy(BaseModel):
    jobs: int
    within_20_pct: float | None = Field(description="share of these jobs estimated within ±20%")
    recent: list[EstimatePair] = Field(description="newest first")


class LiveDashboard(BaseModel):
    generated_at: datetime
    gpus: list[GpuLane]
    queue: list[QueuedJob] = Field(description="queued jobs in the order they will start")
    queue_gpus: int = Field(description="GPUs the queue is spread over")
    alerts: list[OpenAlert] = Field(description="open alerts, most severe first")
    trends: list[PipelineSparkline]
    estimates: EstimateAccuracy


HeartbeatBody = one_or_many(GpuHeartbeat, MAX_HEARTBEATS, "heartbeat", "heartbeats")


class HeartbeatResult(BaseModel):
    received: int
    stored: int = Field(description="GPU rows written (a GPU's row is kept when it is younger "
                                    "than 5 s)")


# -- reading it ---------------------------------------------------------------------------------
class LiveDashboardReader:
    """Builds :class:`LiveDashboard` from one live queue's store; safe to call from many
    threads. What changes slowly is read again only after 30–60 s: the GPUs past jobs ran on,
    the daily series and each GPU's busy time today (so idle time may lag by a minute)."""

    def __init__(self, live_queue: LiveQueue):
        self.live_queue = live_queue
        self.store = live_queue.store
        self._slow = TtlCache(SLOW_TTL_S, 8)

    def read(self, now: datetime | None = None) -> LiveDashboard:
        now = now or datetime.now(timezone.utc)
        snapshot = self.live_queue.snapshot(now)
        running = [(job, seconds) for job, seconds in zip(snapshot.jobs, snapshot.seconds)
                   if job.running]
        queued = [(job, seconds) for job, seconds in zip(snapshot.jobs, snapshot.seconds)
                  if not job.running]
        lanes = self._lanes(running, now)
        alerts = list_alerts(self.store)
        estimates = recent_estimates(self.store, now - timedelta(days=TREND_DAYS),
                                     RECENT_ESTIMATES)
        return LiveDashboard(
            generated_at=now, gpus=lanes, queue=_queue(queued, snapshot.starts()),
            queue_gpus=snapshot.gpus,
            alerts=[OpenAlert(**a) for a in alerts if not a["acknowledged"]],
            trends=self._sparklines(alerts, now.date()),
            estimates=EstimateAccuracy(jobs=len(estimates), within_20_pct=within_share(estimates),
                                       recent=[EstimatePair(**e) for e in estimates]))

    def _remembered(self, name: str, compute):
        value = self._slow.get(name)
        if value is None:
            value = compute()
            self._slow.put(name, value)
        return value

    def _lanes(self, running: list[tuple[LiveJob, float]], now: datetime) -> list[GpuLane]:
        lanes: dict[tuple, dict[str, Any]] = {}
        for row in read_heartbeats(self.store, now - timedelta(days=FLEET_DAYS)):
            lanes[(row["hostname"], row["gpu_index"])] = {
                "gpu_name": row["gpu_name"], "reading": _reading(row, now)}
        for hostname, gpu_name, gpu_index in self._remembered(
                "fleet", lambda: _fleet_gpus(self.store, now)):
            _lane(lanes, hostname, gpu_index, gpu_name)
        for job, seconds in running:
            lane = _lane(lanes, job.hostname, job.gpu_index, job.gpu_name)
            lane.setdefault("running", []).append(_running(job, seconds, now))
        busy = self._remembered(f"busy {now.date()}",
                                lambda: busy_seconds_today(self.store, now))
        today = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        return [GpuLane(hostname=hostname, gpu_index=gpu_index, gpu_name=lane["gpu_name"],
                        running=lane.get("running", []), reading=lane.get("reading"),
                        idle_seconds_today=round(max(0.0, today - busy.get(
                            (hostname, gpu_index), 0.0)), 1))
                for (hostname, gpu_index), lane in sorted(lanes.items(), key=_lane_order)]

    def _sparklines(self, alerts: list[dict], today: date) -> list[PipelineSparkline]:
        first = today - timedelta(days=TREND_DAYS - 1)
        daily = self._remembered(f"daily {today}", lambda: normalised_daily_seconds(
            self.store, first, today))
        marks: dict[str, list[ChangePointMark]] = defaultdict(list)
        for alert in alerts:
            evidence = alert.get("evidence") or {}
            if alert["alert_type"] == CHANGE_POINT and str(evidence.get("day")) >= str(first):
                marks[alert["pipeline_type"]].append(ChangePointMark(**evidence))
        return [PipelineSparkline(pipeline_type=pipeline, days=days,
                                  change_points=sorted(marks[pipeline], key=lambda m: m.day))
                for pipeline, days in daily.items()]


def _fleet_gpus(store: Store, now: datetime) -> list[tuple[str, str | None, int | None]]:
    """(hostname, gpu_name, gpu_index) of every GPU that ran a job in the last FLEET_DAYS,
    those with an index first."""
    query = (sa.select(jobs.c.hostname, jobs.c.gpu_name, jobs.c.gpu_index).distinct()
             .where(jobs.c.started_at >= now - timedelta(days=FLEET_DAYS),
                    jobs.c.hostname.is_not(None)))
    with store.engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(query)]
    return sorted(rows, key=lambda row: (row[2] is None, row[0], row[2] or 0))


def _lane(lanes: dict[tuple, dict], hostname: str | None, gpu_index: int | None,
          gpu_name: str | None) -> dict[str, Any]:
    """The lane of a GPU, made if new. What names no GPU index (older jobs, a job that did not
    say) goes to its host's first lane of that GPU model with no running job, else its first
    lane of that model; only a host without any gets a lane of unknown index."""
    if gpu_index is None:
        mine = sorted((key for key, lane in lanes.items() if key[0] == hostname
                       and (gpu_name is None or lane["gpu_name"] in (None, gpu_name))),
                      key=_index_order)
        if mine:
            free = [key for key in mine if not lanes[key].get("running")]
            return lanes[(free or mine)[0]]
    lane = lanes.setdefault((hostname, gpu_index), {"gpu_name": gpu_name})
    lane["gpu_name"] = lane["gpu_name"] or gpu_name
    return lane


def _reading(row: dict, now: datetime) -> GpuReading:
    age = max(0.0, (now - row["reported_at"]).total_seconds())
    return GpuReading(age_seconds=round(age, 1), stale=age > STALE_AFTER_S,
                      **{name: row[name] for name in GpuReading.model_fields
                         if name in row})


def _running(job: LiveJob, seconds: float, now: datetime) -> RunningJob:
    started = job.started_at
    elapsed = max(0.0, (now - started).total_seconds()) if started else 0.0
    predicted = seconds or None
    return RunningJob(job_id=job.job_id, pipeline_type=job.pipeline_type,
                      job_type=job.job_type, started_at=started,
                      elapsed_seconds=round(elapsed, 1), predicted_seconds=predicted,
                      progress=min(1.0, elapsed / predicted) if predicted else None)


def _queue(queued: list[tuple[LiveJob, float]], starts: list[float]) -> list[QueuedJob]:
    """The queued jobs in order, each with its start and finish from the snapshot's FIFO."""
    return [QueuedJob(position=position, job_id=job.job_id, pipeline_type=job.pipeline_type,
                      job_type=job.job_type, submitted_at=job.submitted_at,
                      predicted_seconds=round(seconds, 3),
                      expected_start_seconds=round(start, 3),
                      expected_finish_seconds=round(start + seconds, 3))
            for position, ((job, seconds), start) in enumerate(zip(queued, starts), start=1)]


def _lane_order(item) -> tuple:
    (hostname, gpu_index), _ = item
    return hostname or "", _index_order((hostname, gpu_index))


def _index_order(key: tuple) -> int:
    return -1 if key[1] is None else key[1]
