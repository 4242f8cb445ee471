"""The report's summary sentences, written from crafted report numbers: each sentence only when
the numbers support it, none for an empty period."""
from __future__ import annotations

from perflib.report.summary import period_line, summary_markdown, summary_sentences
from perflib.analysis.performance_report import EstimateAccuracy, Opportunity
from tests import report_values as made


def test_nothing_to_say_about_an_empty_period():
    report = made.report(statistics=made.NO_JOBS,  # a trend from outside the period
                         trends={"video": made.trend("video", ("2026-11-19", 104.0, 132.0))})
    assert summary_sentences(report) == []
    assert summary_markdown(report) == "Nothing to summarise: no jobs ran in this period."


def test_a_quiet_week_gets_only_its_volume():
    assert summary_sentences(made.report()) == [
        "1,011 jobs ran this week, ▼ 19% on the week before (1,253); 98.2% succeeded, "
        "▲ 2.1 points (96.1%)."]


def test_volume_without_a_week_before_to_compare():
    report = made.previous(made.report(), statistics=made.NO_JOBS)
    assert summary_sentences(report) == [
        "1,011 jobs ran this week; none ran the week before; 98.2% succeeded."]


def test_two_week_period_and_one_pipeline_say_so():
    report = made.report(period_days=14, pipeline_type="video")
    sentence = summary_sentences(report)[0]
    assert sentence.startswith("1,011 video jobs ran in these 14 days, ▼ 19% on the 14 days "
                               "before")


def test_the_biggest_change_with_its_date_and_evidence():
    report = made.report(trends={"image": made.trend("image", ("2026-11-11", 11.2, 9.9)),
                                 "video": made.trend("video", ("2026-11-19", 104.0, 131.0))})
    assert summary_sentences(report)[1] == (
        "Video got 26% slower on 19 Nov (104 s → 131 s per job of the same work).")
    faster = made.report(trends={"image": made.trend("image", ("2026-11-11", 11.2, 9.9))})
    assert summary_sentences(faster)[1] == (
        "Image got 12% faster on 11 Nov (11 s → 9.9 s per job of the same work).")


def test_top_bottleneck_with_its_saving():
    slow = made.bottleneck("slow_generation", 0.52, "video", 337, {
        "mean_processing_seconds": 148.3, "limit_seconds": 300.0,
        "seconds_per_work_ratio_vs_previous": 1.261, "previous_days": 28})
    sentences = summary_sentences(made.report(bottlenecks=(slow,)))
    # 337 jobs × 148.3 s × (1 − 1/1.261) = 10,345 s
    assert sentences[1] == ("Top bottleneck: slow generation in video jobs — at the previous "
                            "weeks' speed its jobs would have needed about 2.9 h less GPU time.")


def test_top_bottleneck_without_a_saving_gives_its_evidence():
    cpu = made.bottleneck("high_cpu_usage", 0.7, "image", 120, {
        "cpu_avg_pct": 93.0, "threshold_pct": 80, "gpu_util_avg_pct": 41.0},
        {"job_type": "background"})
    assert summary_sentences(made.report(bottlenecks=(cpu,)))[1] == (
        "Top bottleneck: high CPU usage in image jobs (job type background) — CPU 93%, "
        "threshold 80%, GPU utilisation 41%.")


def test_largest_saving_only_when_it_is_worth_a_line():
    offers = (Opportunity("cap_steps", "...", {"step_cap": 30}, 0.09),
              Opportunity("group_by_model", "...", {}, 1.08))
    assert summary_sentences(made.report(opportunities=offers))[1] == (
        "The largest saving on offer: routing jobs to GPUs that already hold their model would "
        "save about 65 min this week.")
    assert len(summary_sentences(made.report(opportunities=offers[:1]))) == 1


def test_open_high_alerts_only():
    alerts = (made.alert("trend_change_point", "video", "high", False),
              made.alert("failure_rate_spike", "image", "critical", False),
              made.alert("slow_generation", "video", "high", True),
              made.alert("gpu_underuse", "image", "medium", False))
    assert summary_sentences(made.report(alerts=alerts))[1] == (
        "1 critical and 1 high alerts are open: a change in video generation time and a spike "
        "in image failures.")
    assert len(summary_sentences(made.report(alerts=alerts[2:]))) == 1


def test_estimate_accuracy_against_the_week_before():
    report = made.previous(made.report(accuracy=EstimateAccuracy(581, 0.6902, 0.15)),
                           accuracy=EstimateAccuracy(742, 0.7547, 0.14))
    assert summary_sentences(report)[1] == (
        "Estimates given before jobs ran were within 20% for 69.0% of the 581 jobs that had one, "
        "▼ 6.5 points on the week before (75.5%).")
    first_week = made.previous(report, accuracy=EstimateAccuracy(742, None, 0.14))
    assert summary_sentences(first_week)[1].endswith("of the 581 jobs that had one.")


def test_everything_at_once_stays_within_six_sentences():
    report = made.report(
        trends={"video": made.trend("video", ("2026-11-19", 104.0, 131.0))},
        opportunities=(Opportunity("cap_steps", "...", {"jobs": 140, "step_cap": 30}, 3.2),),
        alerts=(made.alert("queue_backlog", "image", "high", False),),
        bottlenecks=(made.bottleneck("initialization_overhead", 0.3, "image", 600, {
            "init_share_of_processing": 0.21, "init_hours": 0.52}),),
        accuracy=EstimateAccuracy(10, 0.9, 0.1))
    sentences = summary_sentences(report)
    assert 3 <= len(sentences) <= 6
    assert "keeping models resident would save up to 31 min of GPU time" in sentences[2]
    assert "capping sampling steps at 30 would save about 3.2 h this week" in sentences[3]
    assert all("{" not in s and "'" not in s and "…" not in s for s in sentences)


def test_period_line():
    assert period_line(made.report(pipeline_type="video")) == (
        "**Period:** Tue 24 Nov → Mon 30 Nov 2026 (7 days, UTC), video jobs only")
