"""The weekly report's summary: a few plain sentences written from the numbers of
:class:`~perflib.analysis.performance_report.PerformanceReport` — volume and success against the
previous period, the biggest change in generation time, the top bottleneck and the largest
saving on offer, open high alerts, and how good the estimates were. A sentence is written only
when the numbers support it; an empty period gets none.
"""
from __future__ import annotations

import pandas as pd

from perflib.analysis import PerformanceReport
from perflib.analysis.bottlenecks import Bottleneck, BottleneckType
from perflib.report.presentation import (describe, format_change, format_count, format_day,
                                  format_duration, format_hours, format_percent, format_points,
                                  in_words, safe_text)

MIN_SAVING_HOURS = 0.1  # a smaller saving is not worth a line of the summary
URGENT = ("critical", "high")

# What each opportunity would change, as the subject of "... would save about 2.5 h"; filled
# from the opportunity's evidence.
ACTIONS = {
    "group_by_model": "routing jobs to GPUs that already hold their model",
    "cap_steps": "capping sampling steps at {step_cap}",
    "shift_peak_load": "moving a fifth of peak-hour jobs off-peak",
}

# An alert type in words; {p} is the pipeline.
ALERT_WORDS = {
    "trend_change_point": "a change in {p} generation time",
    "slow_generation": "slow {p} generation",
    "failure_rate_spike": "a spike in {p} failures",
    "high_failure_rate": "many {p} jobs failing",
    "slower_than_estimated": "{p} jobs far slower than estimated",
    "queue_backlog": "a {p} queue backlog",
    "gpu_underuse": "GPUs underused by {p} jobs",
    "vram_pressure": "VRAM pressure in {p} jobs",
    "high_cpu_usage": "high CPU use in {p} jobs",
    "initialization_overhead": "slow model loading in {p} jobs",
    "phase_imbalance": "an outsized {p} phase",
}


def summary_sentences(report: PerformanceReport) -> list[str]:
    """Up to six sentences for the top of the report, in a fixed order: volume and success
    (whenever the period has jobs), then each of the others only when the numbers call for it;
    none for an empty period (the report's notice says so)."""
    if report.empty:
        return []
    sentences = [_volume(report), _biggest_change(report), _top_bottleneck(report),
                 _largest_saving(report), _open_alerts(report), _accuracy(report)]
    return [s for s in sentences if s]


def _period(report: PerformanceReport) -> tuple[str, str]:
    """("this week", "the week before"), or the same for a period of n days."""
    days = report.period_days
    if days == 7:
        return "this week", "the week before"
    return f"in these {days:g} days", f"the {days:g} days before"


def _jobs_word(report: PerformanceReport) -> str:
    pipeline = report.pipeline_type
    return f"{pipeline} jobs" if pipeline else "jobs"


def _volume(report: PerformanceReport) -> str:
    now, before = report.statistics, report.previous.statistics
    period, previous = _period(report)
    sentence = f"{format_count(now.total_jobs)} {_jobs_word(report)} ran {period}"
    if before.total_jobs:
        sentence += (f", {format_change(now.total_jobs, before.total_jobs)} on {previous} "
                     f"({format_count(before.total_jobs)})")
    else:
        sentence += f"; none ran {previous}"
    sentence += f"; {format_percent(now.success_rate)} succeeded"
    points = format_points(now.success_rate, before.success_rate)
    if points:
        sentence += f", {points} ({format_percent(before.success_rate)})"
    return sentence + "."


def _biggest_change(report: PerformanceReport) -> str | None:
    points = [(pipeline, point) for pipeline, trend in report.trends.items()
              for point in trend.change_points]
    if not points:
        return None
    pipeline, point = max(points, key=lambda p: abs(p[1].change_pct))
    direction = "slower" if point.change_pct > 0 else "faster"
    return (f"{pipeline.capitalize()} got {abs(point.change_pct):.0f}% {direction} on "
            f"{format_day(point.day)} ({format_duration(point.before_seconds)} → "
            f"{format_duration(point.after_seconds)} per job of the same work).")


# How a bottleneck's saving (see saving_seconds) reads.
SAVINGS = {
    "slow_generation": "at the previous weeks' speed its jobs would have needed about {} less "
                       "GPU time",
    "initialization_overhead": "keeping models resident would save up to {} of GPU time",
}


