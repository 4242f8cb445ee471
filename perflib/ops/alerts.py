"""Saving alerts and their delivery state: the one writer of ``performance_alerts`` besides
acknowledging (detection and reading are :mod:`perflib.analysis.alerts`; sending is
:mod:`perflib.ops.alert_delivery`)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from perflib.analysis.alerts import json_evidence, list_alerts
from perflib.store import Store
from perflib.store.schema import performance_alerts as alerts_table


def save_alerts(store: Store, candidates: list[dict], seen_at: datetime) -> list[dict]:
    """Insert new alerts; refresh the open one with the same fingerprint. Returns the stored
    alerts for these candidates."""
    table = alerts_table
    with store.writable_engine().begin() as conn:
        for alert in map(json_evidence, candidates):
            existing = conn.execute(sa.select(table.c.id).where(
                table.c.fingerprint == alert["fingerprint"],
                table.c.acknowledged.is_(False))).scalar()
            if existing is None:
                conn.execute(sa.insert(table).values(**alert, first_seen=seen_at,
                                                     last_seen=seen_at, acknowledged=False))
            else:
                conn.execute(sa.update(table).where(table.c.id == existing).values(
                    severity=alert["severity"], message=alert["message"],
                    evidence=alert["evidence"], last_seen=seen_at))
    return list_alerts(store, acknowledged=False,
                       fingerprints=[a["fingerprint"] for a in candidates])


def mark_delivery(store: Store, alert_ids: list[int], state: str,
                  at: datetime | None = None, severities: dict[int, str] | None = None) -> None:
    """Record the delivery `state` of these alerts: "pending" (a try failed: send again at the
    next check), "firing" or "resolved" (delivered at `at`, with `severities`)."""
    if not alert_ids:
        return
    table = alerts_table
    with store.writable_engine().begin() as conn:
        for alert_id in alert_ids:
            values = {"delivery": state}
            if state != "pending":
                values.update(delivered_at=at,
                              delivered_severity=(severities or {}).get(alert_id))
            conn.execute(sa.update(table).where(table.c.id == alert_id).values(**values))
