"""Optimisation opportunities, quantified from the window's own jobs (SQL aggregates)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from perflib.analysis.sql import in_window, hour_of
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.units import format_duration

PEAK_SHARE = 0.25  # the busiest quarter of the hours of the day
MOVED_SHARE = 0.2  # "what if a fifth of peak-hour jobs ran off-peak"
STEP_CAP = 30  # steps beyond which diffusion samplers rarely change the image visibly


def find_opportunities(store: Store, start: datetime, end: datetime) -> list[dict]:
    """Where time goes for little return: peak-hour queueing, surplus steps, model reloads."""
    found = [_peak_hours(store, start, end), _surplus_steps(store, start, end),
             _model_reloads(store, start, end)]
    return sorted((f for f in found if f), key=lambda f: -f["potential_saving_hours"])


def _peak_hours(store: Store, start, end) -> dict | None:
    hour = hour_of(jobs.c.submitted_at, store.engine.dialect.name).label("hour")
    query = (sa.select(hour, sa.func.count().label("jobs"),
                       sa.func.sum(jobs.c.queue_seconds).label("queue"))
             .where(in_window(start, end), jobs.c.queue_seconds.isnot(None))
             .group_by(hour))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    total_queue = sum(r.queue or 0 for r in rows)
    if not rows or total_queue <= 0:
        return None
    busiest = sorted(rows, key=lambda r: -r.jobs)[:max(1, round(len(rows) * PEAK_SHARE))]
    peak_hours = sorted(r.hour for r in busiest)
    peak_jobs = sum(r.jobs for r in busiest)
    peak_queue = sum(r.queue or 0 for r in busiest)
    off_jobs = sum(r.jobs for r in rows) - peak_jobs
    off_queue = total_queue - peak_queue
    mean_peak = peak_queue / peak_jobs
    mean_off = off_queue / off_jobs if off_jobs else 0.0
    moved = MOVED_SHARE * peak_jobs
    saving = moved * (mean_peak - mean_off)
    if saving <= 0:
        return None  # peak hours wait no longer than the rest: nothing to gain by moving jobs
    return {
        "type": "shift_peak_load",
        "message": (f"{peak_queue / total_queue:.0%} of all queue time falls in the peak hours "
                    f"{', '.join(f'{h:02d}:00' for h in peak_hours)} UTC; running "
                    f"{MOVED_SHARE:.0%} of those jobs off-peak would save about "
                    f"{format_duration(saving)} of waiting ({mean_peak:.0f} s → {mean_off:.0f} s "
                    "each)."),
        "evidence": {"peak_hours_utc": peak_hours,
                     "peak_queue_share": round(peak_queue / total_queue, 3),
                     "mean_queue_peak_seconds": round(mean_peak, 1),
                     "mean_queue_off_peak_seconds": round(mean_off, 1),
                     "jobs_moved": round(moved)},
        "potential_saving_hours": round(saving / 3600, 2),
    }


def _surplus_steps(store: Store, start, end) -> dict | None:
    denoise_share = jobs.c.steps - STEP_CAP
    surplus = (jobs.c.processing_seconds - sa.func.coalesce(jobs.c.init_seconds, 0.0)) \
        * denoise_share / jobs.c.steps
    query = (sa.select(sa.func.count().label("jobs"), sa.func.sum(surplus).label("seconds"),
                       sa.func.sum(jobs.c.processing_seconds).label("all_seconds"))
             .where(in_window(start, end), jobs.c.status == "success",
                    jobs.c.steps > STEP_CAP))
    with store.engine.connect() as conn:
        row = conn.execute(query).one()
    if not row.jobs or not row.seconds:
        return None
    return {
        "type": "cap_steps",
        "message": (f"{row.jobs} jobs ran more than {STEP_CAP} steps; capping them at "
                    f"{STEP_CAP} would save about {format_duration(row.seconds)} of GPU time "
                    f"({row.seconds / row.all_seconds:.0%} of theirs) — beyond ~{STEP_CAP} "
                    "steps modern samplers change the image little."),
        "evidence": {"jobs": int(row.jobs), "step_cap": STEP_CAP,
                     "surplus_seconds": round(row.seconds, 1)},
        "potential_saving_hours": round(row.seconds / 3600, 2),
    }


def _model_reloads(store: Store, start, end) -> dict | None:
    query = (sa.select(sa.func.count().label("reloads"),
                       sa.func.sum(jobs.c.init_seconds).label("seconds"))
             .where(in_window(start, end), jobs.c.init_seconds > 1.0))
    with store.engine.connect() as conn:
        row = conn.execute(query).one()
    if not row.reloads or not row.seconds:
        return None
    return {
        "type": "group_by_model",
        "message": (f"{row.reloads} jobs started by loading their model "
                    f"({format_duration(row.seconds)} in all): routing jobs to GPUs that already "
                    "hold their model, or grouping submissions by model, removes most of it."),
        "evidence": {"model_loads": int(row.reloads), "load_seconds": round(row.seconds, 1)},
        "potential_saving_hours": round(row.seconds / 3600, 2),
    }
