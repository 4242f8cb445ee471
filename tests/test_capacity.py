"""Capacity planning, validated on simulated history with known GPU counts: the planner's p95
wait against the one the history saw, a planted burst removed by the recommended GPUs,
Erlang-C against textbook values, and bad input refused by name."""
from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from perflib.analysis import PerformanceAnalyzer
from perflib.capacity import erlang, plan_capacity
from perflib.capacity.arrivals import arrival_pattern
from perflib.capacity.simulation import Workload, run_queue
from perflib.cli import main
from perflib.queue.fifo import fifo_waits
from perflib.queue.search import smallest_gpus
from perflib.sim.simulate import Incident, generate_jobs, simulate_history
from perflib.store import Store
from tests.conftest import row_counts

END = datetime(2026, 11, 2, tzinfo=timezone.utc)  # a Monday
BURST = Incident("queue_backlog", (END - timedelta(days=7)).date(),
                 (END - timedelta(days=1)).date(), magnitude=2.0)


def _history(folder, gpus: int, jobs_per_day: float, weeks: int = 2, seed: int = 3,
             incidents=()) -> Store:
    store = Store(f"sqlite:///{folder / f'history-{gpus}.db'}")
    store.init_db()
    simulate_history(store, weeks=weeks, gpus=gpus, seed=seed, end=END,
                     jobs_per_day=jobs_per_day, incidents=incidents)
    return store


def _queue_seconds(store: Store, since: datetime) -> "np.ndarray":
    query = sa.text("SELECT queue_seconds FROM generation_performance WHERE submitted_at >= "
                    ":since").bindparams(since=since.strftime("%Y-%m-%d %H:%M:%S"))
    return store.frame(query).queue_seconds.to_numpy()


@pytest.fixture(scope="module")
def busy_history(tmp_path_factory) -> Store:
    """Two weeks on 2 GPUs at 600 jobs a day: waits of a minute or more at busy hours."""
    return _history(tmp_path_factory.mktemp("busy"), gpus=2, jobs_per_day=600)


def test_predicted_p95_wait_for_the_real_gpus_is_within_25_percent_of_the_history(busy_history):
    """Overall p95 (every job of the window), not per hour: an hour holds too few jobs in two
    weeks of history for its own p95 to be a stable target."""
    plan = plan_capacity(busy_history, days=14, end=END, weeks=8, per_hour=False)
    observed = np.quantile(_queue_seconds(busy_history, END - timedelta(days=14)), 0.95)
    assert plan.current_gpus == 2  # read from the history, not given
    assert observed > 30  # waits are not trivial at this load
    assert plan.current.overall_p95_wait_seconds == pytest.approx(observed, rel=0.25)
    assert plan.service.sources == {"image": "observed processing seconds",
                                    "video": "observed processing seconds"}


def test_recommended_gpus_remove_the_planted_burst_alerts_when_re_simulated(tmp_path):
    """A week-long backlog (3x the arrivals, in batches of 8) on 2 GPUs raises the queue
    alert; the history re-simulated with the planner's GPUs for that week does not."""
    before = _history(tmp_path, gpus=2, jobs_per_day=300, incidents=[BURST])
    alerts = [b.type.value for b in PerformanceAnalyzer(before).analyze_bottlenecks(7, None, END)]
    assert "high_queue_time" in alerts
    plan = plan_capacity(before, days=7, end=END, weeks=4)
    burst_waits = _queue_seconds(before, END - timedelta(days=7))
    assert plan.current.overall_p95_wait_seconds == pytest.approx(
        np.quantile(burst_waits, 0.95), rel=0.25)
    assert plan.recommended_gpus > plan.erlang_gpus  # bursts and long jobs: Erlang-C is short
    assert plan.dispersion > 2  # the planted batches show as bursts

    after = _history(tmp_path, gpus=plan.recommended_gpus, jobs_per_day=300, incidents=[BURST])
    alerts = [b.type.value for b in PerformanceAnalyzer(after).analyze_bottlenecks(7, None, END)]
    assert "high_queue_time" not in alerts
    assert np.quantile(_queue_seconds(after, END - timedelta(days=7)), 0.95) <= 30
    # One hour of one history holds 10-40 jobs, so its own p95 is noisier than the planner's,
    # which pools that hour of the week over the simulated weeks: allow 1% of hours above.
    hourly = store_hourly_p95(after, END - timedelta(days=7))
    assert (hourly > 30).mean() <= 0.01, hourly[hourly > 30]


def store_hourly_p95(store: Store, since: datetime):
    """p95 queue wait of each clock hour since `since`."""
    query = sa.text("SELECT queue_seconds, submitted_at FROM generation_performance WHERE "
                    "submitted_at >= :since").bindparams(since=since.strftime("%Y-%m-%d"))
    jobs = store.frame(query)
    return jobs.groupby(jobs.submitted_at.dt.floor("h")).queue_seconds.quantile(0.95)


