"""Alerts: findings an operator should act on, kept in ``performance_alerts``.

Sources: bottlenecks (queue backlog, GPU underuse, VRAM pressure, failures, ...), trend
change-points, failure-rate spikes against the previous weeks, jobs far slower than the
estimate given before they ran, and jobs far slower than expected
(:mod:`perflib.analysis.anomalies`): each on its own, or a burst of them on one host or GPU as
one contention alert. Each alert has a fingerprint; re-running updates the open alert with the
same fingerprint (last_seen, evidence, severity) instead of adding a duplicate.

Detection and reading live here; only :mod:`perflib.ops.alerts` writes (``save_alerts``, run by
``perflib maintain``, the service's alert check and ``detect_alerts``; the delivery state kept
for Alertmanager, :mod:`perflib.ops.alert_delivery`); a report shows the window's alerts through
:func:`as_reported`, which reads.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from perflib.analysis.anomalies import straggler_alerts
from perflib.analysis.bottlenecks import Bottleneck
from perflib.analysis.daily_aggregates import group_frame
from perflib.analysis.sql import in_window
from perflib.analysis.trends import TrendResult
from perflib.store import Store, parse_timestamp
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_alerts as alerts_table

SEVERITIES = ("low", "medium", "high", "critical")
# Kept for the delivery to Alertmanager (perflib.ops.alert_delivery), not part of an alert.
DELIVERY_COLUMNS = ("delivery", "delivered_severity", "delivered_at")
SLOW_VS_ESTIMATE = 2.0  # actual over predicted that counts as "far slower than estimated"
SLOW_SHARE = 0.05
SPIKE_FACTOR = 3.0
BASELINE_DAYS = 28


def severity_label(score: float) -> str:
    """0–1 score → low (<0.3), medium (<0.6), high (<0.85), critical."""
    return "low" if score < 0.3 else "medium" if score < 0.6 else "high" if score < 0.85 \
        else "critical"


def alert_candidates(store: Store, start: datetime, end: datetime,
                     bottlenecks: list[Bottleneck], trends: dict[str, TrendResult],
                     failure_threshold: float) -> list[dict]:
    """Every alert the window calls for (not yet stored)."""
    found = [_from_bottleneck(b) for b in bottlenecks]
    for pipeline, trend in trends.items():
        for point in trend.change_points:
            size = abs(point.change_pct) / 100
            direction = "slower" if point.change_pct > 0 else "faster"
            found.append({
                "alert_type": "trend_change_point", "pipeline_type": pipeline,
                "severity": severity_label(min(1.0, size / 0.35)) if point.change_pct > 0
                else "low",
                "message": f"{pipeline} generation became {abs(point.change_pct):.0f}% "
                           f"{direction} from {point.day.isoformat()}",
                "evidence": point.as_dict(),
                "fingerprint": f"trend_change_point|{pipeline}|{point.day.isoformat()}"})
    found += _failure_spikes(store, start, end, failure_threshold)
    found += _slower_than_estimated(store, start, end)
    found += straggler_alerts(store, start, end)
    return found


def _from_bottleneck(bottleneck: Bottleneck) -> dict:
    kind = {"high_queue_time": "queue_backlog", "low_gpu_utilization": "gpu_underuse"}.get(
        bottleneck.type.value, bottleneck.type.value)
    scope = "|".join(f"{k}={v}" for k, v in sorted(bottleneck.scope.items()))
    return {"alert_type": kind, "pipeline_type": bottleneck.pipeline_type,
            "severity": severity_label(bottleneck.severity),
            "message": bottleneck.recommendations[0] if bottleneck.recommendations
            else bottleneck.type.value,
            "evidence": {**bottleneck.evidence, "affected_jobs": bottleneck.affected_jobs,
                         **bottleneck.scope},
            "fingerprint": f"{kind}|{bottleneck.pipeline_type}|{scope}"}


def _failure_spikes(store: Store, start: datetime, end: datetime, threshold: float) -> list[dict]:
    """Pipelines whose failure rate in the window is far above their previous weeks' (from the
    daily aggregates: the baseline's four weeks of jobs are never read row by row)."""
    now, before = (_failure_rates(store, start, end),
                   _failure_rates(store, start - timedelta(days=BASELINE_DAYS), start))
    found = []
    for pipeline, (rate, count) in now.items():
        baseline = before.get(pipeline, (0.0, 0))[0]
        if count >= 20 and rate > threshold and rate > SPIKE_FACTOR * max(baseline, 0.005):
            found.append({
                "alert_type": "failure_rate_spike", "pipeline_type": pipeline,
                "severity": severity_label(min(1.0, rate / (4 * threshold))),
                "message": f"{rate:.0%} of {pipeline} jobs failed, against {baseline:.1%} in "
                           f"the previous {BASELINE_DAYS} days",
                "evidence": {"failure_rate": round(rate, 4), "baseline_rate": round(baseline, 4),
                             "jobs": count},
                "fingerprint": f"failure_rate_spike|{pipeline}"})
    return found


