"""Jobs far slower than expected, and the bursts of them that mean contention.

A finished job is *far slower than expected* when its time lies far above its own estimate's
upper bound: log(actual ÷ cost model) above its GPU and model's recent level (the median over
the group's last 50 jobs that finished before it was submitted) by at least log 3 and beyond
that level's 99% bound (see :func:`perflib.prediction.features.far_slower`, the same rule that keeps
such jobs out of the predictor's drift). The cost model is the stored model's that answers for the
pipeline, else one fitted robustly on the jobs at hand. Seconds are thresholds nowhere, so a
burst of small jobs slowed 5–100× by a neighbour is found as surely as a slow long video.

Several such jobs on one host (or one GPU, where jobs name no host) with less than
:data:`EPISODE_GAP` between them make one ``slow_job_contention`` alert: "contention on
cpu-2t: 8 jobs 9–166× slower than expected between 2026-11-25 19:37 and 19:47 UTC". Any other
far-slower job is alerted on its own, a ``slow_job`` alert naming it, its factor and its
expected and actual seconds, its severity by the factor (:data:`SLOW_JOB_SEVERITY`): "job dj-7-3
on cpu-2t took 41.0 s, 12× the 3.4 s expected".

A window of up to :data:`SCAN_JOBS` jobs is read whole. A larger one (a fleet's week) is screened
in SQL first, so the rows read stay bounded whatever the fleet's size: only the jobs at least
:data:`SCREEN_FACTOR` × their GPU and model's usual seconds per expected second (a median over a
bounded sample) reach Python, each with the last jobs of its group before it, and the rule above
then judges them exactly as it would the whole window (without a stored model, the cost model
is fitted on that sample). The screen asks less than the rule (3× the recent level), so a
group's level may drift by up to 3 ÷ SCREEN_FACTOR within the window without a far-slower job
slipping through; beyond :data:`MAX_CANDIDATES` screened jobs, the mildest are left unjudged.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import expected_seconds
from perflib.analysis.sql import (frame_without_jit, in_window, sampled_jobs,
                                  window_rows)
from perflib.prediction.features import (HISTORY_WINDOW, build_features, far_slower_jobs,
                                         history_keys, outcome_seconds)
from perflib.prediction.models import CostModel
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store, parse_timestamp
from perflib.store.schema import generation_performance as jobs_table

LEVEL_DAYS = 2  # jobs before the window that give each group its recent level
MAX_FIT_JOBS = 20_000  # without a stored model, the cost model is fitted on this many jobs
SCAN_JOBS = 150_000  # a window with more jobs than this is screened in SQL (see the module doc)
SCREEN_FACTOR = 2.0  # the screen's bar: this × the group's usual seconds per expected second
MAX_CANDIDATES = 1_000  # screened jobs judged at most, the slowest for their group first
HISTORY_BATCH = 100  # candidates whose group history one query reads
ROWS_BATCH = 5_000  # job rows one query reads by id
SAMPLE_JOBS = 20_000  # the sample that gives the screen its group levels and the cost model
EPISODE_GAP = timedelta(minutes=30)
MIN_EPISODE_JOBS = 3
SHOWN_JOBS = 20  # job ids an alert's evidence lists
# An isolated far-slower job's severity: the first label whose factor it stays below.
SLOW_JOB_SEVERITY = ((10.0, "low"), (30.0, "medium"), (100.0, "high"), (np.inf, "critical"))
JOB_COLUMNS = ["job_id", "pipeline_type", "job_type", "status", "width", "height",
               "frame_count", "batch_size", "steps", "guidance_scale", "sampler", "model_name",
               "gpu_name", "hostname", "passes", "submitted_at", "started_at", "finished_at",
               "processing_seconds", "total_seconds", "queue_depth"]


def far_slower_than_expected(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """The successful jobs started in [start, end) that ran far slower than expected, oldest
    first: ``job_id, pipeline_type, gpu_name, hostname, started_at, finished_at,
    actual_seconds, expected_seconds, factor`` (actual ÷ expected). Only reads."""
    start, end = parse_timestamp(start), parse_timestamp(end)
    since = start - timedelta(days=LEVEL_DAYS)
    if window_rows(store, since, end) <= SCAN_JOBS:
        jobs, fit_rows = _finished_jobs(store, since, end), None
        judged = jobs.job_id[jobs.started_at >= pd.Timestamp(start)]
    else:
        jobs, fit_rows = _screened_jobs(store, start, end, since)
        judged = jobs.job_id[jobs.candidate]
    found = [_flagged(store, frame, None if fit_rows is None
                      else fit_rows[fit_rows.pipeline_type == pipeline])
             for pipeline, frame in jobs.groupby("pipeline_type")]
    found = pd.concat(found) if found else _flagged(store, jobs)
    found = found[found.job_id.isin(judged)]
    return found.sort_values("started_at", kind="stable").reset_index(drop=True)


def straggler_alerts(store: Store, start: datetime, end: datetime) -> list[dict]:
    """One ``slow_job_contention`` alert per burst of far-slower jobs on one host or GPU, and
    one ``slow_job`` alert for each far-slower job outside a burst (see the module doc)."""
    slow = far_slower_than_expected(store, start, end)
    place = slow.hostname.where(slow.hostname.notna() & (slow.hostname != ""), slow.gpu_name)
    alerts = []
    for where, jobs in slow.assign(place=place.fillna("unknown")).groupby("place"):
        gaps = jobs.started_at.diff() > pd.Timedelta(EPISODE_GAP)
        for _, episode in jobs.groupby(gaps.cumsum()):
            if len(episode) >= MIN_EPISODE_JOBS:
                alerts.append(_alert(str(where), episode))
            else:
                alerts += [_slow_job_alert(str(where), job) for job in episode.itertuples()]
    return alerts


def slow_job_severity(factor: float) -> str:
    """An isolated far-slower job's severity: by how many times slower than expected it ran."""
    return next(label for bound, label in SLOW_JOB_SEVERITY if factor < bound)


