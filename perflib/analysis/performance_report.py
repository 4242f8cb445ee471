"""The weekly report's numbers as a typed value: :class:`PerformanceReport`, built by
:meth:`PerformanceAnalyzer.performance_report` and read by attribute by the report's summary,
tables and notebook. :meth:`PerformanceReport.as_dict` is its JSON form (the documented
``generate_performance_report`` dict that the service and ``perflib analyze --json`` give).

Its values are the report's rounded ones (a bottleneck's severity to 3 decimals, a trend's
figures to 4), so every face of the report shows the same figure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from perflib.analysis.bottlenecks import Bottleneck
from perflib.analysis.origin import DataOrigin
from perflib.analysis.trends import TrendResult


@dataclass(frozen=True)
class PeriodStatistics:
    """A period's jobs, success and mean times, over every pipeline it reports."""

    total_jobs: int
    successful_jobs: int
    success_rate: float | None
    avg_generation_time: float | None
    avg_queue_time: float | None
    jobs_per_day: float


@dataclass(frozen=True)
class PipelineStatistics:
    """One pipeline's jobs, success, time percentiles, wait and GPU use over a period."""

    jobs: int
    success_rate: float
    avg_generation_time: float | None
    median_generation_time: float | None
    p95_generation_time: float | None
    avg_queue_time: float | None
    avg_gpu_util_pct: float | None
    jobs_per_day: float


@dataclass(frozen=True)
class EstimateAccuracy:
    """How the estimates given before jobs ran compare with their processing time."""

    jobs_with_estimate: int
    accuracy_within_20_percent: float | None
    mape: float | None


@dataclass(frozen=True)
class Opportunity:
    """A saving on offer: what to change, in words, the numbers behind it, the hours saved."""

    type: str
    message: str
    evidence: dict[str, Any]
    potential_saving_hours: float


@dataclass(frozen=True)
class ReportedAlert:
    """An alert the period calls for, with its stored state: `id` None while it is new (not
    raised yet by ``perflib maintain``)."""

    id: int | None
    first_seen: str  # ISO time, as stored
    last_seen: str
    acknowledged: bool
    alert_type: str
    pipeline_type: str | None
    severity: str
    message: str
    evidence: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class PreviousPeriod:
    """The period of the same length just before the report's, for comparison."""

    start: datetime
    statistics: PeriodStatistics
    accuracy: EstimateAccuracy

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "overall_statistics": asdict(self.statistics),
                "prediction_accuracy": asdict(self.accuracy)}


@dataclass(frozen=True)
class PerformanceReport:
    """Everything the weekly report shows of one period [start, end), narrowed to
    `pipeline_type` when set (opportunities stay fleet-wide)."""

    period_days: float
    start: datetime
    end: datetime
    pipeline_type: str | None
    generated_at: datetime
    origin: DataOrigin
    statistics: PeriodStatistics
    per_pipeline: dict[str, PipelineStatistics]
    bottlenecks: tuple[Bottleneck, ...]  # most severe first
    trends: dict[str, TrendResult]
    alerts: tuple[ReportedAlert, ...]  # most severe first
    opportunities: tuple[Opportunity, ...]  # largest saving first
    accuracy: EstimateAccuracy
    previous: PreviousPeriod

    @property
    def notice(self) -> str | None:
        """What a reader must know before trusting the figures (see :class:`DataOrigin`)."""
        return self.origin.notice()

    @property
    def empty(self) -> bool:
        """No job in the period."""
        return not self.statistics.total_jobs

    def as_dict(self) -> dict:
        """The report as JSON-ready values, in the documented dict's keys and order."""
        return {
            "period_days": self.period_days, "start": self.start.isoformat(),
            "end": self.end.isoformat(), "pipeline_type": self.pipeline_type,
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "simulated": self.origin.simulated,
            "data_origin": {**asdict(self.origin), "notice": self.notice},
            "overall_statistics": asdict(self.statistics),
            "per_pipeline": {p: asdict(s) for p, s in self.per_pipeline.items()},
            "bottlenecks": [b.as_dict() for b in self.bottlenecks],
            "trends": {p: t.as_dict() for p, t in self.trends.items()},
            "alerts": [asdict(a) for a in self.alerts],
            "opportunities": [asdict(o) for o in self.opportunities],
            "prediction_accuracy": asdict(self.accuracy),
            "previous_period": self.previous.as_dict(),
        }


def reported_bottleneck(bottleneck: Bottleneck) -> Bottleneck:
    """The bottleneck with its severity as the report shows it (3 decimals)."""
    return dataclasses.replace(bottleneck, severity=round(bottleneck.severity, 3))


def period_statistics(statistics: dict) -> tuple[PeriodStatistics, dict[str, PipelineStatistics]]:
    """:meth:`PerformanceAnalyzer.overall_statistics`'s dict, typed: the period's and per
    pipeline."""
    overall = {k: v for k, v in statistics.items() if k != "per_pipeline"}
    return PeriodStatistics(**overall), {pipeline: PipelineStatistics(**values) for pipeline, values
                                         in statistics["per_pipeline"].items()}
