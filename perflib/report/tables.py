"""The weekly report's tables, for people: column names in words, rates as %, durations in the
unit that shows them, evidence and change-points in words, text wrapped (pandas Styler). Each
function takes part of the report and returns a Styler, or a Markdown line saying there is
nothing to show.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Mapping, Sequence

import pandas as pd
from IPython.display import Markdown
from pandas.io.formats.style import Styler

from perflib.analysis import Bottleneck, PerformanceReport, TrendResult
from perflib.analysis.alerts import severity_label
from perflib.analysis.estimate_accuracy import EstimateCheck
from perflib.analysis.performance_report import EstimateAccuracy, ReportedAlert
from perflib.capacity import CapacityPlan
from perflib.prediction.metrics import coverage
from perflib.report.presentation import (MAX_CATEGORIES, describe, format_change,
                                  format_change_point, format_count, format_day,
                                  format_duration, format_hours, format_p_value, format_percent,
                                  format_points, in_words, people_table)
from perflib.report.summary import saving_seconds

Table = Styler | Markdown
NO_ESTIMATE = EstimateAccuracy(0, None, None)  # a pipeline the window gave no accuracy for

# (label, field of PeriodStatistics, formatter, how the change against the previous period reads)
HEADLINES = [
    ("Jobs", "total_jobs", format_count, format_change),
    ("Succeeded", "success_rate", format_percent, format_points),
    ("Mean generation time", "avg_generation_time", format_duration, format_change),
    ("Mean wait in the queue", "avg_queue_time", format_duration, format_change),
    ("Jobs per day", "jobs_per_day", format_count, format_change),
]


def headline_table(report: PerformanceReport) -> Table:
    """This period against the one before: jobs, success, times, with ▲/▼ changes."""
    now, before = report.statistics, report.previous.statistics
    rows = [(label, show(getattr(now, name)), show(getattr(before, name)),
             change(getattr(now, name), getattr(before, name)) or "–")
            for label, name, show, change in HEADLINES]
    within, within_before = (report.accuracy.accuracy_within_20_percent,
                             report.previous.accuracy.accuracy_within_20_percent)
    rows.append(("Estimates within 20%", format_percent(within), format_percent(within_before),
                 format_points(within, within_before) or "–"))
    frame = pd.DataFrame(rows, columns=["Measure", "This period", "The period before",
                                        "Change"])
    return people_table(frame)


def pipeline_table(report: PerformanceReport) -> Table:
    """Per pipeline: jobs, success, median and 95th-percentile time, wait, GPU use."""
    if not report.per_pipeline:
        return Markdown("No jobs in this period.")
    frame = pd.DataFrame([{"pipeline": pipeline, **asdict(statistics)}
                          for pipeline, statistics in report.per_pipeline.items()])
    formats = {"jobs": format_count, "success_rate": format_percent,
               "median_generation_time": format_duration, "p95_generation_time": format_duration,
               "avg_queue_time": format_duration,
               "avg_gpu_util_pct": lambda v: f"{v:.0f}%", "jobs_per_day": format_count}
    labels = {"pipeline": "Pipeline", "jobs": "Jobs", "success_rate": "Succeeded",
              "median_generation_time": "Median time", "p95_generation_time": "95% finish within",
              "avg_queue_time": "Mean wait", "avg_gpu_util_pct": "GPU utilisation",
              "jobs_per_day": "Jobs per day"}
    return people_table(frame[list(labels)], formats, labels)


def trend_table(trends: Mapping[str, TrendResult]) -> Table:
    """Per pipeline: direction, slope, its confidence, weekly swing and dated change-points."""
    if not trends:
        return Markdown("No trend: no jobs in this period.")
    rows = [{"Pipeline": pipeline,
             "Direction": trend.direction,
             "Change per day": _signed_duration(trend.slope_seconds_per_day),
             "Confidence": format_p_value(trend.p_value),
             "Weekly swing": format_percent(_fraction(trend.weekly_amplitude_pct), 0),
             "Days analysed": format_count(trend.days),
             "Step changes": "; ".join(format_change_point(c.as_dict())
                                       for c in trend.change_points) or "none"}
            for pipeline, trend in trends.items()]
    return people_table(pd.DataFrame(rows))


def bottleneck_table(bottlenecks: Sequence[Bottleneck]) -> Table:
    """Most severe first: what, where, how bad, the evidence, what it costs, what to do."""
    if not bottlenecks:
        return Markdown("No bottleneck found in this period.")
    rows = [{"Bottleneck": in_words(b.type.value),
             "Pipeline": b.pipeline_type or "all",
             "Where": describe(b.scope, "all jobs"),
             "Severity": f"{severity_label(b.severity)} ({b.severity:.2f})",
             "Jobs affected": format_count(b.affected_jobs),
             "Evidence": describe(b.evidence),
             "Could save": format_duration(saving_seconds(b)),
             "What to do": " ".join(b.recommendations)}
            for b in bottlenecks[:MAX_CATEGORIES]]
    return people_table(pd.DataFrame(rows), caption=_most_severe(len(bottlenecks)))


def alert_table(alerts: Sequence[ReportedAlert]) -> Table:
    """The alerts the period calls for, most severe first, with their stored state."""
    if not alerts:
        return Markdown("No alert.")
    rows = [{"Severity": a.severity,
             "Alert": in_words(a.alert_type),
             "Pipeline": a.pipeline_type or "all",
             "What happened": a.message,
             "Evidence": describe(a.evidence),
             "First seen": format_day(a.first_seen) if a.id is not None else "–",
             "State": ("acknowledged" if a.acknowledged else
                       "open" if a.id is not None else "new (not raised yet)")}
            for a in alerts[:MAX_CATEGORIES]]
    return people_table(pd.DataFrame(rows), caption=_most_severe(len(alerts)))


def opportunity_table(report: PerformanceReport) -> Table:
    """Largest saving first: what to change and what it would save (fleet-wide, which a
    one-pipeline report says)."""
    if not report.opportunities:
        return Markdown("Nothing to suggest.")
    rows = [{"Opportunity": in_words(o.type),
             "Saves about": format_hours(o.potential_saving_hours),
             "Details": o.message} for o in report.opportunities]
    caption = "Across all pipelines." if report.pipeline_type else None
    return people_table(pd.DataFrame(rows), caption=caption)


def gpu_table(gpus: pd.DataFrame) -> Table:
    """Per GPU: jobs, failures, busy time and share, utilisation, time for the same work."""
    if gpus.empty:
        return Markdown("No GPU ran a job in this period.")
    frame = gpus.assign(gpu_index=gpus.gpu_index.map(
        lambda v: "–" if pd.isna(v) else f"{int(v)}"))
    formats = {"jobs": format_count, "failed": format_count, "busy_seconds": format_duration,
               "busy_share": lambda v: format_percent(v, 0),
               "gpu_util_pct": lambda v: f"{v:.0f}%",
               "relative_time": lambda v: f"{(v - 1) * 100:+.0f}%"}
    labels = {"hostname": "Host", "gpu_index": "GPU", "gpu_name": "Model", "jobs": "Jobs",
              "failed": "Failed", "busy_seconds": "Busy", "busy_share": "Busy share",
              "gpu_util_pct": "GPU utilisation",
              "relative_time": "Time for the same work vs the fleet"}
    return people_table(frame[list(labels)], formats, labels)


def estimate_table(check: EstimateCheck) -> Table:
    """Per pipeline: stored estimates within 20% over the whole window (the summary's figure),
    and the replayed model's interval coverage on the sampled jobs."""
    jobs = check.jobs
    if jobs.empty:
        return Markdown("No finished job in this period to check estimates against.")
    rows = []
    for pipeline, group in jobs.groupby("pipeline_type"):
        accuracy = check.accuracy.get(pipeline, NO_ESTIMATE)
        replayed = group.dropna(subset=["replay_low"])
        covered = coverage(replayed.actual_seconds, replayed.replay_low, replayed.replay_high) \
            if len(replayed) else None
        rows.append({"Pipeline": pipeline, "Jobs": format_count(len(group)),
                     "With an estimate": format_count(accuracy.jobs_with_estimate),
                     "Estimates within 20%": format_percent(accuracy.accuracy_within_20_percent),
                     "Model replayed": check.models.get(pipeline, "–")
                     + (" (trained on these jobs)" if check.in_sample.get(pipeline) else ""),
                     "Inside its 80% interval": format_percent(covered)})
    return people_table(pd.DataFrame(rows))


def capacity_table(plan: CapacityPlan | None) -> Table:
    """Per weekday at its busiest hour: arrivals, the worst p95 wait with the GPUs seen and
    with the recommended count, utilisation, and the GPUs Erlang-C asks for."""
    if plan is None:
        return Markdown("No capacity plan: no successful job to plan from in this period.")
    days = plan.hours.groupby("weekday", sort=False)
    now, recommended = plan.current_gpus, plan.recommended_gpus
    frame = pd.DataFrame({
        "Day": list(days.groups),
        "Jobs in the busiest hour": days.arrivals_per_hour.max().to_numpy(),
        f"Worst p95 wait, {now} GPUs": days.p95_wait_seconds.max().to_numpy(),
        f"Worst p95 wait, {recommended} GPUs": days.p95_wait_recommended_seconds.max().to_numpy(),
        f"Utilisation, {now} GPUs": days.utilisation.mean().to_numpy(),
        "Erlang-C GPUs": days.erlang_gpus_needed.max().to_numpy()})
    formats = {"Jobs in the busiest hour": lambda v: f"{v:.0f}",
               f"Worst p95 wait, {now} GPUs": format_duration,
               f"Worst p95 wait, {recommended} GPUs": format_duration,
               f"Utilisation, {now} GPUs": format_percent, "Erlang-C GPUs": format_count}
    return people_table(frame, formats, caption=" ".join([plan.sentence(), *plan.certainty()]))


def _most_severe(count: int) -> str | None:
    """The caption of a table cut to its MAX_CATEGORIES most severe rows."""
    return (f"The {MAX_CATEGORIES} most severe of {format_count(count)}."
            if count > MAX_CATEGORIES else None)


def _signed_duration(seconds: float | None) -> str:
    text = format_duration(seconds)
    return text if text.startswith("-") or text == "–" else f"+{text}"


def _fraction(percent: float | None) -> float | None:
    return None if percent is None else percent / 100
