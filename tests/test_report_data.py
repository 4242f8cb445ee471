"""What the weekly report gathers: one pipeline on its own, the period before for comparison, the
per-GPU view and the estimate check — on a simulated history with a known slow card and a known
regression, without writing anything."""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from html import unescape
from datetime import datetime, timedelta, timezone

import pytest

from perflib.analysis import PerformanceAnalyzer
from perflib.analysis.estimate_accuracy import estimate_check
from perflib.config import Settings
from perflib.prediction.predictor import PerformancePredictor
from perflib.report.data import weekly_data
from perflib.report.summary import summary_markdown
from perflib.report.tables import (alert_table, bottleneck_table, estimate_table, gpu_table,
                                   headline_table, pipeline_table, trend_table)
from perflib.sim.simulate import Incident, simulate_history
from perflib.store import Store
from perflib.units import format_count, format_percent
from tests.conftest import row_counts

END = datetime(2026, 11, 26, tzinfo=timezone.utc)
REGRESSION = (END - timedelta(days=9)).date()


def _simulated(folder) -> Store:
    """Four weeks on four GPUs (two hosts; RTX 4090s and faster A100s alternate) with a video
    driver regression nine days before the end."""
    store = Store(f"sqlite:///{folder / 'perflib.db'}", Settings(spool_dir=folder / "spool"))
    simulate_history(store, weeks=4, gpus=4, gpus_per_host=2, seed=3, end=END,
                     jobs_per_day=120, incidents=[Incident("driver_regression", REGRESSION,
                                                           None, "video", magnitude=0.3)])
    return store


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Store:
    return _simulated(tmp_path_factory.mktemp("report-data"))


def test_one_pipeline_report_counts_only_that_pipeline(history):
    analyzer = PerformanceAnalyzer(history)
    everything = analyzer.generate_performance_report(7, END)
    video = analyzer.generate_performance_report(7, END, "video")
    assert video["pipeline_type"] == "video"
    assert video["overall_statistics"]["total_jobs"] == \
        everything["per_pipeline"]["video"]["jobs"] < everything["overall_statistics"]["total_jobs"]
    assert set(video["per_pipeline"]) == set(video["trends"]) == {"video"}
    assert video["bottlenecks"] and {b["pipeline_type"] for b in video["bottlenecks"]} == {"video"}
    assert video["alerts"] and {a["pipeline_type"] for a in video["alerts"]} == {"video"}
    assert 0 < video["prediction_accuracy"]["jobs_with_estimate"] < \
        everything["prediction_accuracy"]["jobs_with_estimate"]


def test_the_period_before_is_the_same_length_just_before(history):
    analyzer = PerformanceAnalyzer(history)
    previous = analyzer.performance_report(7, END).previous
    assert previous.start == END - timedelta(days=14)
    expected = analyzer.overall_statistics(7, END - timedelta(days=7))
    expected.pop("per_pipeline")
    assert asdict(previous.statistics) == expected
    assert previous.accuracy == analyzer.prediction_accuracy(7, END - timedelta(days=7))


def test_the_report_dict_is_the_typed_report_as_json(history):
    """``generate_performance_report`` (the service's JSON, ``perflib analyze --json``) is the
    typed report's ``as_dict``: the documented keys, the report's rounded figures, JSON text."""
    analyzer = PerformanceAnalyzer(history)
    typed = analyzer.performance_report(7, END, "video")
    report = analyzer.generate_performance_report(7, END, "video")
    assert list(report) == [
        "period_days", "start", "end", "pipeline_type", "generated_at", "simulated",
        "data_origin", "overall_statistics", "per_pipeline", "bottlenecks", "trends", "alerts",
        "opportunities", "prediction_accuracy", "previous_period"]
    assert {**report, "generated_at": None} == {**typed.as_dict(), "generated_at": None}
    assert json.loads(json.dumps(report, default=str)) == report
    assert report["start"] == typed.start.isoformat() == (END - timedelta(days=7)).isoformat()
    assert report["data_origin"]["notice"] == typed.notice and report["simulated"] is True
    assert [b["severity"] for b in report["bottlenecks"]] == \
        [b.severity for b in typed.bottlenecks] == \
        [round(b.severity, 3) for b in analyzer.analyze_bottlenecks(7, "video", END)]
    assert report["alerts"][0]["evidence"] == typed.alerts[0].evidence


def test_per_gpu_view_shows_every_card_and_the_slower_model(history):
    gpus = PerformanceAnalyzer(history).gpu_usage(7, END)
    assert list(zip(gpus.hostname, gpus.gpu_index)) == [
        ("render-01", 0), ("render-01", 1), ("render-02", 0), ("render-02", 1)]
    assert gpus.jobs.sum() == PerformanceAnalyzer(history).overall_statistics(
        7, END)["total_jobs"]
    assert ((gpus.busy_share > 0) & (gpus.busy_share <= 1)).all()
    assert gpus.gpu_util_pct.between(1, 100).all()
    rtx = gpus[gpus.gpu_name.str.contains("4090")].relative_time
    a100 = gpus[gpus.gpu_name.str.contains("A100")].relative_time
    assert rtx.min() > 1.1 * a100.max()  # the A100 is 1.3× faster for the same work


