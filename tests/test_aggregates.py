"""Daily aggregates kept incrementally: only days with new jobs are recomputed, a late job
updates its day, stored days equal a recomputation from scratch, trends never read the raw jobs,
readers never write, and bottleneck detection reads a bounded sample."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from perflib.analysis import PerformanceAnalyzer, bottlenecks
from perflib.analysis.daily import GROUP_KEYS, daily_stats, group_sums
from perflib.analysis.daily_aggregates import daily_frame, read_state
from perflib.analysis.sql import sampled_jobs
from perflib.ops.aggregates import refresh_aggregates
from perflib.sim.simulate import default_incidents, generate_jobs, simulate_history
from perflib.store import Store
from perflib.store.deletion import delete_jobs
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_daily_groups, performance_trends
from tests.conftest import row_counts

END = datetime(2026, 11, 25, tzinfo=timezone.utc)
NOW = timedelta(0)  # settle: treat every job as committed (the tests write nothing concurrently)


def _history(url: str, settings, weeks: int = 2, incidents=()) -> Store:
    store = Store(url, settings)
    simulate_history(store, weeks=weeks, gpus=2, seed=5, end=END, jobs_per_day=60,
                     incidents=incidents)
    return store


def _stored(store: Store, table: sa.Table) -> pd.DataFrame:
    return store.frame(sa.select(table)).drop(columns="id")


def _late_job(day) -> dict:
    """A finished job of `day` that reaches the database after its day was aggregated."""
    for record in generate_jobs(weeks=2, gpus=2, seed=9, end=END, jobs_per_day=60):
        if record["started_at"].date() == day and record["status"] == "success":
            return {**record, "job_id": f"late-{record['job_id']}"}
    raise AssertionError("no job on that day")


class _Statements:
    """Every SQL statement the store's engine runs while it listens."""

    def __init__(self, store: Store):
        self.engine, self.seen = store.engine, []

    def _record(self, conn, cursor, statement, *args):
        self.seen.append(statement)

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._record)


def test_a_refresh_recomputes_only_the_days_with_new_jobs(db_url, settings):
    store = _history(db_url, settings)
    first = refresh_aggregates(store, settle=NOW)
    assert first == store.count(performance_trends) > 0
    assert refresh_aggregates(store, settle=NOW) == 0, "nothing new: nothing recomputed"
    before = _stored(store, performance_trends).set_index(["day", "pipeline_type"]).sort_index()

    late_day = (END - timedelta(days=5)).date()
    store.write_jobs([_late_job(late_day)])
    written = refresh_aggregates(store, settle=NOW)
    after = _stored(store, performance_trends).set_index(["day", "pipeline_type"]).sort_index()
    assert written == len(after.loc[[late_day]])
    changed = after.updated_at != before.updated_at
    assert set(after.index[changed].get_level_values("day")) == {late_day}
    assert after.job_count.sum() == before.job_count.sum() + 1


def test_a_job_younger_than_the_settle_time_is_read_again(db_url, settings):
    store = _history(db_url, settings, weeks=1)
    refresh_aggregates(store)  # every job was just recorded: the mark stays below them
    assert read_state(store).high_water_id == 0
    assert refresh_aggregates(store) > 0, "their days are recomputed by the next refresh"


def test_incremental_aggregates_equal_a_computation_from_scratch(db_url, settings):
    store = _history(db_url, settings)
    refresh_aggregates(store, settle=NOW)
    store.write_jobs([_late_job((END - timedelta(days=9)).date()),
                      _late_job((END - timedelta(days=2)).date())])
    refresh_aggregates(store, settle=NOW)
    models = read_state(store).cost_models
    start = END - timedelta(days=30)
    scratch = daily_stats(store, start, END, models=models)
    stored = _stored(store, performance_trends)[scratch.columns]
    pd.testing.assert_frame_equal(
        stored.sort_values(["day", "pipeline_type"]).reset_index(drop=True), scratch,
        check_dtype=False, check_exact=False, rtol=1e-9)
    keys = ["day", *GROUP_KEYS]
    scratch_groups = group_sums(store, [(start, END)]).sort_values(keys, na_position="first")
    stored_groups = _stored(store, performance_daily_groups)[scratch_groups.columns]
    pd.testing.assert_frame_equal(
        stored_groups.sort_values(keys, na_position="first").reset_index(drop=True),
        scratch_groups.reset_index(drop=True), check_dtype=False, check_exact=False,
        rtol=1e-9)


