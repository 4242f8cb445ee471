"""How sure the capacity plan is: a young database's window starts at its first job, arrivals
without submission times are named, the simulation agrees with its own counts, and the GPUs
needed are reported week by week (with the count meeting the target in 90% of weeks)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from perflib.capacity import plan_capacity
from perflib.capacity.simulation import Workload, run_queue
from perflib.capacity.spread import NeedSpread
from perflib.cli import main
from perflib.sim.simulate import generate_jobs, simulate_history
from perflib.store import Store

END = datetime(2026, 11, 2, tzinfo=timezone.utc)  # a Monday


@pytest.fixture(scope="module")
def young(tmp_path_factory) -> Store:
    """One week of jobs on 1 GPU in a database asked about 28 days."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('young') / 'young.db'}")
    store.init_db()
    simulate_history(store, weeks=1, gpus=1, seed=3, end=END, jobs_per_day=120)
    return store


def _jobs_started(store: Store, since: datetime) -> int:
    query = sa.text("SELECT COUNT(*) AS n FROM generation_performance WHERE started_at >= "
                    ":since").bindparams(since=since.strftime("%Y-%m-%d %H:%M:%S"))
    return int(store.frame(query).n[0])


def test_a_young_database_is_planned_from_its_first_job(young):
    plan = plan_capacity(young, days=28, end=END, weeks=2, per_hour=False)
    assert END - timedelta(days=7, hours=1) <= plan.start <= END - timedelta(days=6)
    jobs = _jobs_started(young, plan.start)
    assert plan.arrivals_per_week == pytest.approx(jobs, rel=0.05)  # not diluted 4×
    assert any("history starts on" in line and "not the 28 asked for" in line
               for line in plan.warnings)


def test_a_full_window_is_not_moved_and_not_warned_about(young):
    plan = plan_capacity(young, days=7, end=END, weeks=1, per_hour=False)
    assert END - timedelta(days=7) <= plan.start <= END - timedelta(days=6)
    assert not any("history starts" in line for line in plan.warnings)


def _store_with(tmp_path, name: str, change) -> Store:
    records = list(generate_jobs(weeks=1, gpus=1, seed=5, end=END, jobs_per_day=300))
    for record in records:
        change(record)
    store = Store(f"sqlite:///{tmp_path / name}")
    store.init_db()
    store.write_jobs(records)
    return store


def test_missing_submission_times_are_warned_about(tmp_path):
    def forget(record):
        record["submitted_at"] = record["queued_at"] = record["queue_seconds"] = None
    plan = plan_capacity(_store_with(tmp_path, "imported.db", forget), days=7, end=END,
                         weeks=1, per_hour=False)
    assert any("carry no submission time" in line for line in plan.warnings)


def test_submission_times_equal_to_starts_are_warned_about_when_the_simulation_waits(tmp_path):
    def at_start(record):
        record["submitted_at"] = record["queued_at"] = record["started_at"]
        record["queue_seconds"] = 0.0
    plan = plan_capacity(_store_with(tmp_path, "starts.db", at_start), days=7, end=END,
                         weeks=1, per_hour=False)
    assert plan.current.overall_p95_wait_seconds > 0
    assert any("No job of the" in line and "never observed" in line for line in plan.warnings)


def test_real_submission_times_raise_no_such_warning(tmp_path):
    plan = plan_capacity(_store_with(tmp_path, "real.db", lambda record: None), days=7,
                         end=END, weeks=1, per_hour=False)
    assert not any("submission time" in line or "No job of the" in line
                   for line in plan.warnings)


def test_the_queue_counts_what_it_simulated():
    """Two half-hour jobs arriving at once on one GPU: the hour holds 2 arrivals, a full
    GPU-hour of work, and a GPU busy all of it."""
    result = run_queue(Workload(np.array([0.0, 1.0]), np.array([1800.0, 1800.0]), 1), gpus=1)
    assert result.arrivals_per_hour[0] == 2 and result.arrivals_per_hour[1:].sum() == 0
    assert result.offered_load[0] == pytest.approx(1.0)
    assert result.utilisation[0] == pytest.approx(1.0)
    assert result.busy_seconds == pytest.approx(result.work_seconds)


def test_the_busy_hour_agrees_with_its_own_arrival_count(young):
    """The hours table's arrivals are those the simulation ran (not the observed mean beside
    them), so the busiest hour's utilisation is its arrivals' work over the GPUs (less what
    spills into the next hour, plus what spilled in)."""
    plan = plan_capacity(young, days=28, end=END, weeks=1, per_hour=False)
    hours = plan.hours
    busiest = hours.utilisation.idxmax()
    assert hours.arrivals_per_hour.sum() == pytest.approx(plan.current.arrivals_per_hour.sum())
    assert hours.utilisation.sum() == pytest.approx(hours.offered_load.sum(), rel=0.02)
    spill = hours.utilisation[busiest] - hours.offered_load[busiest]
    assert abs(spill) <= hours.offered_load[[busiest - 1, busiest]].max()
    assert hours.arrivals_per_hour[busiest] > 0
    assert "jobs a week" in plan.simulation_check()
    assert not any("chance allows" in line for line in plan.warnings)  # the draw is the history's


def test_the_ninety_percent_count_is_the_smallest_meeting_the_target_in_nine_weeks_of_ten():
    assert NeedSpread(np.array([1] * 17 + [2] * 3)).sure == 2  # 85% at 1 GPU
    assert NeedSpread(np.array([1] * 18 + [2] * 2)).sure == 1
    spread = NeedSpread(np.array([3, 1, 2, 2]))
    assert (spread.least, spread.median, spread.most, spread.sure) == (1, 2.0, 3, 3)


def test_the_spread_does_not_move_with_the_pooled_weeks(young):
    spreads = [plan_capacity(young, days=28, end=END, weeks=weeks, per_hour=False).spread
               for weeks in (1, 4)]
    assert spreads[0].per_week.size == 20
    assert np.array_equal(spreads[0].per_week, spreads[1].per_week)
    assert spreads[0].least <= spreads[0].median <= spreads[0].most
    assert (spreads[0].per_week <= spreads[0].sure).mean() >= 0.9


def test_cli_json_and_report_show_the_spread_and_warnings(young, capsys):
    from perflib.report.tables import capacity_table

    url = str(young.url.render_as_string(hide_password=False))
    args = ["--database-url", url, "capacity", "--end-date", "2026-11-02", "--weeks", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "simulated weeks one at a time" in text and "Warning: The history starts" in text
    assert "Simulation check:" in text
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["spread"]["weeks"] == 20 and "jobs a week" in plan["simulation_check"]
    assert main([*args, "--json", "--spread-weeks", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["spread"]["weeks"] == 5
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["spread"]["weeks"] == 20 and plan["spread"]["gpus_meeting_target_in_90_percent"]
    assert any("history starts" in line for line in plan["warnings"])
    html = capacity_table(plan_capacity(young, days=28, end=END, weeks=1, per_hour=False)
                          ).to_html()
    assert "simulated weeks one at a time" in html and "history starts" in html