def test_estimate_check_replays_the_model_and_marks_it_in_sample(history, tmp_path):
    analyzer = PerformanceAnalyzer(history)
    start, end = analyzer.window(7, END)
    jobs = analyzer.job_sample(7, END)
    untrained = estimate_check(history, jobs, start)
    assert untrained.models == {"image": "none: no trained model",
                                "video": "none: no trained model"}
    assert not untrained.in_sample["video"]
    assert untrained.jobs.replay_low.isna().all() and untrained.coverage() is None
    # stored estimates: a share of the week's successful jobs carry predicted_seconds
    given = untrained.jobs.estimate_seconds.notna()
    assert 0 < given.sum() < len(untrained.jobs)

    copy = _simulated(tmp_path)  # the same history, with a model trained on all of it
    predictor = PerformancePredictor(copy)
    predictor.train_model("video", "linear_regression", progress=False)
    predictor.save_model_to_db("video", "linear_regression")
    trained = estimate_check(copy, jobs, start)
    assert trained.models["video"].startswith("linear regression v1, trained on jobs up to")
    assert trained.in_sample["video"]
    assert 0.5 < trained.coverage() <= 1
    videos = trained.jobs.pipeline_type == "video"
    assert trained.jobs.replay_low[videos].notna().all()
    assert trained.jobs.replay_low[~videos].isna().all()  # image has no model: not replayed
    daily = trained.daily()
    assert list(daily.columns) == ["day", "estimated_jobs", "within_20_percent",
                                   "interval_coverage"]
    assert daily.estimated_jobs.sum() == given.sum()


def test_the_replayed_jobs_span_the_whole_period(history, tmp_path, monkeypatch):
    """At most REPLAY_ROWS jobs a pipeline are replayed, spread over every day of the period
    (the first REPLAY_ROWS of the time-ordered sample covered only its first days)."""
    from perflib.analysis import estimate_accuracy

    analyzer = PerformanceAnalyzer(history)
    start, _ = analyzer.window(7, END)
    jobs = analyzer.job_sample(7, END)
    copy = _simulated(tmp_path)
    predictor = PerformancePredictor(copy)
    predictor.train_model("video", "linear_regression", progress=False)
    predictor.save_model_to_db("video", "linear_regression")
    monkeypatch.setattr(estimate_accuracy, "REPLAY_ROWS", 30)
    check = estimate_check(copy, jobs, start)
    replayed = check.jobs[check.jobs.replay_low.notna()]
    assert 20 <= len(replayed) <= 30
    assert replayed.day.nunique() == 7 == check.jobs.day.nunique()


def test_weekly_data_for_one_pipeline_reads_only(history):
    before = row_counts(history)
    week = weekly_data(history, 1, "video", END.date().isoformat())
    assert row_counts(history) == before
    assert not week.empty and set(week.report.trends) == {"video"}
    for frame in (week.daily, week.previous_daily, week.jobs, week.queue, week.phases,
                  week.estimates.jobs):
        assert set(frame.pipeline_type) == {"video"}
    assert len(week.gpus) == 4


def test_tables_read_as_words_without_python_reprs(history):
    week = weekly_data(history, 1, None, END.date().isoformat())
    report = week.report
    html = "".join(table.to_html() for table in (
        headline_table(report), pipeline_table(report), trend_table(report.trends),
        bottleneck_table(report.bottlenecks), alert_table(report.alerts),
        gpu_table(week.gpus), estimate_table(week.estimates)))
    text = html_text(html)
    for raw in ("{", "}", "…", "_", "nan", "None"):
        assert raw not in text, raw
    # a rate shown as a raw fraction (durations and p-values may have three decimals)
    assert not re.search(r"(?<![<=] )\b0\.\d{3,}\b(?! s)", text)
    assert re.search(r"\d+\.\d%", text)  # rates as percentages
    assert f"{REGRESSION.day} {REGRESSION:%b}: +" in text  # the regression's change-point


def test_an_empty_period_has_nothing_to_tabulate(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}", Settings(spool_dir=tmp_path / "spool"))
    store.init_db()
    week = weekly_data(store)
    assert week.empty and week.gpus.empty and week.estimates.jobs.empty
    assert week.estimates.daily().empty and week.estimates.coverage() is None
    assert pipeline_table(week.report).data == "No jobs in this period."
    assert gpu_table(week.gpus).data == "No GPU ran a job in this period."


def html_text(html: str) -> str:
    """What a browser shows of a table's HTML: its text, tags and styles dropped, entities
    decoded."""
    without_style = re.sub(r"<style.*?</style>", "", html, flags=re.DOTALL)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", without_style)).split())


def test_a_window_without_jobs_says_so(history):
    week = weekly_data(history, 1, None, "2020-01-06")
    assert week.empty
    assert week.report.notice.startswith("No jobs in this period")
    assert summary_markdown(week.report) == "Nothing to summarise: no jobs ran in this period."


def test_summary_and_estimate_table_give_one_within_20_figure_for_a_week(history, monkeypatch):
    """The summary's within-20% figure and the estimates table's are computed on the same jobs
    (every estimated job of the week), even when the charts read a sample of the week."""
    sample = PerformanceAnalyzer.job_sample
    monkeypatch.setattr(PerformanceAnalyzer, "job_sample",
                        lambda self, days_back=7, end=None: sample(self, days_back, end, 100))
    week = weekly_data(history, 1, "video", END.date().isoformat())
    accuracy = week.report.accuracy
    assert accuracy.jobs_with_estimate > len(week.jobs)  # the table's jobs are a sample
    summary = format_percent(accuracy.accuracy_within_20_percent)
    assert f"within 20% for {summary} of the" in summary_markdown(week.report)
    row = estimate_table(week.estimates).data.iloc[0]
    assert row["Estimates within 20%"] == summary
    assert row["With an estimate"] == format_count(accuracy.jobs_with_estimate)
