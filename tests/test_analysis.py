"""Analytics on simulated histories with known incidents — and on a clean one."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from perflib.analysis import BottleneckType, PerformanceAnalyzer
from perflib.config import Settings
from perflib.sim.simulate import Incident, default_incidents, simulate_history
from perflib.store import Store
from perflib.store.schema import performance_trends

END = datetime(2026, 11, 25, tzinfo=timezone.utc)
WEEKS = 8


def _simulated(url: str, folder, incidents) -> PerformanceAnalyzer:
    store = Store(url, Settings(spool_dir=folder / "spool"))
    simulate_history(store, weeks=WEEKS, gpus=2, seed=0, end=END, incidents=incidents)
    return PerformanceAnalyzer(store)


@pytest.fixture(scope="module")
def incident_history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("incidents")
    incidents = default_incidents(END.date(), WEEKS)
    return _simulated(f"sqlite:///{folder / 'incidents.db'}", folder, incidents), incidents


@pytest.fixture(scope="module")
def clean_history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    return _simulated(f"sqlite:///{folder / 'clean.db'}", folder, ())


def _window_of(incident: Incident) -> tuple[float, datetime]:
    last = incident.end or (END.date() - timedelta(days=1))
    stop = datetime.combine(last + timedelta(days=1), datetime.min.time(), timezone.utc)
    return (last - incident.start).days + 1, stop


@pytest.mark.parametrize("kind", ["queue_backlog", "cpu_bound_preprocessing",
                                  "vram_heavy_model", "driver_regression"])
def test_every_injected_incident_is_found(incident_history, kind):
    analyzer, incidents = incident_history
    incident = next(i for i in incidents if i.kind == kind)
    days, stop = _window_of(incident)
    found = {b.type for b in analyzer.analyze_bottlenecks(days, end=stop) if b.severity >= 0.3}
    if kind == "driver_regression":
        trend = analyzer.analyze_trends(30, end=END)[incident.pipeline_type or "video"]
        dated = [c for c in trend.change_points if c.change_pct > 0]
        assert dated and abs((dated[0].day - incident.start).days) <= 1
        assert abs(dated[0].change_pct - 100 * incident.magnitude) < 10
        assert trend.direction == "degrading"
        assert BottleneckType.SLOW_GENERATION in found
    elif kind == "queue_backlog":
        assert BottleneckType.HIGH_QUEUE_TIME in found
    elif kind == "cpu_bound_preprocessing":
        assert {BottleneckType.HIGH_CPU_USAGE, BottleneckType.LOW_GPU_UTILIZATION} <= found
        low_gpu = next(b for b in analyzer.analyze_bottlenecks(days, end=stop)
                       if b.type is BottleneckType.LOW_GPU_UTILIZATION)
        assert low_gpu.scope == {"job_type": incident.job_type}
        assert "CPU-bound" in " ".join(low_gpu.recommendations)
    else:
        assert {BottleneckType.VRAM_PRESSURE, BottleneckType.HIGH_FAILURE_RATE} <= found
        vram = next(b for b in analyzer.analyze_bottlenecks(days, end=stop)
                    if b.type is BottleneckType.VRAM_PRESSURE)
        assert vram.scope["model_name"] == incident.model_name


def test_incidents_raise_alerts_and_rerunning_does_not_duplicate(incident_history):
    analyzer, incidents = incident_history
    for incident in incidents:
        days, stop = _window_of(incident)
        analyzer.detect_alerts(days, stop)
    first = analyzer.alerts()
    kinds = {a["alert_type"] for a in first if a["severity"] in ("high", "critical")}
    assert {"queue_backlog", "gpu_underuse", "vram_pressure", "trend_change_point"} <= kinds
    for incident in incidents:
        days, stop = _window_of(incident)
        analyzer.detect_alerts(days, stop)
    assert len(analyzer.alerts()) == len(first)
    alert_id = first[0]["id"]
    assert analyzer.acknowledge_alert(alert_id) and not analyzer.acknowledge_alert(10**9)
    assert alert_id not in {a["id"] for a in analyzer.alerts(acknowledged=False)}
    with pytest.raises(ValueError, match="severity"):
        analyzer.alerts(severity="urgent")


def test_clean_history_raises_no_high_or_critical_alert(clean_history):
    analyzer = clean_history
    for weeks_back in range(1, WEEKS - 1):
        analyzer.detect_alerts(7, END - timedelta(days=7 * (weeks_back - 1)))
    loud = [a for a in analyzer.alerts() if a["severity"] in ("high", "critical")]
    assert loud == []
    trends = analyzer.analyze_trends(WEEKS * 7, end=END)
    assert all(not t.change_points and t.direction == "stable" for t in trends.values())


def test_report_dict_has_the_seed_keys(incident_history):
    analyzer, _ = incident_history
    report = analyzer.generate_performance_report(7, END)
    assert {"overall_statistics", "bottlenecks", "trends", "alerts", "opportunities",
            "prediction_accuracy"} <= set(report)
    overall = report["overall_statistics"]
    assert overall["total_jobs"] > 500 and 0.9 < overall["success_rate"] <= 1
    assert overall["avg_generation_time"] > 0 and report["simulated"] is True
    assert report["prediction_accuracy"]["jobs_with_estimate"] > 100
    peak = next(o for o in report["opportunities"] if o["type"] == "shift_peak_load")
    assert peak["potential_saving_hours"] >= 0 and len(peak["evidence"]["peak_hours_utc"]) == 6


def test_daily_aggregates_in_sql_match_pandas(db_url, settings):
    analyzer = _simulated_small(db_url, settings)
    rows = analyzer.aggregate_daily(days_back=None)
    frame = analyzer.store.jobs_frame()
    with analyzer.store.engine.connect() as conn:
        stored = {(r.day, r.pipeline_type): r for r in conn.execute(sa.select(performance_trends))}
    assert rows == len(stored) > 0
    frame["day"] = frame.started_at.dt.date
    for (day, pipeline), group in frame.groupby(["day", "pipeline_type"]):
        row = stored[(day, pipeline)]
        ok = group[group.status == "success"].total_seconds.sort_values().to_numpy()
        assert row.job_count == len(group)
        assert row.success_rate == pytest.approx((group.status == "success").mean())
        assert row.median_total_seconds == pytest.approx(ok[int((len(ok) + 1) // 2) - 1 if len(ok) % 2 else len(ok) // 2 - 1])
        assert row.p95_total_seconds == pytest.approx(ok[-(-len(ok) * 95 // 100) - 1])
    assert analyzer.aggregate_daily(rebuild=True) == rows  # rebuilding replaces, never duplicates


def _simulated_small(url: str, settings: Settings) -> PerformanceAnalyzer:
    store = Store(url, settings)
    simulate_history(store, weeks=1, gpus=2, seed=3, end=END, jobs_per_day=80)
    return PerformanceAnalyzer(store)


def test_maintenance_never_deletes_newer_rows(db_url, settings):
    analyzer = _simulated_small(db_url, settings)
    store = analyzer.store
    before = store.jobs_frame()
    cutoff_days = (datetime.now(timezone.utc) - (END - timedelta(days=3))).days
    plan = analyzer.maintain(retention_days=cutoff_days, dry_run=True)
    assert plan.jobs > 0 and store.count() == len(before)
    assert "would delete" in plan.describe()
    done = analyzer.maintain(retention_days=cutoff_days)
    after = store.jobs_frame()
    assert done.jobs == plan.jobs and len(after) == len(before) - plan.jobs
    assert (after.started_at >= done.cutoff).all()
    assert set(before[before.started_at >= done.cutoff].job_id) == set(after.job_id)
    remaining_phases = store.phases_frame()
    assert set(remaining_phases.job_id) <= set(after.job_id)


def test_cli_simulate_analyze_and_maintain(tmp_path, capsys):
    import json

    from perflib.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    truth = tmp_path / "truth.json"
    assert main(["--database-url", url, "simulate", "--weeks", "4", "--gpus", "2",
                 "--jobs-per-day", "60", "--incidents", "--ground-truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "incident driver_regression" in out
    assert {i["kind"] for i in json.loads(truth.read_text())} == {
        "driver_regression", "queue_backlog", "cpu_bound_preprocessing", "vram_heavy_model"}
    assert main(["--database-url", url, "analyze", "--days-back", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall_statistics"]["total_jobs"] > 100
    assert main(["--database-url", url, "maintain", "--dry-run", "--retention-days", "14"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would delete") and "deleted" not in out
    assert main(["--database-url", url, "maintain", "--retention-days", "14"]) == 0
    assert "deleted" in capsys.readouterr().out