def test_trends_read_the_aggregates_not_the_raw_jobs(sqlite_url, settings):
    incidents = default_incidents(END.date(), 4)
    store = _history(sqlite_url, settings, weeks=4, incidents=incidents)
    analyzer = PerformanceAnalyzer(store)
    refresh_aggregates(store, settle=NOW)
    with _Statements(store) as statements:
        trends = analyzer.analyze_trends(30, end=END)
    raw_reads = [s for s in statements.seen if "generation_performance" in s]
    assert raw_reads and all("generation_performance.id >" in s for s in raw_reads), \
        "only the look-up of jobs above the high-water mark touches the jobs table"
    incident = next(i for i in incidents if i.kind == "driver_regression")
    video = trends[incident.pipeline_type or "video"]
    regression = next(c for c in video.change_points if c.change_pct > 0)
    assert abs((regression.day - incident.start).days) <= 1
    assert abs(regression.change_pct - 100 * incident.magnitude) < 10

    with store.engine.begin() as conn:
        delete_jobs(conn, sa.true())
    again = analyzer.analyze_trends(30, end=END)
    assert {p: t.as_dict() for p, t in again.items()} == {p: t.as_dict()
                                                          for p, t in trends.items()}


def test_readers_combine_stored_days_with_new_jobs_and_never_write(db_url, settings):
    store = _history(db_url, settings)
    refresh_aggregates(store, settle=NOW)
    store.write_jobs([_late_job((END - timedelta(days=3)).date())])
    counts = row_counts(store)
    start = END - timedelta(days=14)
    with _Statements(store) as statements:
        combined = daily_frame(store, start, END)
        PerformanceAnalyzer(store).analyze_bottlenecks(7, end=END)
    assert not [s for s in statements.seen
                if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert row_counts(store) == counts
    scratch = daily_stats(store, start, END, times=False, speed=False)
    merged = combined.merge(scratch, on=["day", "pipeline_type"], suffixes=("", "_raw"))
    assert len(merged) == len(scratch) == len(combined)
    assert (merged.job_count == merged.job_count_raw).all()
    assert merged.success_rate.to_numpy() == pytest.approx(merged.success_rate_raw.to_numpy())


def test_a_window_within_days_reads_its_partial_days_raw(db_url, settings):
    store = _history(db_url, settings)
    refresh_aggregates(store, settle=NOW)
    start, end = END - timedelta(days=3, hours=7), END - timedelta(hours=5)
    partial = daily_frame(store, start, end)
    scratch = daily_stats(store, start, end, times=False, speed=False)
    assert list(partial.job_count) == list(scratch.job_count)


def test_bottlenecks_from_aggregates_equal_those_from_the_raw_jobs(db_url, settings):
    store = _history(db_url, settings, weeks=3, incidents=default_incidents(END.date(), 3))
    analyzer = PerformanceAnalyzer(store)
    raw = [b.as_dict() for b in analyzer.analyze_bottlenecks(7, end=END)]
    analyzer.aggregate_daily(rebuild=True)
    refresh_aggregates(store, settle=NOW)
    assert read_state(store).high_water_id > 0
    stored = [b.as_dict() for b in analyzer.analyze_bottlenecks(7, end=END)]
    assert raw and stored == raw


def test_the_bottleneck_sample_is_bounded(db_url, settings, monkeypatch):
    store = _history(db_url, settings, weeks=1)
    refresh_aggregates(store, settle=NOW)
    monkeypatch.setattr(bottlenecks, "SAMPLE_ROWS", 50)
    with _Statements(store) as statements:
        PerformanceAnalyzer(store).analyze_bottlenecks(7, end=END)
    sampled = [s for s in statements.seen if "generation_phases" in s]
    assert sampled, "phase times come from the sample"
    marker = "TABLESAMPLE SYSTEM" if store.is_postgres else "SAMPLE_IDS"
    assert all(marker in s.upper() for s in sampled)
    if store.is_postgres:  # one index lookup per sampled job: JIT would compile for seconds
        assert "LATERAL" in sampled[-1].upper()
        assert any("SET LOCAL jit = off" in s for s in statements.seen)
    if not store.is_postgres:  # an id stride: about the size asked for, whatever the window
        window = store.count(jobs)
        sample, fraction = sampled_jobs(store, END - timedelta(days=7), END, window, 50)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(sample)).scalar_one()
        assert 25 <= rows <= 50 and fraction < 0.2