def test_erlang_c_matches_the_textbook():
    # offered load 2 Erlang on 3 servers: P(wait) = (8/6 · 3) / (1 + 2 + 2 + 4) = 4/9
    assert erlang.wait_probability(2.0, 1.0, 3) == pytest.approx(4 / 9)
    # P(W > t) = 4/9 · e^-(3-2)t, so the p95 wait is ln((4/9) / 0.05)
    assert erlang.wait_quantile(2.0, 1.0, 3) == pytest.approx(math.log(80 / 9))
    assert erlang.wait_probability(1.0, 1.0, 1) == 1.0  # saturated
    assert erlang.wait_quantile(0.5, 1.0, 1, 0.4) == 0.0  # half wait: the 40% quantile is 0
    assert erlang.servers_needed(2.0, 1.0, target_seconds=2.19) == 3
    assert erlang.servers_needed(2.0, 1.0, target_seconds=2.18) == 4


def test_the_simulation_agrees_with_erlang_c_on_an_m_m_c_queue():
    """Poisson arrivals and exponential service: the one case where both must agree."""
    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(1 / 2.0, 200_000))  # λ = 2 per second
    arrivals = arrivals[arrivals < 168 * 3600]
    workload = Workload(arrivals, rng.exponential(1.0, arrivals.size), weeks=1)  # μ = 1
    result = run_queue(workload, gpus=3)
    assert result.overall_p95_wait_seconds == pytest.approx(math.log(80 / 9), rel=0.05)
    assert result.utilisation[:20].mean() == pytest.approx(2 / 3, rel=0.05)


def test_the_simulation_queues_as_estimate_time_does():
    """Jobs all arriving at once start when estimate-time's queue says they would."""
    from perflib.queue.fifo import queue_starts

    services = np.random.default_rng(2).exponential(60.0, 50)
    waits = fifo_waits(np.zeros(50), services, gpus=3)
    assert waits == pytest.approx(queue_starts([], services.tolist(), 3)[:-1])


def test_the_plan_runs_on_sqlite_and_postgresql_with_a_sampled_service_time(db_url, settings):
    """With a window larger than the sample: TABLESAMPLE on PostgreSQL, an id stride on
    SQLite."""
    store = Store(db_url, settings)
    store.init_db()
    simulate_history(store, weeks=1, gpus=1, seed=4, end=END, jobs_per_day=150)
    plan = plan_capacity(store, days=7, end=END, weeks=1, sample_rows=300, per_hour=False)
    assert 50 < len(plan.service.seconds) < 600
    assert plan.current_gpus == 1 and plan.recommended_gpus >= plan.current_gpus
    assert len(plan.hours) == 168 and plan.hours.arrivals_per_hour.sum() > 900
    assert not any("Per hour" in line for line in plan.differences())  # none computed


def test_gpu_search_finds_the_smallest_count_from_any_guess():
    for needed in (1, 2, 7, 40):
        for guess in (1, 3, 39, 100):
            calls = []
            assert smallest_gpus(lambda n: calls.append(n) or n >= needed, guess) == needed
            assert len(calls) <= 2 * math.log2(max(needed, guess)) + 3


