"""Weekly report values built by hand, for tests of what the report's faces make of them."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

from perflib.analysis import Bottleneck, BottleneckType, ChangePoint, TrendResult
from perflib.analysis.origin import DataOrigin
from perflib.analysis.performance_report import (EstimateAccuracy, PerformanceReport,
                                                 PeriodStatistics, PreviousPeriod, ReportedAlert)

NO_ESTIMATE = EstimateAccuracy(0, None, None)
NO_JOBS = PeriodStatistics(0, 0, None, None, None, 0.0)


def report(**changes) -> PerformanceReport:
    """A report as performance_report builds it, with nothing remarkable in it; `changes`
    replace its fields."""
    made = PerformanceReport(
        period_days=7, start=datetime(2026, 11, 24, tzinfo=timezone.utc),
        end=datetime(2026, 12, 1, tzinfo=timezone.utc), pipeline_type=None,
        generated_at=datetime(2026, 12, 1, 6, tzinfo=timezone.utc),
        origin=DataOrigin(None, None, 1011, 0),
        statistics=PeriodStatistics(1011, 993, 0.9822, 58.1, 0.93, 144.4),
        per_pipeline={}, bottlenecks=(), trends={}, alerts=(), opportunities=(),
        accuracy=NO_ESTIMATE,
        previous=PreviousPeriod(datetime(2026, 11, 17, tzinfo=timezone.utc),
                                PeriodStatistics(1253, 1204, 0.9609, 55.4, 0.57, 179.0),
                                NO_ESTIMATE))
    return replace(made, **changes)


def previous(report: PerformanceReport, **changes) -> PerformanceReport:
    """`report` with fields of its previous period replaced."""
    return replace(report, previous=replace(report.previous, **changes))


def trend(pipeline: str, *points) -> TrendResult:
    return TrendResult(pipeline, 28, 1000, 60.0, 0.98, 1.0, 0.01, 0.99, "degrading", 5.0, [
        ChangePoint(date.fromisoformat(day), before, after, (after / before - 1) * 100, 1e-9)
        for day, before, after in points])


def bottleneck(kind: str, severity: float, pipeline: str, jobs: int, evidence: dict,
                scope: dict | None = None) -> Bottleneck:
    return Bottleneck(BottleneckType(kind), severity, pipeline, evidence, jobs, ["..."],
                      scope or {})


def alert(kind: str, pipeline: str, severity: str, acknowledged: bool) -> ReportedAlert:
    seen = "2026-11-30T00:00:00+00:00"
    return ReportedAlert(None, seen, seen, acknowledged, kind, pipeline, severity, "...", {},
                         f"{kind}|{pipeline}")