def saving_seconds(bottleneck: Bottleneck) -> float | None:
    """What fixing a bottleneck would save, where its evidence says: a slowdown against the
    previous weeks (its jobs at the old speed), or model loading (all of it, at most)."""
    evidence = bottleneck.evidence
    kind = bottleneck.type
    if kind == BottleneckType.SLOW_GENERATION:
        ratio = evidence.get("seconds_per_work_ratio_vs_previous")
        mean = evidence.get("mean_processing_seconds")
        if ratio and mean and ratio > 1:
            return bottleneck.affected_jobs * mean * (1 - 1 / ratio)
    if kind == BottleneckType.INITIALIZATION_OVERHEAD and evidence.get("init_hours"):
        return evidence["init_hours"] * 3600
    return None


def _top_bottleneck(report: PerformanceReport) -> str | None:
    if not report.bottlenecks:
        return None
    top = report.bottlenecks[0]
    kind = top.type.value
    where = f"{top.pipeline_type} jobs" if top.pipeline_type else "all jobs"
    if top.scope:
        where += f" ({describe(top.scope)})"
    sentence = f"Top bottleneck: {in_words(kind, capital=False)} in {where}"
    saving = saving_seconds(top)
    if saving and saving / 3600 >= MIN_SAVING_HOURS:
        return f"{sentence} — {SAVINGS[kind].format(format_duration(saving))}."
    return f"{sentence} — {describe(top.evidence)}."


def _largest_saving(report: PerformanceReport) -> str | None:
    offers = [o for o in report.opportunities if o.potential_saving_hours >= MIN_SAVING_HOURS]
    if not offers:
        return None
    best = max(offers, key=lambda o: o.potential_saving_hours)
    action = ACTIONS.get(best.type, in_words(best.type, capital=False)).format(**best.evidence)
    scope = " across all pipelines" if report.pipeline_type else ""
    return (f"The largest saving on offer{scope}: {action} would save about "
            f"{format_hours(best.potential_saving_hours)} {_period(report)[0]}.")


def _open_alerts(report: PerformanceReport) -> str | None:
    urgent = [a for a in report.alerts if a.severity in URGENT and not a.acknowledged]
    if not urgent:
        return None
    counts = [f"{sum(a.severity == s for a in urgent)} {s}" for s in URGENT
              if any(a.severity == s for a in urgent)]
    what = [ALERT_WORDS.get(a.alert_type, in_words(a.alert_type, capital=False) + " ({p})")
            .format(p=a.pipeline_type or "all") for a in urgent]
    verb = "alert is" if len(urgent) == 1 else "alerts are"
    return f"{' and '.join(counts)} {verb} open: {_listed(what)}."


def _accuracy(report: PerformanceReport) -> str | None:
    now, before = report.accuracy, report.previous.accuracy
    if not now.jobs_with_estimate:
        return None
    sentence = (f"Estimates given before jobs ran were within 20% for "
                f"{format_percent(now.accuracy_within_20_percent)} of the "
                f"{format_count(now.jobs_with_estimate)} {_jobs_word(report)} that had one")
    points = format_points(now.accuracy_within_20_percent, before.accuracy_within_20_percent)
    if points:
        sentence += (f", {points} on {_period(report)[1]} "
                     f"({format_percent(before.accuracy_within_20_percent)})")
    return sentence + "."


def _listed(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def summary_markdown(report: PerformanceReport) -> str:
    """The summary as a Markdown list, or a line saying the period holds nothing to summarise;
    the sentences (which name recorded job types, models and GPUs) made inert."""
    sentences = summary_sentences(report)
    if not sentences:
        return "Nothing to summarise: no jobs ran in this period."
    return "\n".join(f"- {safe_text(sentence)}" for sentence in sentences)


def period_line(report: PerformanceReport) -> str:
    """``**Period:** Tue 24 Nov → Mon 30 Nov 2026 (7 days, UTC), video jobs only``."""
    start = pd.Timestamp(report.start)
    last = pd.Timestamp(report.end) - pd.Timedelta(microseconds=1)
    scope = (f", {safe_text(report.pipeline_type)} jobs only" if report.pipeline_type else "")
    return (f"**Period:** {start:%a} {format_day(start)} → {last:%a} {format_day(last)} "
            f"{last:%Y} ({report.period_days:g} days, UTC){scope}")