def test_maintenance_aggregates_every_day_with_new_jobs(db_url, settings):
    store = _history(db_url, settings, weeks=3)
    PerformanceAnalyzer(store).maintain(retention_days=365, retrain=False)
    with store.engine.connect() as conn:
        days = set(conn.execute(sa.select(performance_trends.c.day)).scalars())
    assert len(days) == 21, "all three weeks, not only the last two"
    assert store.count(performance_daily_groups) > 0


def test_jobs_that_reuse_the_ids_of_deleted_ones_are_aggregated(db_url, settings):
    store = _history(db_url, settings, weeks=1)
    refresh_aggregates(store, settle=NOW)
    with store.engine.begin() as conn:  # as `perflib purge --simulated` of a whole database
        delete_jobs(conn, sa.true())
    refresh_aggregates(store, settle=NOW)
    store.write_jobs(list(generate_jobs(weeks=1, gpus=1, seed=11, end=END, jobs_per_day=20)))
    refresh_aggregates(store, settle=NOW)  # SQLite numbered them from 1 again
    with store.engine.connect() as conn:
        aggregated = conn.execute(sa.select(sa.func.sum(performance_trends.c.job_count))
                                  ).scalar_one()
    finished = store.count(jobs)
    assert finished > 0 and aggregated == finished


def test_the_aggregate_command_refreshes_and_rebuilds(sqlite_url, settings, capsys):
    from perflib.cli import main

    store = _history(sqlite_url, settings, weeks=1)
    assert main(["--database-url", sqlite_url, "aggregate"]) == 0
    days = store.count(performance_trends)
    assert capsys.readouterr().out.strip() == f"refreshed {days} daily aggregates" and days
    assert main(["--database-url", sqlite_url, "aggregate", "--rebuild"]) == 0
    assert capsys.readouterr().out.strip() == f"rebuilt {days} daily aggregates"


def test_jobs_without_a_job_type_are_one_group_named_by_nothing(db_url, settings):
    store = Store(db_url, settings)
    store.write_jobs([{**record, "job_type": None, "gpu_util_avg_pct": 20.0}
                      for record in generate_jobs(weeks=1, gpus=1, seed=4, end=END,
                                                  jobs_per_day=40)])
    analyzer = PerformanceAnalyzer(store)
    raw = [b for b in analyzer.analyze_bottlenecks(7, end=END)
           if b.type is bottlenecks.BottleneckType.LOW_GPU_UTILIZATION]
    refresh_aggregates(store, settle=NOW)
    stored = [b for b in analyzer.analyze_bottlenecks(7, end=END)
              if b.type is bottlenecks.BottleneckType.LOW_GPU_UTILIZATION]
    assert raw and [b.as_dict() for b in stored] == [b.as_dict() for b in raw]
    assert all(b.scope == {} for b in stored)
