"""The report's summary sentences, written from crafted report numbers: each sentence only when
the numbers support it, none for an empty period."""
from __future__ import annotations

import copy

from perflib.report.summary import period_line, summary_markdown, summary_sentences


def _report(**changes) -> dict:
    """A report shaped like generate_performance_report's, with nothing remarkable in it."""
    report = {
        "period_days": 7, "start": "2026-11-24T00:00:00+00:00",
        "end": "2026-12-01T00:00:00+00:00", "pipeline_type": None,
        "overall_statistics": {"total_jobs": 1011, "successful_jobs": 993, "success_rate": 0.9822,
                               "avg_generation_time": 58.1, "avg_queue_time": 0.93,
                               "jobs_per_day": 144.4},
        "per_pipeline": {}, "bottlenecks": [], "trends": {}, "alerts": [], "opportunities": [],
        "prediction_accuracy": {"jobs_with_estimate": 0, "accuracy_within_20_percent": None,
                                "mape": None},
        "previous_period": {
            "start": "2026-11-17T00:00:00+00:00",
            "overall_statistics": {"total_jobs": 1253, "successful_jobs": 1204,
                                   "success_rate": 0.9609, "avg_generation_time": 55.4,
                                   "avg_queue_time": 0.57, "jobs_per_day": 179.0},
            "prediction_accuracy": {"jobs_with_estimate": 0, "accuracy_within_20_percent": None,
                                    "mape": None}},
    }
    for path, value in changes.items():
        target = report
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return report


def _trend(*points) -> dict:
    return {"direction": "degrading", "change_points": [
        {"day": day, "before_seconds": before, "after_seconds": after,
         "change_pct": (after / before - 1) * 100, "p_value": 1e-9}
        for day, before, after in points]}


def test_nothing_to_say_about_an_empty_period():
    report = _report(overall_statistics={"total_jobs": 0, "successful_jobs": 0,
                                         "success_rate": None, "avg_generation_time": None,
                                         "avg_queue_time": None, "jobs_per_day": 0.0})
    report["trends"] = {"video": _trend(("2026-11-19", 104.0, 132.0))}  # outside the period
    assert summary_sentences(report) == []
    assert summary_markdown(report) == "Nothing to summarise: no jobs ran in this period."


def test_a_quiet_week_gets_only_its_volume():
    assert summary_sentences(_report()) == [
        "1,011 jobs ran this week, ▼ 19% on the week before (1,253); 98.2% succeeded, "
        "▲ 2.1 points (96.1%)."]


def test_volume_without_a_week_before_to_compare():
    report = _report(previous_period__overall_statistics={
        "total_jobs": 0, "successful_jobs": 0, "success_rate": None,
        "avg_generation_time": None, "avg_queue_time": None, "jobs_per_day": 0.0})
    assert summary_sentences(report) == [
        "1,011 jobs ran this week; none ran the week before; 98.2% succeeded."]


def test_two_week_period_and_one_pipeline_say_so():
    report = _report(period_days=14, pipeline_type="video")
    sentence = summary_sentences(report)[0]
    assert sentence.startswith("1,011 video jobs ran in these 14 days, ▼ 19% on the 14 days "
                               "before")


def test_the_biggest_change_with_its_date_and_evidence():
    report = _report(trends={"image": _trend(("2026-11-11", 11.2, 9.9)),
                             "video": _trend(("2026-11-19", 104.0, 131.0))})
    assert summary_sentences(report)[1] == (
        "Video got 26% slower on 19 Nov (104 s → 131 s per job of the same work).")
    faster = _report(trends={"image": _trend(("2026-11-11", 11.2, 9.9))})
    assert summary_sentences(faster)[1] == (
        "Image got 12% faster on 11 Nov (11 s → 9.9 s per job of the same work).")


def test_top_bottleneck_with_its_saving():
    slow = {"type": "slow_generation", "severity": 0.52, "pipeline_type": "video",
            "affected_jobs": 337, "scope": {}, "recommendations": ["..."],
            "evidence": {"mean_processing_seconds": 148.3, "limit_seconds": 300.0,
                         "seconds_per_work_ratio_vs_previous": 1.261, "previous_days": 28}}
    sentences = summary_sentences(_report(bottlenecks=[slow]))
    # 337 jobs × 148.3 s × (1 − 1/1.261) = 10,345 s
    assert sentences[1] == ("Top bottleneck: slow generation in video jobs — at the previous "
                            "weeks' speed its jobs would have needed about 2.9 h less GPU time.")


