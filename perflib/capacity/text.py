"""The capacity plan as text for a terminal (``perflib capacity``): the recommendation, the
week summarised per day and by its worst hours, and Erlang-C beside the simulation."""
from __future__ import annotations

import pandas as pd

from perflib.capacity.planner import CapacityPlan
from perflib.units import format_count, format_duration, format_percent


def plan_text(plan: CapacityPlan, worst_hours: int = 5) -> str:
    """The plan in a few compact tables and one sentence."""
    days = (plan.end - plan.start).days
    lines = [f"Capacity of {plan.pipeline_type or 'all pipelines'} from {plan.start:%Y-%m-%d} "
             f"to {plan.end:%Y-%m-%d} ({days} days, {format_count(plan.arrivals_per_week)} "
             f"jobs a week; service times: {plan.service.describe()}; "
             f"{plan.weeks_simulated} simulated weeks)", "",
             f"Per day, at its busiest hour (now {format_count(plan.current_gpus, 'GPU')}):",
             day_summary(plan).to_string(), "",
             f"Worst hours with {format_count(plan.current_gpus, 'GPU')}:",
             hour_summary(plan.worst_hours(worst_hours)).to_string(index=False), "",
             "Erlang-C (M/M/c) beside the simulation:",
             *(f"  {line}" for line in plan.differences()), "", plan.sentence()]
    if not plan.per_hour_exact:
        lines.insert(-1, "(per-hour GPU needs tried on a grid of counts, not every count)")
    return "\n".join([*lines, *plan.certainty()])


def day_summary(plan: CapacityPlan) -> pd.DataFrame:
    """Per weekday at its busiest hour, in words and units (the report and notebook show it)."""
    days = plan.day_table()
    return pd.DataFrame({
        "jobs/h": days.peak_arrivals_per_hour.map(lambda v: f"{v:.0f}"),
        "GPUs needed": days.peak_gpus_needed.map(_count),
        "Erlang-C": days.peak_erlang_gpus.map(_count),
        "worst p95 wait now": days.worst_p95_wait_seconds.map(format_duration),
        "utilisation now": days.mean_utilisation.map(format_percent),
    }, index=days.index.rename(None))


def hour_summary(hours: pd.DataFrame) -> pd.DataFrame:
    """Some hours of the plan, in words and units."""
    return pd.DataFrame({
        "hour": hours.weekday + " " + hours.hour.map("{:02d}:00".format),
        "jobs/h": hours.arrivals_per_hour.map(lambda v: f"{v:.0f}"),
        "p50 wait": hours.p50_wait_seconds.map(format_duration),
        "p95 wait": hours.p95_wait_seconds.map(format_duration),
        "utilisation": hours.utilisation.map(format_percent),
        "GPUs needed": hours.gpus_needed.map(_count),
        "Erlang-C": hours.erlang_gpus_needed.map(_count),
        "Erlang-C p95": hours.erlang_p95_wait_seconds.map(_wait),
    }).reset_index(drop=True)


def _count(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.0f}"


def _wait(seconds: float) -> str:
    """A wait, or 'overloaded' where the GPUs cannot keep up (Erlang-C's infinite wait)."""
    return "overloaded" if seconds == float("inf") else format_duration(seconds)
