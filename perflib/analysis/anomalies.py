"""Jobs far slower than expected, and the bursts of them that mean contention.

A finished job is *far slower than expected* when its time lies far above its own estimate's
upper bound: log(actual ÷ cost model) above its GPU and model's recent level (the median over
the group's last 50 jobs that finished before it was submitted) by at least log 3 and beyond
that level's 99% bound (see :func:`perflib.features.far_slower`, the same rule that keeps such
jobs out of the predictor's drift). The cost model is the stored model's that answers for the
pipeline, else one fitted robustly on the jobs at hand. Seconds are thresholds nowhere, so a
burst of small jobs slowed 5–100× by a neighbour is found as surely as a slow long video.

Several such jobs on one host (or one GPU, where jobs name no host) with less than
:data:`EPISODE_GAP` between them make one ``slow_job_contention`` alert: "contention on
cpu-2t: 8 jobs 9–166× slower than expected between 2026-11-25 19:37 and 19:47 UTC".
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.analysis.sql import bound
from perflib.features import build_features, far_slower_jobs, history_keys, outcome_seconds
from perflib.models import CostModel
from perflib.predictor import PerformancePredictor
from perflib.store import Store, parse_timestamp
from perflib.store.schema import generation_performance as jobs_table

LEVEL_DAYS = 2  # jobs before the window that give each group its recent level
MAX_FIT_JOBS = 20_000  # without a stored model, the cost model is fitted on the latest jobs
EPISODE_GAP = timedelta(minutes=30)
MIN_EPISODE_JOBS = 3
SHOWN_JOBS = 20  # job ids an alert's evidence lists
JOB_COLUMNS = ["job_id", "pipeline_type", "job_type", "status", "width", "height",
               "frame_count", "batch_size", "steps", "guidance_scale", "sampler", "model_name",
               "gpu_name", "hostname", "passes", "submitted_at", "started_at", "finished_at",
               "processing_seconds", "total_seconds", "queue_depth"]


def far_slower_than_expected(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """The successful jobs started in [start, end) that ran far slower than expected, oldest
    first: ``job_id, pipeline_type, gpu_name, hostname, started_at, finished_at,
    actual_seconds, expected_seconds, factor`` (actual ÷ expected). Only reads."""
    jobs = _finished_jobs(store, parse_timestamp(start) - timedelta(days=LEVEL_DAYS), end)
    found = [_flagged(store, frame) for _, frame in jobs.groupby("pipeline_type")]
    found = pd.concat(found) if found else _flagged(store, jobs)
    in_window = found.started_at >= pd.Timestamp(parse_timestamp(start))
    return found[in_window].sort_values("started_at", kind="stable").reset_index(drop=True)


def contention_alerts(store: Store, start: datetime, end: datetime) -> list[dict]:
    """One alert per burst of far-slower jobs on one host or GPU (see the module doc)."""
    slow = far_slower_than_expected(store, start, end)
    place = slow.hostname.where(slow.hostname.notna() & (slow.hostname != ""), slow.gpu_name)
    alerts = []
    for where, jobs in slow.assign(place=place.fillna("unknown")).groupby("place"):
        gaps = jobs.started_at.diff() > pd.Timedelta(EPISODE_GAP)
        for _, episode in jobs.groupby(gaps.cumsum()):
            if len(episode) >= MIN_EPISODE_JOBS:
                alerts.append(_alert(str(where), episode))
    return alerts


def _alert(where: str, episode: pd.DataFrame) -> dict:
    first, last = episode.started_at.min(), episode.finished_at.max()
    low, high = episode.factor.min(), episode.factor.max()
    pipelines = episode.pipeline_type.unique()
    ending = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
    return {
        "alert_type": "slow_job_contention",
        "pipeline_type": pipelines[0] if len(pipelines) == 1 else None,
        "severity": "high" if len(episode) >= 2 * MIN_EPISODE_JOBS else "medium",
        "message": f"contention on {where}: {len(episode)} jobs {low:.0f}–{high:.0f}× slower "
                   f"than expected between {first:%Y-%m-%d %H:%M} and {ending} UTC",
        "evidence": {"place": where, "jobs": len(episode),
                     "gpu_names": sorted(episode.gpu_name.dropna().unique().tolist()),
                     "first_started_at": first.isoformat(), "last_finished_at": last.isoformat(),
                     "min_factor": round(float(low), 2), "max_factor": round(float(high), 2),
                     "job_ids": episode.job_id.head(SHOWN_JOBS).tolist()},
        "fingerprint": f"slow_job_contention|{where}|{first:%Y-%m-%dT%H:%M}"}


def _finished_jobs(store: Store, since: datetime, until: datetime) -> pd.DataFrame:
    """Successful jobs started in [since, until) with what pricing them needs, oldest first."""
    t = jobs_table
    query = (sa.select(*(t.c[name] for name in JOB_COLUMNS))
             .where(t.c.status == "success", t.c.width.is_not(None), t.c.height.is_not(None),
                    t.c.steps.is_not(None), t.c.finished_at.is_not(None),
                    t.c.started_at >= bound(store, since), t.c.started_at < bound(store, until))
             .order_by(t.c.started_at, t.c.id))
    jobs = store.frame(query)
    return jobs[outcome_seconds(jobs) > 0].reset_index(drop=True)


def _flagged(store: Store, jobs: pd.DataFrame) -> pd.DataFrame:
    """The far-slower jobs among one pipeline's rows, priced by its stored model's cost model
    (else one fitted on the rows)."""
    columns = ["job_id", "pipeline_type", "gpu_name", "hostname", "started_at", "finished_at",
               "actual_seconds", "expected_seconds", "factor"]
    if not len(jobs):
        return pd.DataFrame(columns=columns)
    model = PerformancePredictor(store).active_model(jobs.pipeline_type.iloc[0])
    features = build_features(jobs, model.profiles if model else store.config.model_profiles,
                              history={})
    actual = outcome_seconds(jobs)
    latest = slice(-MAX_FIT_JOBS, None)
    cost_model = model.cost_model if model else CostModel().fit(features.iloc[latest],
                                                                actual[latest])
    ratio = np.log(actual) - np.log(cost_model.predict(features))
    slow, level = far_slower_jobs(jobs, history_keys(features), ratio)
    expected = np.exp(np.log(actual) - ratio + level)
    return jobs.assign(actual_seconds=actual, expected_seconds=expected,
                       factor=actual / expected)[slow][columns]