def _slow_job_alert(where: str, job) -> dict:
    return {
        "alert_type": "slow_job", "pipeline_type": job.pipeline_type,
        "severity": slow_job_severity(job.factor),
        "message": f"job {job.job_id} on {where} took {job.actual_seconds:.1f} s, "
                   f"{job.factor:.0f}× the {job.expected_seconds:.1f} s expected",
        "evidence": {"job_id": job.job_id, "place": where, "gpu_name": job.gpu_name,
                     "factor": round(float(job.factor), 2),
                     "expected_seconds": round(float(job.expected_seconds), 3),
                     "actual_seconds": round(float(job.actual_seconds), 3),
                     "started_at": job.started_at.isoformat()},
        "fingerprint": f"slow_job|{job.job_id}"}


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


def _priceable(since: datetime, until: datetime) -> list:
    """Successful jobs started in [since, until) with what pricing them needs."""
    t = jobs_table
    return [t.c.status == "success", t.c.width.is_not(None), t.c.height.is_not(None),
            t.c.steps.is_not(None), t.c.finished_at.is_not(None),
            t.c.started_at >= since, t.c.started_at < until]


def _finished_jobs(store: Store, since: datetime, until: datetime) -> pd.DataFrame:
    """Priceable jobs started in [since, until), oldest first."""
    t = jobs_table
    query = (sa.select(*(t.c[name] for name in JOB_COLUMNS))
             .where(*_priceable(since, until)).order_by(t.c.started_at, t.c.id))
    return _timed(store.frame(query))


def _timed(jobs: pd.DataFrame) -> pd.DataFrame:
    """The rows whose time is known (a job recorded as instant cannot be priced)."""
    return jobs[outcome_seconds(jobs) > 0].reset_index(drop=True)


