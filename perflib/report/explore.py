"""Jobs for analysts: a selection by pipeline, GPU, host, model and dates, loaded as a DataFrame
in one call (filtered in SQL), with its phase shares and a per-GPU speed table. The exploration
notebook (``notebooks/00-explore.ipynb``) draws them with :mod:`perflib.report.plots`. Reads only.
"""
from __future__ import annotations

from dataclasses import dataclass
import pandas as pd
import sqlalchemy as sa

from perflib.store import Store, UsesStore, parse_timestamp
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases

DEFAULT_LIMIT = 50_000


@dataclass(frozen=True)
class JobSelection:
    """Which jobs to look at; None leaves a field open. `gpu_name` matches part of the name
    ("4090"); `since` and `until` are ISO dates or times (UTC; `until` exclusive) of the job's
    start; `limit` keeps the newest jobs."""

    pipeline_type: str | None = None
    gpu_name: str | None = None
    hostname: str | None = None
    model_name: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = DEFAULT_LIMIT

    def conditions(self, store: Store) -> list:
        """SQL conditions on the jobs table."""
        found = []
        if self.pipeline_type:
            found.append(jobs.c.pipeline_type == self.pipeline_type)
        if self.gpu_name:
            found.append(jobs.c.gpu_name.ilike(f"%{self.gpu_name}%"))
        if self.hostname:
            found.append(jobs.c.hostname == self.hostname)
        if self.model_name:
            found.append(jobs.c.model_name == self.model_name)
        if self.since:
            found.append(jobs.c.started_at >= parse_timestamp(self.since))
        if self.until:
            found.append(jobs.c.started_at < parse_timestamp(self.until))
        return found


class JobExplorer(UsesStore):
    """Loads selections of jobs; `db` is a URL, the seed-style dict, a Store or None (the
    configured database)."""

    def jobs(self, selection: JobSelection = JobSelection()) -> pd.DataFrame:
        """The selected jobs (the newest `limit`), oldest first, with ``compute_seconds``
        (processing without model loading) and ``seconds_per_mwu`` (compute seconds per
        million work units)."""
        query = (sa.select(jobs).where(*selection.conditions(self.store))
                 .order_by(jobs.c.started_at.desc()).limit(selection.limit))
        frame = self.store.frame(query).sort_values("started_at", kind="stable")
        frame = frame.reset_index(drop=True)
        compute = frame.processing_seconds - frame.init_seconds.fillna(0)
        work = frame.work_units.where(frame.work_units > 0)
        return frame.assign(compute_seconds=compute, seconds_per_mwu=compute / work * 1e6)

    def phase_shares(self, selection: JobSelection = JobSelection()) -> pd.DataFrame:
        """Share of phase time per pipeline, job type and phase over the selected successful
        jobs (the shape of ``PerformanceAnalyzer.phase_shares``, which the charts take)."""
        query = (sa.select(jobs.c.pipeline_type, jobs.c.job_type, phases.c.name.label("phase"),
                           sa.func.sum(phases.c.seconds).label("seconds"))
                 .join(phases, phases.c.job_id == jobs.c.job_id)
                 .where(jobs.c.status == "success", *selection.conditions(self.store))
                 .group_by(jobs.c.pipeline_type, jobs.c.job_type, phases.c.name))
        frame = self.store.frame(query)
        totals = frame.groupby(["pipeline_type", "job_type"]).seconds.transform("sum")
        return frame.assign(share=frame.seconds / totals)


def gpu_speed(jobs_frame: pd.DataFrame) -> pd.DataFrame:
    """Per GPU (host, index, model) and pipeline: successful jobs and the median compute
    seconds per million work units — the lower, the faster the card for the same work."""
    done = jobs_frame[(jobs_frame.status == "success") & jobs_frame.seconds_per_mwu.notna()]
    keys = ["hostname", "gpu_index", "gpu_name", "pipeline_type"]
    if done.empty:
        return pd.DataFrame(columns=[*keys, "jobs", "median_seconds_per_mwu"])
    grouped = done.groupby(keys, dropna=False).seconds_per_mwu
    return pd.DataFrame({"jobs": grouped.size(),
                         "median_seconds_per_mwu": grouped.median()}).reset_index()


def describe_selection(selection: JobSelection, loaded: pd.DataFrame) -> str:
    """One line: what was selected and what came back, e.g. ``1,204 video jobs on GPUs
    matching "4090", 24 Nov → 30 Nov``."""
    parts = [f"{len(loaded):,} {selection.pipeline_type + ' ' if selection.pipeline_type else ''}"
             "jobs"]
    if selection.gpu_name:
        parts.append(f'on GPUs matching "{selection.gpu_name}"')
    if selection.hostname:
        parts.append(f"on {selection.hostname}")
    if selection.model_name:
        parts.append(f"with {selection.model_name}")
    line = " ".join(parts)
    if len(loaded):
        started = pd.to_datetime(loaded.started_at, utc=True)
        line += f", started {started.min():%d %b %Y} → {started.max():%d %b %Y}"
    if len(loaded) >= selection.limit:
        line += f" (the newest {selection.limit:,}; raise `limit` for more)"
    return line
