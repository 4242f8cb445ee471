"""`perflib maintain`: the retention setting applies to every table that grows, and it raises the
alerts that the service and reports only read."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.analysis import PerformanceAnalyzer
from perflib.config import Settings
from perflib.ops.alerts import save_alerts
from perflib.sim.simulate import default_incidents, generate_jobs, simulate_history
from perflib.store import Store
from perflib.store.schema import (generation_performance, generation_phases, performance_alerts,
                                  performance_trends, resource_samples)

NOW = datetime.now(timezone.utc)
RETENTION_DAYS = 90


def _week_of_jobs(end: datetime, prefix: str) -> list[dict]:
    """A week of simulated jobs ending at `end`, each with its phases and one resource sample."""
    return [{**record, "job_id": f"{prefix}-{n}",
             "samples": [{"seq": 0, "sampled_at": record["started_at"], "gpu_util_pct": 50.0}]}
            for n, record in enumerate(generate_jobs(weeks=1, gpus=1, seed=7, end=end,
                                                     jobs_per_day=6))]


def _never_started(job_id: str, submitted_at: datetime) -> dict:
    return {"job_id": job_id, "pipeline_type": "image", "status": "queued", "width": 512,
            "height": 512, "steps": 20, "submitted_at": submitted_at}


def _alert(name: str) -> dict:
    return {"alert_type": "queue_backlog", "pipeline_type": "image", "severity": "medium",
            "message": name, "evidence": {}, "fingerprint": f"queue_backlog|image|{name}"}


def _column(store: Store, column) -> list:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(column)).scalars())


def _counts(store: Store) -> dict[str, int]:
    return {table.name: store.count(table) for table in (
        generation_performance, generation_phases, resource_samples, performance_alerts,
        performance_trends)}


def test_retention_applies_to_every_table(db_url, settings):
    store = Store(db_url, settings)
    analyzer = PerformanceAnalyzer(store)
    old, new = _week_of_jobs(NOW - timedelta(days=200), "old"), _week_of_jobs(NOW, "new")
    store.write_jobs(old + new + [_never_started("lost", NOW - timedelta(days=200)),
                                  _never_started("waiting", NOW - timedelta(hours=1))])
    analyzer.aggregate_daily(None)  # daily rows for the old week and the new one
    old_alert = save_alerts(store, [_alert("old")], NOW - timedelta(days=120))[0]["id"]
    new_alert = save_alerts(store, [_alert("new")], NOW - timedelta(days=2))[0]["id"]
    cutoff_day = (NOW - timedelta(days=RETENTION_DAYS)).date()
    old_days = sum(day < cutoff_day for day in _column(store, performance_trends.c.day))
    assert old_days > 0
    before = _counts(store)

    plan = analyzer.maintain(RETENTION_DAYS, dry_run=True)
    assert (plan.jobs, plan.phases, plan.samples, plan.alerts, plan.daily_rows) == (
        len(old) + 1, sum(len(r["phases"]) for r in old), len(old), 1, old_days)
    assert _counts(store) == before and "deleted" not in plan.describe()

    done = analyzer.maintain(RETENTION_DAYS)
    assert (done.jobs, done.alerts, done.daily_rows) == (plan.jobs, 1, old_days)
    kept = {r["job_id"] for r in new} | {"waiting"}
    assert set(_column(store, generation_performance.c.job_id)) == kept
    assert set(_column(store, generation_phases.c.job_id)) == {r["job_id"] for r in new}
    assert set(_column(store, resource_samples.c.job_id)) == {r["job_id"] for r in new}
    alert_ids = set(_column(store, performance_alerts.c.id))
    assert old_alert not in alert_ids and new_alert in alert_ids
    assert min(_column(store, performance_trends.c.day)) >= cutoff_day
    assert "1 alerts last seen" in done.describe()


def test_maintain_raises_the_weeks_alerts(tmp_path, capsys):
    from perflib.cli import main

    url = f"sqlite:///{tmp_path / 'perflib.db'}"
    store = Store(url, Settings(spool_dir=tmp_path / "spool"))
    simulate_history(store, weeks=3, gpus=2, seed=1, end=NOW, jobs_per_day=80,
                     incidents=default_incidents(NOW.date(), 3))
    assert store.count(performance_alerts) == 0
    assert main(["--database-url", url, "maintain", "--dry-run"]) == 0
    assert store.count(performance_alerts) == 0, "a dry run changes nothing"
    assert main(["--database-url", url, "maintain"]) == 0
    raised = store.count(performance_alerts)
    assert raised > 0 and f"raised or refreshed {raised} alerts" in capsys.readouterr().out
    main(["--database-url", url, "maintain"])
    assert store.count(performance_alerts) == raised, "a second run refreshes, not duplicates"
