"""Numbers and tables for people: units that show the value, %, separators, no Python reprs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from perflib.report.presentation import (describe, format_change, format_change_point, format_count,
                                  format_day, format_duration, format_hours, format_percent,
                                  format_points, in_words, people_table)


@pytest.mark.parametrize("seconds, shown", [
    (0, "0 s"), (0.004, "0.004 s"), (0.93, "0.93 s"), (3.24, "3.2 s"), (45.2, "45 s"),
    (132.4, "132 s"), (179.4, "179 s"), (180, "3.0 min"), (588, "9.8 min"), (840, "14 min"),
    (5340, "89 min"), (5399, "1.5 h"), (5400, "1.5 h"), (9000, "2.5 h"), (129_600, "36 h"),
    (4_442_400, "1,234 h"), (-45.2, "-45 s"), (None, "–"), (math.nan, "–")])
def test_durations_take_the_unit_that_shows_them(seconds, shown):
    assert format_duration(seconds) == shown


@pytest.mark.parametrize("seconds", [1, 30, 89.6, 90, 100, 150, 179.9, 200, 3000, 5000, 6000])
def test_a_duration_is_never_zero_minutes_or_zero_hours(seconds):
    shown = format_duration(seconds)
    assert shown not in {"0 min", "0.0 min", "0 h", "0.0 h"} and not shown.startswith("0 ")


def test_hours_follow_the_same_rule():
    assert format_hours(0.01) == "36 s" and format_hours(1.08) == "65 min"
    assert format_hours(2.5) == "2.5 h" and format_hours(None) == "–"


def test_rates_counts_days_and_changes():
    assert format_percent(0.9988) == "99.9%" and format_percent(0.5, 0) == "50%"
    assert format_count(12849.0) == "12,849" and format_count(None) == "–"
    assert format_day("2026-11-19") == "19 Nov"
    assert format_change(1011, 1253) == "▼ 19%" and format_change(110, 100) == "▲ 10%"
    assert format_change(100, 100) == "no change"
    assert format_change(5, 0) is None and format_change(5, None) is None
    assert format_points(0.982, 0.961) == "▲ 2.1 points"
    assert format_points(0.5, None) is None


def test_counts_of_things_are_pluralised_and_percentages_never_negative_zero():
    assert format_count(1, "GPU") == "1 GPU" and format_count(1.2, "GPU") == "1 GPU"
    assert format_count(0, "GPU") == "0 GPUs" and format_count(12849, "job") == "12,849 jobs"
    assert format_count(None, "GPU") == "–"
    assert format_percent(-1e-9) == "0.0%" and format_percent(-0.0004) == "0.0%"
    assert format_percent(-0.004, 0) == "0%" and format_percent(-0.0005) == "-0.1%"


def test_change_point_in_words():
    point = {"day": "2026-11-19", "before_seconds": 104.2, "after_seconds": 132.4,
             "change_pct": 26.4, "p_value": 1e-9}
    assert format_change_point(point) == "19 Nov: +26% (104 s → 132 s)"
    assert describe(point) == "19 Nov: +26% (104 s → 132 s)"


def test_evidence_in_words_with_units():
    assert describe({"gpu_util_avg_pct": 45.2, "threshold_pct": 60, "cpu_avg_pct": 91.0}) == \
        "GPU utilisation 45%, threshold 60%, CPU 91%"
    assert describe({"mean_processing_seconds": 148.3, "limit_seconds": 300.0,
                     "seconds_per_work_ratio_vs_previous": 1.261, "previous_days": 28}) == \
        ("mean processing time 148 s, limit 5.0 min, time for the same work vs the previous "
         "weeks +26%")
    assert describe({"failure_rate": 0.153, "failed": 31, "jobs": 203, "threshold": 0.1}) == \
        "failure rate 15%, failed 31, jobs 203, threshold 10%"
    assert describe({"peak_hours_utc": [11, 13]}) == "peak hours utc 11, 13"
    assert describe({}) == "–" and describe({}, "all jobs") == "all jobs"


def test_code_names_read_as_words():
    assert in_words("low_gpu_utilization") == "Low GPU utilisation"
    assert in_words("initialization_overhead") == "Model loading overhead"
    assert in_words("vram_pressure") == "VRAM pressure"


def test_people_table_renames_formats_and_wraps():
    frame = pd.DataFrame({"success_rate": [0.9988, None], "note": ["x " * 200, "short"]})
    html = people_table(frame, {"success_rate": format_percent},
                        {"success_rate": "Succeeded", "note": "Note"}).to_html()
    assert "Succeeded" in html and "success_rate" not in html
    assert "99.9%" in html and "0.9988" not in html and "–" in html
    assert "white-space: normal" in html and "…" not in html and ("x " * 200).strip() in html
