"""The report computes each analysis once and writes nothing; the VRAM threshold is a setting."""
from __future__ import annotations

from datetime import datetime, timezone

import perflib.analysis
from perflib.analysis import BottleneckType, PerformanceAnalyzer
from perflib.config import Settings, Thresholds, get_settings
from perflib.sim.simulate import default_incidents, generate_jobs, simulate_history
from perflib.store import Store
from perflib.store.schema import performance_alerts

END = datetime(2026, 11, 25, tzinfo=timezone.utc)


def test_the_report_computes_bottlenecks_and_trends_once_and_writes_no_alert(tmp_path,
                                                                            monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'perflib.db'}", Settings(spool_dir=tmp_path / "spool"))
    simulate_history(store, weeks=3, gpus=2, seed=2, end=END, jobs_per_day=80,
                     incidents=default_incidents(END.date(), 3))
    calls = {"analyze_bottlenecks": 0, "analyze_trends": 0}
    for name in calls:
        real = getattr(perflib.analysis, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(perflib.analysis, name, counted)
    analyzer = PerformanceAnalyzer(store)
    report = analyzer.generate_performance_report(7, END)
    assert calls == {"analyze_bottlenecks": 1, "analyze_trends": 1}
    assert report["alerts"] and store.count(performance_alerts) == 0
    assert all(a["id"] is None and not a["acknowledged"] for a in report["alerts"])

    # Once stored (by `perflib maintain`), the report shows the stored alerts' state.
    stored = {a["fingerprint"]: a for a in analyzer.detect_alerts(7, END)}
    again = analyzer.generate_performance_report(7, END)["alerts"]
    assert {a["fingerprint"] for a in again} == set(stored)
    assert all(a["id"] == stored[a["fingerprint"]]["id"] for a in again)


def _near_full_jobs(share: float) -> list[dict]:
    """A week of successful jobs whose VRAM peaks at `share` of the card."""
    jobs = []
    for record in generate_jobs(weeks=1, gpus=1, seed=4, end=END, jobs_per_day=40):
        jobs.append({**record, "status": "success", "error_type": None, "error_message": None,
                     "vram_total_mb": 24_000.0, "vram_peak_mb": share * 24_000.0})
    return jobs


def test_the_vram_threshold_is_a_setting(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'perflib.db'}"
    Store(url, Settings(spool_dir=tmp_path / "spool")).write_jobs(_near_full_jobs(0.85))

    def vram_pressure(thresholds: Thresholds) -> list:
        analyzer = PerformanceAnalyzer(Store(url, Settings(thresholds=thresholds)))
        return [b for b in analyzer.analyze_bottlenecks(7, end=END)
                if b.type is BottleneckType.VRAM_PRESSURE]

    assert vram_pressure(Thresholds()) == [], "85% is below the default 90%"
    found = vram_pressure(Thresholds(high_vram_pct=80.0))
    assert found and found[0].evidence["threshold_pct"] == 80.0
    assert found[0].evidence["jobs_near_full_vram"] == found[0].evidence["jobs"]
    assert "above 80% of VRAM" in found[0].recommendations[0]

    monkeypatch.setenv("PERFLIB_THRESHOLD_HIGH_VRAM_PCT", "80")
    assert get_settings().thresholds.high_vram_pct == 80.0
    monkeypatch.delenv("PERFLIB_THRESHOLD_HIGH_VRAM_PCT")
    assert get_settings().thresholds.high_vram_pct == 90.0
