"""A render farm caught mid-shift, for the live dashboard's browser test and screenshot: two
simulated weeks on 4 GPUs over 2 hosts (video slowed by a driver regression 5 days ago), their
daily aggregates, 2 running jobs, 5 queued ones, a heartbeat from every GPU, one high alert and
the regression's change-point. Everything it writes is flagged simulated; it is only ever
written into a database made for it (never by a read path)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from statistics import median

from perflib.analysis import PerformanceAnalyzer
from perflib.analysis.recent_activity import normalised_daily_seconds
from perflib.ops.alerts import save_alerts
from perflib.record import job_record
from perflib.sim.simulate import GPU_KINDS, Incident, generate_jobs
from perflib.store import Store
from perflib.store.heartbeats import write_heartbeats

HOSTS, GPUS_PER_HOST = ("render-01", "render-02"), 2
REGRESSION_DAYS_AGO = 5
# (hostname, gpu_index) → the job running there, with its parameters and progress.
RUNNING = {("render-01", 1): ("shot-0412-anim", "video", "scene", "768x768", 48, 25, 540.0, 0.4),
           ("render-02", 0): ("char-7731-sheet", "image", "character", "1024x1024", 1, 30, 96.0,
                              0.7)}
QUEUED = (("queue-01-bg", "image", "background", 1024, 96.0),
          ("queue-02-anim", "video", "scene", 48, 480.0),
          ("queue-03-char", "image", "character", 1, 60.0),
          ("queue-04-anim", "video", "scene", 96, 900.0),
          ("queue-05-prop", "image", "prop", 1, 45.0))
HIGH_ALERT = {"alert_type": "queue_backlog", "pipeline_type": "video", "severity": "high",
              "message": "Video jobs waited 14 min on average between 09:00 and 12:00 UTC; "
                         "add a GPU or move batch renders off-peak",
              "evidence": {"mean_queue_seconds": 840.0, "affected_jobs": 212},
              "fingerprint": "queue_backlog|video|demo"}


@dataclass(frozen=True)
class LiveFarm:
    """What was planted, for a test to check the page against."""

    running: dict[tuple[str, int], str]  # (hostname, gpu_index) → job id
    queued: tuple[str, ...]  # job ids in the order they will start
    high_alert_id: int
    now: datetime


def seed_live_farm(store: Store, now: datetime | None = None) -> LiveFarm:
    """Write the farm into `store` (meant to be empty) as it is at `now` (default: now)."""
    now = now or datetime.now(timezone.utc)
    regression = Incident("driver_regression", (now - timedelta(days=REGRESSION_DAYS_AGO)).date(),
                          None, pipeline_type="video", magnitude=0.3)
    store.write_jobs(list(generate_jobs(weeks=2, gpus=len(HOSTS) * GPUS_PER_HOST, seed=7,
                                        end=now - timedelta(hours=1), incidents=[regression],
                                        jobs_per_day=400, gpus_per_host=GPUS_PER_HOST)))
    PerformanceAnalyzer(store).aggregate_daily(days_back=None)
    store.write_jobs([job_record(job) for job in _live_jobs(now)], replace_live=True)
    write_heartbeats(store, _heartbeats(), now)
    alerts = save_alerts(store, [HIGH_ALERT, _change_point(store, regression.start, now)], now)
    return LiveFarm(running={gpu: job[0] for gpu, job in RUNNING.items()},
                    queued=tuple(job[0] for job in QUEUED),
                    high_alert_id=next(a["id"] for a in alerts if a["severity"] == "high"),
                    now=now)


def gpu_name(hostname: str, gpu_index: int) -> str:
    """The card the simulator puts at this host and index (kinds alternate across the fleet)."""
    number = HOSTS.index(hostname) * GPUS_PER_HOST + gpu_index
    return GPU_KINDS[number % len(GPU_KINDS)].name


def _live_jobs(now: datetime) -> list[dict]:
    jobs = []
    for (hostname, index), (job_id, pipeline, job_type, resolution, frames, steps, seconds,
                            done) in RUNNING.items():
        started = now - timedelta(seconds=seconds * done)
        jobs.append({"job_id": job_id, "pipeline_type": pipeline, "job_type": job_type,
                     "status": "running", "resolution": resolution, "frame_count": frames,
                     "steps": steps, "hostname": hostname, "gpu_index": index,
                     "gpu_name": gpu_name(hostname, index), "predicted_seconds": seconds,
                     "submitted_at": started - timedelta(minutes=2), "started_at": started,
                     "simulated": True})
    for number, (job_id, pipeline, job_type, frames, seconds) in enumerate(QUEUED):
        jobs.append({"job_id": job_id, "pipeline_type": pipeline, "job_type": job_type,
                     "status": "queued", "resolution": "1024x1024" if pipeline == "image"
                     else "768x768", "frame_count": frames, "steps": 30,
                     "predicted_seconds": seconds, "simulated": True,
                     "submitted_at": now - timedelta(minutes=10 - number)})
    return jobs


def _heartbeats() -> list[dict]:
    beats = []
    for hostname in HOSTS:
        for index in range(GPUS_PER_HOST):
            name, busy = gpu_name(hostname, index), (hostname, index) in RUNNING
            total = next(kind.vram_total_mb for kind in GPU_KINDS if kind.name == name)
            beats.append({"hostname": hostname, "gpu_index": index, "gpu_name": name,
                          "gpu_util_pct": 97.0 if busy else 0.0,
                          "vram_used_mb": total * (0.74 if busy else 0.02), "vram_total_mb": total,
                          "power_w": 405.0 if busy else 28.0,
                          "temperature_c": 71.0 if busy else 34.0, "cpu_pct": 18.0,
                          "ram_used_mb": 41_000.0, "ram_total_mb": 128_000.0})
    return beats


def _change_point(store: Store, day, now: datetime) -> dict:
    """The regression's change-point alert, with the levels the sparkline shows either side."""
    series = normalised_daily_seconds(store, (now - timedelta(days=28)).date(), now.date())
    values = [(d["day"], d["normalised_seconds"]) for d in series.get("video", [])
              if d["normalised_seconds"] is not None]
    before = median(v for d, v in values if d < day)
    after = median(v for d, v in values if d >= day)
    change = (after / before - 1) * 100
    return {"alert_type": "trend_change_point", "pipeline_type": "video", "severity": "medium",
            "message": f"video generation became {change:.0f}% slower from {day.isoformat()}",
            "evidence": {"day": day.isoformat(), "before_seconds": round(before, 1),
                         "after_seconds": round(after, 1), "change_pct": round(change, 1),
                         "p_value": None},
            "fingerprint": f"trend_change_point|video|{day.isoformat()}"}