def test_arrivals_are_counted_per_minute_in_the_database(db_url, settings):
    """On SQLite and PostgreSQL alike; a job without submitted_at arrives at started_at less
    its queue time."""
    records = list(generate_jobs(weeks=1, gpus=1, seed=5, end=END, jobs_per_day=80))
    for record in records[::2]:
        record["submitted_at"] = record["queued_at"] = None
    store = Store(db_url, settings)
    store.init_db()
    store.write_jobs(records)
    pattern = arrival_pattern(store, END - timedelta(days=7), END)
    expected = np.zeros(7 * 24 * 60, dtype=int)
    for record in records:
        arrived = record["started_at"] - timedelta(seconds=record["queue_seconds"])
        minute = int((arrived - (END - timedelta(days=7))).total_seconds() // 60)
        if 0 <= minute < expected.size:
            expected[minute] += 1
    assert np.array_equal(pattern.per_minute.ravel(), expected)
    assert pattern.hour_of_week[0] == 0  # the week starts on Monday 00:00
    assert pattern.arrivals_per_hour.sum() == pytest.approx(expected.sum())


def test_a_window_reaching_past_now_plans_from_the_last_whole_week(tmp_path):
    """A history ending now: the window ending at tonight's midnight is moved back to end at
    this hour, so today's hours still to come do not count as quiet ones."""
    store = Store(f"sqlite:///{tmp_path / 'now.db'}")
    store.init_db()
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    simulate_history(store, weeks=2, gpus=1, seed=6, end=now, jobs_per_day=100)
    plan = plan_capacity(store, days=7, weeks=1, per_hour=False)
    assert plan.end == now and plan.start == now - timedelta(days=7)


def test_planning_reads_only(busy_history):
    before = row_counts(busy_history)
    plan_capacity(busy_history, days=14, end=END, weeks=1, per_hour=False)
    assert row_counts(busy_history) == before


def test_a_stored_model_prices_the_service_times(tmp_path):
    from perflib.prediction.predictor import PerformancePredictor

    store = _history(tmp_path, gpus=2, jobs_per_day=200, weeks=1)
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    plan = plan_capacity(store, days=7, end=END, weeks=1, per_hour=False,
                         predictor=PerformancePredictor(store))
    assert set(plan.service.sources) == {"image", "video"}
    assert all(source.startswith("predicted by linear_regression")
               for source in plan.service.sources.values())


@pytest.mark.parametrize("options, field", [
    (dict(gpus=0), "gpus"), (dict(gpus=2.5), "gpus"), (dict(days=3), "days"),
    (dict(target_wait_seconds=-1), "target_wait_seconds"), (dict(weeks=0), "weeks")])
def test_bad_arguments_are_refused_naming_the_field(busy_history, options, field):
    with pytest.raises(ValueError, match=field):
        plan_capacity(busy_history, end=END, **options)


@pytest.mark.parametrize("call, field", [
    (lambda: erlang.wait_probability(1.0, 1.0, 0), "servers"),
    (lambda: erlang.wait_probability(-1.0, 1.0, 2), "arrival_rate"),
    (lambda: erlang.wait_quantile(1.0, 0.0, 2), "service_rate"),
    (lambda: erlang.wait_quantile(1.0, 1.0, 2, quantile=1.5), "quantile")])
def test_erlang_refuses_bad_input_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_empty_database_gets_a_plain_message(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).init_db()
    assert main(["--database-url", url, "capacity"]) == 2
    error = capsys.readouterr().err
    assert "no job arrived" in error and "Traceback" not in error


def test_cli_prints_the_recommendation_and_json(busy_history, capsys):
    url = str(busy_history.url.render_as_string(hide_password=False))
    args = ["--database-url", url, "capacity", "--days", "14", "--end-date", "2026-11-02",
            "--weeks", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "GPUs keep the p95 queue wait within 30 s" in text and "Erlang-C" in text
    assert "Mon" in text and "Worst hours with 2 GPUs" in text
    assert main([*args, "--json", "--gpus", "3", "--target-wait", "60"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["current_gpus"] == 3 and plan["target_wait_seconds"] == 60
    assert len(plan["hours"]) == 168


def test_one_gpu_reads_in_the_singular(busy_history, capsys):
    url = str(busy_history.url.render_as_string(hide_password=False))
    assert main(["--database-url", url, "capacity", "--days", "14", "--end-date", "2026-11-02",
                 "--weeks", "1", "--gpus", "1"]) == 0
    text = capsys.readouterr().out
    assert "(now 1 GPU):" in text and "Worst hours with 1 GPU:" in text
    assert "1 GPUs" not in text and "-0.0%" not in text
    plan = plan_capacity(busy_history, days=14, end=END, weeks=1, per_hour=False)
    one = dataclasses.replace(plan, recommended_gpus=1, erlang_gpus=2)
    assert one.sentence().startswith("1 GPU keeps the p95 queue wait within 30 s")
    assert "The simulation needs 1 GPU fewer than Erlang-C" in one.differences()[1]


def test_cli_refuses_zero_gpus_naming_the_option(busy_history, capsys):
    url = str(busy_history.url.render_as_string(hide_password=False))
    with pytest.raises(SystemExit) as exit_info:
        main(["--database-url", url, "capacity", "--gpus", "0"])
    assert exit_info.value.code == 2
    assert "--gpus" in capsys.readouterr().err


def test_weekly_report_shows_the_capacity_of_its_period(busy_history):
    from perflib.report.data import weekly_data
    from perflib.report.tables import capacity_table

    week = weekly_data(busy_history, end_date="2026-11-02")
    assert week.capacity.current_gpus == 2 and week.capacity.weeks_simulated == 1
    assert week.capacity.start == END - timedelta(days=7)
    html = capacity_table(week.capacity).to_html()
    assert "Worst p95 wait, 2 GPUs" in html and "Erlang-C GPUs" in html
    assert f"{week.capacity.recommended_gpus} GPUs keep the p95 queue wait" in html


def test_weekly_report_without_jobs_has_no_capacity_plan(tmp_path):
    from perflib.report.data import weekly_data
    from perflib.report.tables import capacity_table

    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    store.init_db()
    week = weekly_data(store)
    assert week.capacity is None
    assert "No capacity plan" in capacity_table(None).data