def _screened_jobs(store: Store, start: datetime, end: datetime, since: datetime
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The window's jobs that pass the SQL screen (``candidate`` True), with each one's group
    history (the last HISTORY_WINDOW priceable jobs of its GPU and model that finished before it
    was submitted, started from `since`), oldest first; and the sample behind the screen."""
    t = jobs_table
    seconds = sa.func.coalesce(sa.func.nullif(t.c.processing_seconds, 0), t.c.total_seconds)
    ratio = seconds / expected_seconds(store, start, end, None)
    sample = _sample(store, start, end, ratio)
    levels = sample.dropna(subset=["ratio"]).groupby(["gpu_name", "model_name"],
                                                       dropna=False).ratio.median()
    if levels.empty:
        return _timed(sample.iloc[:0].assign(candidate=False)), sample
    level = sa.case(*((sa.and_(_same(t.c.gpu_name, gpu), _same(t.c.model_name, model)),
                       float(value)) for (gpu, model), value in levels.items()),
                    else_=float(levels.min()))
    query = (sa.select(t.c.id, t.c.gpu_name, t.c.model_name, t.c.submitted_at, t.c.started_at)
             .where(*_priceable(start, end), ratio > SCREEN_FACTOR * level)
             .order_by((ratio / level).desc()).limit(MAX_CANDIDATES))
    candidates = frame_without_jit(store, query)  # JIT compiled the per-group CASE for seconds
    jobs = _rows(store, set(candidates.id) | _history_ids(store, candidates, since), since, end)
    jobs = jobs.assign(candidate=jobs.id.isin(candidates.id))
    return jobs.sort_values("started_at", kind="stable").reset_index(drop=True), sample


def _sample(store: Store, start: datetime, end: datetime, ratio) -> pd.DataFrame:
    """About SAMPLE_JOBS priceable jobs of the window (TABLESAMPLE / id stride, see
    :func:`~perflib.analysis.sql.sampled_jobs`) with their screen `ratio`."""
    t = jobs_table
    sample, _ = sampled_jobs(store, start, end, window_rows(store, start, end), SAMPLE_JOBS)
    query = (sa.select(*(t.c[name] for name in JOB_COLUMNS), ratio.label("ratio"))
             .where(*_priceable(start, end), t.c.id.in_(sa.select(sample.c.id))))
    return _timed(store.frame(query))


def _history_ids(store: Store, candidates: pd.DataFrame, since: datetime) -> set[int]:
    """Per candidate, the ids of the last HISTORY_WINDOW priceable jobs of its GPU and model
    that finished before it was submitted (the level :func:`far_slower_jobs` compares it with),
    each read through the (gpu_name, model_name, finished_at) index, HISTORY_BATCH candidates a
    query (candidates close in time share most of theirs)."""
    t = jobs_table
    reads = []
    for job in candidates.itertuples():
        submitted = job.submitted_at if pd.notna(job.submitted_at) else job.started_at
        reads.append(sa.select(t.c.id)
                     .where(*_priceable(since, submitted),
                            _same(t.c.gpu_name, job.gpu_name),
                            _same(t.c.model_name, job.model_name),
                            t.c.finished_at < submitted)
                     .order_by(t.c.finished_at.desc()).limit(HISTORY_WINDOW).subquery())
    ids = set()
    with store.engine.connect() as conn:
        for first in range(0, len(reads), HISTORY_BATCH):
            batch = sa.union(*(sa.select(read) for read in reads[first:first + HISTORY_BATCH]))
            ids.update(conn.execute(batch).scalars())
    return ids


def _rows(store: Store, ids: set[int], since: datetime, end: datetime) -> pd.DataFrame:
    """The priceable jobs with these ids, read ROWS_BATCH at a time within [since, end) (so
    PostgreSQL reads only those day partitions)."""
    t = jobs_table
    ids = sorted(ids)
    query = sa.select(t.c.id, *(t.c[name] for name in JOB_COLUMNS))
    frames = [store.frame(query.where(in_window(since, end),
                                      t.c.id.in_(ids[first:first + ROWS_BATCH])))
              for first in range(0, len(ids), ROWS_BATCH)]
    return _timed(pd.concat(frames) if frames else store.frame(query.where(sa.false())))


def _same(column, value):
    """`column` equals `value`, or both are missing."""
    return column.is_(None) if value is None or value != value else column == value


def _flagged(store: Store, jobs: pd.DataFrame, fit_rows: pd.DataFrame | None = None
             ) -> pd.DataFrame:
    """The far-slower jobs among one pipeline's rows, priced by its stored model's cost model
    (else one fitted on `fit_rows`, by default MAX_FIT_JOBS of the rows spread evenly)."""
    columns = ["job_id", "pipeline_type", "gpu_name", "hostname", "started_at", "finished_at",
               "actual_seconds", "expected_seconds", "factor"]
    if not len(jobs):
        return pd.DataFrame(columns=columns)
    model = PerformancePredictor(store).active_model(jobs.pipeline_type.iloc[0])
    profiles = model.profiles if model else store.config.model_profiles
    features = build_features(jobs, profiles, history={})
    actual = outcome_seconds(jobs)
    if model:
        cost_model = model.cost_model
    elif fit_rows is None or fit_rows.empty:
        spread = slice(None, None, -(-len(jobs) // MAX_FIT_JOBS))  # evenly over the rows
        cost_model = CostModel().fit(features.iloc[spread], actual[spread])
    else:
        cost_model = CostModel().fit(build_features(fit_rows, profiles, history={}),
                                     outcome_seconds(fit_rows))
    ratio = np.log(actual) - np.log(cost_model.predict(features))
    slow, level = far_slower_jobs(jobs, history_keys(features), ratio)
    expected = np.exp(np.log(actual) - ratio + level)
    return jobs.assign(actual_seconds=actual, expected_seconds=expected,
                       factor=actual / expected)[slow][columns]
