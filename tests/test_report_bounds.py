"""The weekly report's read paths do bounded work on a database far bigger than their bounds:
rows fetched and SQLite VM steps are counted on the real connection (a row factory and a progress
handler), and what the samples and the SQL screen give agrees with the exact figures."""
from __future__ import annotations

import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from perflib.analysis import PerformanceAnalyzer, anomalies, daily
from perflib.analysis.origin import COUNT_CAP, data_origin
from perflib.config import Settings
from perflib.prediction.features import HISTORY_WINDOW
from perflib.sim.simulate import Incident, simulate_history
from perflib.store import Store

END = datetime(2026, 11, 23, tzinfo=timezone.utc)
WEEK = (END - timedelta(days=7), END)
SAMPLE = 300


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Store:
    """Four weeks of a busy fleet (about 56,000 jobs, 14,000 a week), with slow jobs planted
    (a driver regression on video the last four days)."""
    folder = tmp_path_factory.mktemp("report-bounds")
    store = Store(f"sqlite:///{folder / 'perflib.db'}", Settings(spool_dir=folder / "spool"))
    simulate_history(store, weeks=4, gpus=8, gpus_per_host=4, seed=5, end=END,
                     jobs_per_day=2000, incidents=[Incident(
                         "driver_regression", (END - timedelta(days=4)).date(), None, "video",
                         magnitude=0.3)])
    return store