def _failure_rates(store: Store, start: datetime, end: datetime) -> dict[str, tuple[float, int]]:
    """Per pipeline: the share of its finished jobs started in [start, end) that failed, and
    how many finished."""
    groups = group_frame(store, start, end)
    if groups.empty:
        return {}
    totals = groups.groupby("pipeline_type")[["jobs", "failed"]].sum()
    return {pipeline: (float(row.failed / row.jobs), int(row.jobs))
            for pipeline, row in totals.iterrows() if row.jobs}


def _slower_than_estimated(store: Store, start: datetime, end: datetime) -> list[dict]:
    """Pipelines where many jobs took far longer than the estimate given before they ran."""
    slow = jobs.c.processing_seconds > SLOW_VS_ESTIMATE * jobs.c.predicted_seconds
    query = (sa.select(jobs.c.pipeline_type, sa.func.count().label("estimated"),
                       sa.func.sum(sa.case((slow, 1), else_=0)).label("slow"))
             .where(jobs.c.status == "success", jobs.c.predicted_seconds > 0,
                    in_window(start, end)).group_by(jobs.c.pipeline_type))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    found = []
    for row in rows:
        share = row.slow / row.estimated if row.estimated else 0
        if row.estimated >= 20 and share > SLOW_SHARE:
            found.append({
                "alert_type": "slower_than_estimated", "pipeline_type": row.pipeline_type,
                "severity": severity_label(min(1.0, share / 0.25)),
                "message": f"{share:.0%} of estimated {row.pipeline_type} jobs took more than "
                           f"{SLOW_VS_ESTIMATE:g}× their estimate",
                "evidence": {"share": round(share, 4), "slow_jobs": int(row.slow),
                             "estimated_jobs": int(row.estimated)},
                "fingerprint": f"slower_than_estimated|{row.pipeline_type}"})
    return found


def as_reported(store: Store, candidates: list[dict], seen_at: datetime) -> list[dict]:
    """The candidates as stored alerts look, without storing them: each takes the id, first
    sighting and state of the open stored alert with its fingerprint, else is new (id None,
    first seen at `seen_at`). Most severe first."""
    stored = {a["fingerprint"]: a for a in list_alerts(
        store, acknowledged=False, fingerprints=[a["fingerprint"] for a in candidates])}
    seen = parse_timestamp(seen_at).isoformat()
    new = {"id": None, "first_seen": seen, "last_seen": seen, "acknowledged": False}
    reported = [{**new, **{k: v for k, v in stored.get(alert["fingerprint"], {}).items()
                           if k in new}, **json_evidence(alert)} for alert in candidates]
    return sorted(reported, key=lambda a: -SEVERITIES.index(a["severity"]))


def json_evidence(alert: dict) -> dict:
    return {**alert, "evidence": json.loads(json.dumps(alert["evidence"], default=str))}


def list_alerts(store: Store, severity: str | None = None,
                acknowledged: bool | None = None,
                fingerprints: list[str] | None = None) -> list[dict]:
    """Stored alerts, most severe and most recent first; only those with `fingerprints`, when
    given (a report looks up its own alerts, not every open one the fleet has had)."""
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    table = alerts_table
    most_severe_first = sa.case({name: rank for rank, name in enumerate(reversed(SEVERITIES))},
                                value=table.c.severity)
    shown = [column for column in table.c if column.name not in DELIVERY_COLUMNS]
    query = sa.select(*shown).order_by(most_severe_first, table.c.last_seen.desc(), table.c.id)
    if severity is not None:
        query = query.where(table.c.severity == severity)
    if acknowledged is not None:
        query = query.where(table.c.acknowledged.is_(acknowledged))
    if fingerprints is not None:
        query = query.where(table.c.fingerprint.in_(fingerprints))
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings().all()]
    for row in rows:
        row["first_seen"] = row["first_seen"].isoformat()
        row["last_seen"] = row["last_seen"].isoformat()
    return rows


def acknowledge(store: Store, alert_id: int) -> bool:
    """Mark an alert acknowledged; False when there is no such alert."""
    table = alerts_table
    with store.writable_engine().begin() as conn:
        result = conn.execute(sa.update(table).where(table.c.id == alert_id)
                              .values(acknowledged=True))
    return result.rowcount > 0
