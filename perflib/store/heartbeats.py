"""GPU heartbeats: the latest live reading of each GPU, one row per (host, GPU index).

A heartbeat overwrites the row of its GPU only when that row is at least ``MIN_INTERVAL_S``
old, so however many processes on a host report (each tracked process runs its own sampler),
a GPU costs at most one write per interval. A host without a readable GPU keeps one row with
``gpu_index`` -1 in the table (null everywhere else).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from perflib.store.database import Store
from perflib.store.schema import gpu_heartbeats

MIN_INTERVAL_S = 5.0
NO_GPU = -1  # gpu_index of the row of a host that has no readable GPU
READING_COLUMNS = [c.name for c in gpu_heartbeats.columns
                   if c.name not in ("hostname", "gpu_index", "reported_at")]


def write_heartbeats(store: Store, heartbeats: Sequence[Mapping[str, Any]],
                     reported_at: datetime, min_interval_s: float = MIN_INTERVAL_S) -> int:
    """Upsert heartbeats (dicts of ``gpu_heartbeats`` columns, ``gpu_index`` None for no GPU)
    taken at `reported_at`; a GPU whose stored row is younger than `min_interval_s` keeps it.
    Returns how many rows were written."""
    if not heartbeats:
        return 0
    rows = {}
    for heartbeat in heartbeats:  # one row per GPU: the last one given wins
        index = heartbeat.get("gpu_index")
        key = (heartbeat["hostname"], NO_GPU if index is None else int(index))
        rows[key] = {**{name: heartbeat.get(name) for name in READING_COLUMNS},
                     "hostname": key[0], "gpu_index": key[1], "reported_at": reported_at}
    engine = store.writable_engine()
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(
        gpu_heartbeats)
    stale_before = reported_at - timedelta(seconds=min_interval_s)
    upsert = insert.on_conflict_do_update(
        index_elements=["hostname", "gpu_index"],
        set_={name: insert.excluded[name] for name in READING_COLUMNS + ["reported_at"]},
        where=gpu_heartbeats.c.reported_at <= stale_before).returning(gpu_heartbeats.c.gpu_index)
    with engine.begin() as conn:
        return sum(len(conn.execute(upsert, row).all()) for row in rows.values())


def read_heartbeats(store: Store, since: datetime) -> list[dict[str, Any]]:
    """Heartbeats reported since `since`, ordered by host and GPU index (``gpu_index`` None
    for a host without a GPU; ``reported_at`` in UTC)."""
    table = gpu_heartbeats
    query = (sa.select(table).where(table.c.reported_at >= since)
             .order_by(table.c.hostname, table.c.gpu_index))
    with store.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        if row["gpu_index"] == NO_GPU:
            row["gpu_index"] = None
    return rows