@contextmanager
def counted(store: Store):
    """Rows fetched and thousands of VM steps (SQLite), and SQL statements run on `store`
    inside."""
    tally = {"rows": 0, "ksteps": 0, "statements": []}

    def row(cursor, values):
        tally["rows"] += 1
        return values

    def step():
        tally["ksteps"] += 1
        return 0

    def checkout(dbapi_connection, record, proxy):
        if isinstance(dbapi_connection, sqlite3.Connection):  # PostgreSQL: statements only
            dbapi_connection.row_factory = row
            dbapi_connection.set_progress_handler(step, 1000)

    def checkin(dbapi_connection, record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.row_factory = None
            dbapi_connection.set_progress_handler(None, 0)

    def statement(conn, cursor, sql, parameters, context, executemany):
        tally["statements"].append(sql)

    listeners = [(store.engine, "checkout", checkout), (store.engine, "checkin", checkin),
                 (store.engine, "before_cursor_execute", statement)]
    for target, name, listener in listeners:
        sa.event.listen(target, name, listener)
    try:
        yield tally
    finally:
        for target, name, listener in listeners:
            sa.event.remove(target, name, listener)


def _window_jobs(store: Store) -> int:
    return len(store.jobs_frame(*WEEK))


def test_job_sample_work_does_not_grow_with_the_window(fleet):
    """The old ORDER BY random() sorted every job of the week: ~14,000 rows for 300 wanted."""
    analyzer = PerformanceAnalyzer(fleet)
    assert _window_jobs(fleet) > 40 * SAMPLE
    with counted(fleet) as small:
        analyzer.job_sample(7, END, limit=SAMPLE)
    with counted(fleet) as large:
        sample = analyzer.job_sample(7, END, limit=10 * SAMPLE)
    assert small["rows"] <= SAMPLE + 10
    assert small["ksteps"] < large["ksteps"] / 4, (small["ksteps"], large["ksteps"])
    assert 0.8 * 10 * SAMPLE <= len(sample) <= 10 * SAMPLE
    assert sample.started_at.is_monotonic_increasing


def test_job_sample_agrees_with_the_whole_week(fleet):
    """An even sample: its mean processing time and its share per pipeline within 10% of the
    week's own."""
    week = fleet.jobs_frame(*WEEK)
    week = week[week.status.isin(["success", "failed"])]
    sample = PerformanceAnalyzer(fleet).job_sample(7, END, limit=10 * SAMPLE)
    assert sample.processing_seconds.mean() == pytest.approx(week.processing_seconds.mean(),
                                                             rel=0.1)
    shares = sample.pipeline_type.value_counts(normalize=True)
    for pipeline, share in week.pipeline_type.value_counts(normalize=True).items():
        assert shares[pipeline] == pytest.approx(share, rel=0.1)
    assert sample.started_at.min() >= WEEK[0] and sample.started_at.max() < WEEK[1]


@pytest.mark.postgres
def test_job_sample_is_the_same_on_every_run_on_postgres(pg_url, tmp_path):
    """TABLESAMPLE draws more rows than are kept; the ones kept are the same each run (they
    were ORDER BY random(): one week's charts could render differently)."""
    store = Store(pg_url, Settings(spool_dir=tmp_path / "spool"))
    simulate_history(store, weeks=1, gpus=4, seed=5, end=END, jobs_per_day=1500)
    analyzer = PerformanceAnalyzer(store)
    first = analyzer.job_sample(7, END, limit=1000)
    assert len(first) == 1000  # the sample held more: which rows are kept must not vary
    for _ in range(3):
        pd.testing.assert_frame_equal(analyzer.job_sample(7, END, limit=1000), first)


def test_data_origin_reads_only_the_window(fleet):
    """The database's jobs are counted only when the window holds none, and then at most
    COUNT_CAP + 1 of them."""
    with counted(fleet) as work:
        origin = data_origin(fleet, *WEEK)
    assert origin.window_jobs == _window_jobs(fleet) and origin.jobs is None
    reads = [s for s in work["statements"] if "generation_performance" in s]
    assert reads and all(re.search(r"WHERE .*started_at >=", s, re.S) for s in reads), reads

    before = data_origin(fleet, END - timedelta(days=70), END - timedelta(days=63))
    assert before.window_jobs == 0 and 0 < before.jobs <= COUNT_CAP + 1
    assert f"holds {before.jobs} jobs, all outside it" in before.notice()


def test_far_slower_jobs_are_screened_in_sql_on_a_large_window(fleet, monkeypatch):
    """Above SCAN_JOBS, only the screened jobs and their groups' last jobs reach Python — and
    they are judged as the whole window would judge them."""
    monkeypatch.setattr(daily, "SAMPLE_JOBS", 1_000)
    exact = anomalies.far_slower_than_expected(fleet, *WEEK)
    monkeypatch.setattr(anomalies, "SCAN_JOBS", 1_000)
    monkeypatch.setattr(anomalies, "SAMPLE_JOBS", 2_000)
    monkeypatch.setattr(anomalies, "MAX_CANDIDATES", 40)
    with counted(fleet) as work:
        screened = anomalies.far_slower_than_expected(fleet, *WEEK)
    # samples (the screen's, the cost fit's), candidates, their histories' ids and rows
    bound = 2 * 2_000 + 1_000 + 40 * (1 + 2 * HISTORY_WINDOW) + 50
    assert work["rows"] <= bound < _window_jobs(fleet), work["rows"]
    assert len(exact) >= 20
    found, truth = set(screened.job_id), set(exact.job_id)
    assert len(found & truth) >= 0.9 * min(len(truth), 40), (len(found), len(truth))
    assert len(found - truth) <= 0.1 * len(found), (len(found), len(truth))


def test_weekly_data_computes_the_trends_once(fleet, monkeypatch):
    """The report and its charts share one trend analysis (it was run twice: 4 s at 1M jobs)."""
    from perflib.report.data import weekly_data

    calls = []
    analyze = PerformanceAnalyzer.analyze_trends
    monkeypatch.setattr(PerformanceAnalyzer, "analyze_trends",
                        lambda self, *args, **kwargs: calls.append(args) or analyze(
                            self, *args, **kwargs))
    week = weekly_data(fleet, end_date=END.isoformat())
    assert len(calls) == 1
    assert week.report.trends  # the charts draw the report's own trends


def test_failure_rates_come_from_the_daily_aggregates(fleet):
    """The failure-spike baseline (four weeks) is read from the stored daily aggregates, not
    from the jobs: the same rates as counting the jobs."""
    from perflib.ops.aggregates import refresh_aggregates
    from perflib.analysis import alerts

    refresh_aggregates(fleet)  # what `perflib maintain` keeps up to date
    with counted(fleet) as work:
        alerts._failure_spikes(fleet, *WEEK, 0.05)
    ranges = [s for s in work["statements"] if "started_at >=" in s]  # a range of jobs
    assert not ranges, ranges
    baseline = (WEEK[0] - timedelta(days=alerts.BASELINE_DAYS), WEEK[0])
    rates = alerts._failure_rates(fleet, *baseline)
    jobs = fleet.jobs_frame(*baseline)
    jobs = jobs[jobs.status.isin(["success", "failed", "cancelled"])]
    assert set(rates) == set(jobs.pipeline_type)
    for pipeline, group in jobs.groupby("pipeline_type"):
        assert rates[pipeline] == (pytest.approx((group.status == "failed").mean()), len(group))


def test_phase_shares_come_from_a_bounded_sample(fleet):
    """Shares of phase time from SAMPLE jobs: work that does not grow with the week, shares
    within 3 points of the whole week's."""
    analyzer = PerformanceAnalyzer(fleet)
    with counted(fleet) as small:
        sampled = analyzer.phase_shares(7, END, sample_jobs=SAMPLE)
    with counted(fleet) as whole:
        exact = analyzer.phase_shares(7, END, sample_jobs=10 ** 6)
    assert small["ksteps"] < whole["ksteps"] / 4, (small["ksteps"], whole["ksteps"])
    keys = ["pipeline_type", "job_type", "phase"]
    both = exact.merge(sampled, on=keys, suffixes=("", "_sampled"))
    assert len(both) >= 0.9 * len(exact)
    assert (both.share - both.share_sampled).abs().max() < 0.03
    assert both.seconds_sampled.sum() == pytest.approx(both.seconds.sum(), rel=0.15)


def test_a_report_looks_up_only_its_own_stored_alerts(fleet):
    """Open alerts pile up on a fleet nobody acknowledges them on: a report reads the stored
    state of the alerts its window calls for, not every open one."""
    from perflib.analysis import alerts
    from perflib.ops.alerts import save_alerts

    old = [{"alert_type": "slow_job_contention", "pipeline_type": "image", "severity": "medium",
            "message": f"contention on render-{n}", "evidence": {},
            "fingerprint": f"slow_job_contention|render-{n}|2026-10-01T00:00"}
           for n in range(500)]
    save_alerts(fleet, old, END - timedelta(days=50))
    mine = {**old[0], "fingerprint": "failure_rate_spike|image", "message": "new"}
    with counted(fleet) as work:
        reported = alerts.as_reported(fleet, [old[7], mine], END)
    assert work["rows"] <= 5, work["rows"]
    assert reported[0]["id"] is not None and reported[0]["first_seen"] < END.isoformat()
    assert reported[1]["id"] is None and reported[1]["first_seen"] == END.isoformat()


@pytest.mark.postgres
def test_postgresql_takes_percentiles_as_ordered_set_aggregates(pg_url, tmp_path):
    """The same medians and p95s as SQLite's ranks, without ranking the week's rows."""
    figures = []
    for url in (f"sqlite:///{tmp_path / 'perflib.db'}", pg_url):
        store = Store(url, Settings(spool_dir=tmp_path / "spool"))
        simulate_history(store, weeks=1, gpus=4, seed=9, end=END, jobs_per_day=300)
        with counted(store) as work:
            statistics = PerformanceAnalyzer(store).overall_statistics(7, END)
        figures.append({pipeline: (row["median_generation_time"], row["p95_generation_time"])
                        for pipeline, row in statistics["per_pipeline"].items()})
    assert figures[0] == figures[1] and len(figures[1]) == 2
    assert not [s for s in work["statements"] if "ROW_NUMBER()" in s.upper()]
    assert any("PERCENTILE_DISC" in s.upper() for s in work["statements"])
