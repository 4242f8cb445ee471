"""Numbers and tables for people: durations in the unit that shows them, percentages, thousands
separators, dates as "20 Nov", change-points and evidence in words, and pandas Styler tables
that wrap their text instead of cutting it.

The report, the notebooks and the summary sentences format through these functions, so a value
reads the same everywhere.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Callable, Mapping

import pandas as pd
from pandas.io.formats.style import Styler

from perflib.units import MISSING, format_count, format_duration, format_percent, missing

UP, DOWN = "▲", "▼"

# The most categories (job types, phases, GPUs, rows of a table) one chart or table of the
# report shows: the rest are folded into one OTHER category, so a history with thousands of
# distinct names still draws a readable chart of bounded size.
MAX_CATEGORIES = 20
OTHER = "other"
NOT_RECORDED = "not recorded"  # the category of jobs that did not record the field

# Characters that mean something in HTML or in Markdown, as numeric character references:
# both show a reference as the character itself, neither reads it as markup.
_INERT = {ord(c): f"&#{ord(c)};" for c in "&<>\"'`*_[](){}#!|~\\$"}
_INERT.update({ord("\n"): " ", ord("\r"): " "})

TABLE_STYLES = [
    {"selector": "th", "props": "text-align: left; vertical-align: bottom; padding: 4px 10px;"},
    {"selector": "td", "props": "text-align: left; vertical-align: top; padding: 4px 10px; "
                                "white-space: normal; overflow-wrap: anywhere; max-width: 42em;"},
    {"selector": "", "props": "border-collapse: collapse; margin-bottom: 1em;"},
    {"selector": "tbody tr:nth-child(odd)", "props": "background: #f5f5f5;"},
]


def safe_text(value: Any) -> str:
    """Text made inert wherever it lands in the report: in HTML, in an HTML attribute and in
    Markdown that becomes HTML (a recorded name cannot open a tag, a link or a heading). Every
    recorded string goes through here before it joins HTML or Markdown."""
    return str(value).translate(_INERT)


def top_categories(labels: pd.Series, weights: pd.Series | None = None,
                   cap: int = MAX_CATEGORIES) -> pd.Series:
    """`labels` with missing ones as NOT_RECORDED, and all but the `cap` heaviest (summed
    `weights`, else counts) as OTHER."""
    labels = labels.astype(object).where(labels.notna(), NOT_RECORDED).astype(str)
    weights = pd.Series(1.0, index=labels.index) if weights is None else weights.fillna(0)
    heaviest = weights.groupby(labels).sum().sort_values(ascending=False, kind="stable")
    return labels.where(labels.isin(heaviest.index[:cap]), OTHER)


def format_hours(hours: float | None) -> str:
    """Hours (as the analyses store savings) by :func:`format_duration`'s rule."""
    return MISSING if missing(hours) else format_duration(float(hours) * 3600)


def format_day(day: date | datetime | str | None) -> str:
    """A calendar day as ``20 Nov`` (ISO text is accepted)."""
    if missing(day):
        return MISSING
    value = pd.Timestamp(day)
    return f"{value.day} {value:%b}"


def format_change(now: float | None, before: float | None) -> str | None:
    """Relative change with an arrow: ``▲ 5%``, ``▼ 12%``, ``no change``; None when there is
    nothing to compare with (either value missing, or before is zero)."""
    if missing(now) or missing(before) or not before:
        return None
    change = float(now) / float(before) - 1
    if round(change * 100) == 0:
        return "no change"
    return f"{UP if change > 0 else DOWN} {abs(change):.0%}"


def format_points(now: float | None, before: float | None) -> str | None:
    """Change between two rates in percentage points: ``▼ 0.4 points``; None without both."""
    if missing(now) or missing(before):
        return None
    points = (float(now) - float(before)) * 100
    if round(points, 1) == 0:
        return "no change"
    return f"{UP if points > 0 else DOWN} {abs(points):.1f} points"


def format_change_point(point: Mapping[str, Any]) -> str:
    """A change-point as ``20 Nov: +29% (104 s → 134 s)``."""
    return (f"{format_day(point['day'])}: {point['change_pct']:+.0f}% "
            f"({format_duration(point['before_seconds'])} → "
            f"{format_duration(point['after_seconds'])})")


def format_p_value(p_value: float | None) -> str:
    """``p < 0.001`` or ``p = 0.03``."""
    if missing(p_value):
        return MISSING
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


# Code names that read better as other words than as themselves.
WORDS = {"initialization_overhead": "model loading overhead",
         "trend_change_point": "change in generation time",
         "gpu_underuse": "GPU underused", "group_by_model": "group jobs by model",
         "cap_steps": "cap sampling steps", "shift_peak_load": "move jobs off-peak"}