def test_top_bottleneck_without_a_saving_gives_its_evidence():
    cpu = {"type": "high_cpu_usage", "severity": 0.7, "pipeline_type": "image",
           "affected_jobs": 120, "scope": {"job_type": "background"}, "recommendations": [],
           "evidence": {"cpu_avg_pct": 93.0, "threshold_pct": 80, "gpu_util_avg_pct": 41.0}}
    assert summary_sentences(_report(bottlenecks=[cpu]))[1] == (
        "Top bottleneck: high CPU usage in image jobs (job type background) — CPU 93%, "
        "threshold 80%, GPU utilisation 41%.")


def test_largest_saving_only_when_it_is_worth_a_line():
    offers = [{"type": "cap_steps", "potential_saving_hours": 0.09, "message": "..."},
              {"type": "group_by_model", "potential_saving_hours": 1.08, "message": "..."}]
    assert summary_sentences(_report(opportunities=offers))[1] == (
        "The largest saving on offer: routing jobs to GPUs that already hold their model would "
        "save about 65 min this week.")
    assert len(summary_sentences(_report(opportunities=offers[:1]))) == 1


def test_open_high_alerts_only():
    alerts = [
        {"alert_type": "trend_change_point", "pipeline_type": "video", "severity": "high",
         "acknowledged": False},
        {"alert_type": "failure_rate_spike", "pipeline_type": "image", "severity": "critical",
         "acknowledged": False},
        {"alert_type": "slow_generation", "pipeline_type": "video", "severity": "high",
         "acknowledged": True},
        {"alert_type": "gpu_underuse", "pipeline_type": "image", "severity": "medium",
         "acknowledged": False}]
    assert summary_sentences(_report(alerts=alerts))[1] == (
        "1 critical and 1 high alerts are open: a change in video generation time and a spike "
        "in image failures.")
    assert len(summary_sentences(_report(alerts=alerts[2:]))) == 1


def test_estimate_accuracy_against_the_week_before():
    report = _report(prediction_accuracy={"jobs_with_estimate": 581,
                                          "accuracy_within_20_percent": 0.6902, "mape": 0.15})
    report["previous_period"]["prediction_accuracy"] = {
        "jobs_with_estimate": 742, "accuracy_within_20_percent": 0.7547, "mape": 0.14}
    assert summary_sentences(report)[1] == (
        "Estimates given before jobs ran were within 20% for 69.0% of the 581 jobs that had one, "
        "▼ 6.5 points on the week before (75.5%).")
    first_week = copy.deepcopy(report)
    first_week["previous_period"]["prediction_accuracy"]["accuracy_within_20_percent"] = None
    assert summary_sentences(first_week)[1].endswith("of the 581 jobs that had one.")


def test_everything_at_once_stays_within_six_sentences():
    report = _report(trends={"video": _trend(("2026-11-19", 104.0, 131.0))},
                     opportunities=[{"type": "cap_steps", "potential_saving_hours": 3.2,
                                     "evidence": {"jobs": 140, "step_cap": 30}}],
                     alerts=[{"alert_type": "queue_backlog", "pipeline_type": "image",
                              "severity": "high", "acknowledged": False}],
                     bottlenecks=[{"type": "initialization_overhead", "severity": 0.3,
                                   "pipeline_type": "image", "affected_jobs": 600, "scope": {},
                                   "evidence": {"init_share_of_processing": 0.21,
                                                "init_hours": 0.52}}],
                     prediction_accuracy={"jobs_with_estimate": 10,
                                          "accuracy_within_20_percent": 0.9, "mape": 0.1})
    sentences = summary_sentences(report)
    assert 3 <= len(sentences) <= 6
    assert "keeping models resident would save up to 31 min of GPU time" in sentences[2]
    assert "capping sampling steps at 30 would save about 3.2 h this week" in sentences[3]
    assert all("{" not in s and "'" not in s and "…" not in s for s in sentences)


def test_period_line():
    assert period_line(_report(pipeline_type="video")) == (
        "**Period:** Tue 24 Nov → Mon 30 Nov 2026 (7 days, UTC), video jobs only")