def in_words(name: str, capital: bool = True) -> str:
    """``low_gpu_utilization`` → ``Low GPU utilisation`` (``low GPU utilisation`` without
    `capital`): a code name in words."""
    words = WORDS.get(name, name).replace("_", " ").strip()
    for code, word in (("gpu", "GPU"), ("cpu", "CPU"), ("vram", "VRAM"), ("oom", "OOM"),
                       ("utilization", "utilisation")):
        words = " ".join(word if w == code else w for w in words.split(" "))
    return words[:1].upper() + words[1:] if capital else words


# How each evidence or scope key reads; anything else is named by in_words().
LABELS = {
    "gpu_util_avg_pct": "GPU utilisation", "cpu_avg_pct": "CPU", "threshold_pct": "threshold",
    "mean_queue_seconds": "mean wait", "max_queue_seconds": "longest wait",
    "threshold_seconds": "threshold", "queue_share_of_total": "share of total time",
    "oom_failures": "out-of-memory failures", "jobs_near_full_vram": "jobs near full VRAM",
    "mean_vram_use": "mean VRAM use", "failure_rate": "failure rate",
    "baseline_rate": "previous weeks", "threshold": "threshold",
    "mean_processing_seconds": "mean processing time", "limit_seconds": "limit",
    "seconds_per_work_ratio_vs_previous": "time for the same work vs the previous weeks",
    "init_share_of_processing": "model loading share", "init_hours": "model loading",
    "share_of_phase_time": "share of phase time", "phase_hours": "phase time",
    "affected_jobs": "jobs affected", "slow_jobs": "jobs over 2× their estimate",
    "estimated_jobs": "jobs with an estimate", "share": "share",
    "job_type": "job type", "model_name": "model", "gpu_name": "GPU", "phase": "phase",
}
FRACTION_KEYS = ("rate", "share", "mean_vram_use", "threshold")
SKIPPED_KEYS = {"previous_days", "p_value"}


def format_evidence_value(key: str, value: Any) -> str:
    """One evidence value in its unit, read from its key (``_pct``, ``_seconds``, ``_hours``,
    rates and shares as fractions, ratios as a % change)."""
    if missing(value):
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(format_evidence_value(key, v) for v in value)
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if key.endswith("_pct"):
        return f"{float(value):.0f}%"
    if key.endswith("_seconds"):
        return format_duration(value)
    if key.endswith("_hours"):
        return format_hours(value)
    if "ratio" in key:
        return f"{(float(value) - 1) * 100:+.0f}%"
    if any(word in key for word in FRACTION_KEYS) and abs(float(value)) <= 1:
        return format_percent(value, 0 if abs(float(value)) >= 0.1 else 1)
    if isinstance(value, int) or float(value).is_integer():
        return format_count(value)
    return f"{float(value):,.3g}"


def describe(values: Mapping[str, Any] | None, empty: str = MISSING) -> str:
    """Evidence or a scope dict in words: ``GPU utilisation 45%, threshold 60%, CPU 91%``; a
    change-point's evidence as :func:`format_change_point`; `empty` for nothing."""
    if not values:
        return empty
    if {"day", "before_seconds", "after_seconds", "change_pct"} <= set(values):
        return format_change_point(values)
    parts = [f"{LABELS.get(key, in_words(key, capital=False))} "
             f"{format_evidence_value(key, value)}"
             for key, value in values.items() if key not in SKIPPED_KEYS and not missing(value)]
    return ", ".join(parts) or empty


def people_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]] | None = None,
                 labels: Mapping[str, str] | None = None, caption: str | None = None) -> Styler:
    """A DataFrame as a table for people: columns renamed to words (`labels`), each column
    formatted by its function in `formats` (missing values as "–"), every cell, header and
    the caption made inert by :func:`safe_text`, no index, text wrapped rather than cut."""
    labels = dict(labels or {})
    shown = frame.rename(columns=labels)
    functions = {labels.get(column, column): function
                 for column, function in (formats or {}).items()}
    formatters = {column: _shown(functions.get(column, str)) for column in shown.columns}
    styler = (shown.style.format(formatters).format_index(safe_text, axis=1)
              .hide(axis="index").set_table_styles(TABLE_STYLES))
    return styler.set_caption(safe_text(caption)) if caption else styler


def _shown(function: Callable[[Any], str]) -> Callable[[Any], str]:
    """A cell's text: missing as "–", else `function`'s text made inert."""
    return lambda value: MISSING if missing(value) else safe_text(function(value))
