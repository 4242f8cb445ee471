"""Migration of a PostgreSQL database's unpartitioned job tables to day partitions
(``perflib migrate-partitions``), without losing a row written meanwhile.

1. Partitioned tables are created beside the old ones (``<table>_partitioned``), with a
   partition for every day that has jobs and for the coming week.
2. Rows are copied in id ranges, one transaction each, while writers go on; phases and samples
   get their job's start time (``job_started_at``, the partition key) on the way.
3. One transaction locks the old tables against writes (reads go on), copies what arrived
   meanwhile and removes what was deleted meanwhile, checks that every table holds as many rows
   as its old one, and swaps the names. The old tables stay as ``<table>_unpartitioned`` until
   you drop them.

A run that fails before the swap leaves the old tables in use; the next run starts over.
Processes that write should be restarted afterwards, so they make partitions for new days and
fill ``job_started_at`` (until then their rows still land, in the DEFAULT partition).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.store import partitions
from perflib.store.partitions import TABLES, UNPARTITIONED_SUFFIX, qualified

NEW_SUFFIX = "_partitioned"
COPY_BATCH_IDS = 100_000


class MigrationError(RuntimeError):
    """The copy does not match the old tables; nothing was swapped."""


@dataclass
class MigrationResult:
    already_partitioned: bool
    rows: dict[str, int] = field(default_factory=dict)  # per table, in both after the swap
    day_partitions: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        kept = ", ".join(name + UNPARTITIONED_SUFFIX for name in TABLES)
        if self.already_partitioned:
            return ("the job tables are already partitioned by day: nothing to migrate "
                    f"(old tables, if a migration kept them: {kept})")
        copied = ", ".join(f"{rows} rows of {name}" for name, rows in self.rows.items())
        return (f"partitioned the job tables by day ({self.day_partitions} day partitions) in "
                f"{self.seconds:.1f} s: {copied}, row counts checked equal. The old tables are "
                f"kept as {kept}; drop them (DROP TABLE) once you have checked. Restart the "
                "processes that write.")


def migrate(engine: sa.Engine) -> MigrationResult:
    """Move the three job tables to day partitions (see the module docstring)."""
    started = time.perf_counter()
    with engine.begin() as conn:
        if partitions.table_kind(conn) != "plain":
            return MigrationResult(already_partitioned=True)
        for name in TABLES:  # what an interrupted run left
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {qualified(conn, name + NEW_SUFFIX)}"))
        partitions.create_tables(conn, NEW_SUFFIX)
        days = set(conn.execute(sa.text(
            f"SELECT DISTINCT CAST(timezone('UTC', started_at) AS date) "
            f"FROM {qualified(conn, 'generation_performance')} WHERE started_at IS NOT NULL"
        )).scalars())
        id_ranges = {name: conn.execute(sa.text(
            f"SELECT coalesce(min(id), 1) - 1, coalesce(max(id), 0) "
            f"FROM {qualified(conn, name)}")).one() for name in TABLES}
    today = datetime.now(timezone.utc).date()
    days.update(partitions.days_between(today, today + timedelta(days=partitions.AHEAD_DAYS)))
    partitions.ensure_partitions(engine, days, {name: name + NEW_SUFFIX for name in TABLES})
    for name, (below, high_water) in id_ranges.items():
        for low in range(below, high_water, COPY_BATCH_IDS):
            with engine.begin() as conn:
                conn.execute(sa.text(_copy_sql(conn, name) + " WHERE o.id > :low "
                                     "AND o.id <= :high"),
                             {"low": low, "high": min(low + COPY_BATCH_IDS, high_water)})
    with engine.begin() as conn:
        rows = _catch_up_and_swap(conn)
    partitions.forget_known(engine)
    engine._perflib_partitioned = True
    return MigrationResult(False, rows, len(days), time.perf_counter() - started)


def _copy_sql(conn: sa.Connection, name: str) -> str:
    """INSERT into the new table from the old one (aliased ``o``); phases and samples take
    their job's start time where they lack it."""
    columns = [column.name for column in TABLES[name].columns]
    if name == "generation_performance":
        values, source = [f'o."{c}"' for c in columns], f"{qualified(conn, name)} AS o"
    else:
        values = ['coalesce(o.job_started_at, j.started_at)' if c == "job_started_at"
                  else f'o."{c}"' for c in columns]
        source = (f"{qualified(conn, name)} AS o LEFT JOIN "
                  f"{qualified(conn, 'generation_performance')} AS j ON j.job_id = o.job_id")
    column_list = ", ".join(f'"{c}"' for c in columns)
    return (f"INSERT INTO {qualified(conn, name + NEW_SUFFIX)} ({column_list}) "
            f"SELECT {', '.join(values)} FROM {source}")


def _catch_up_and_swap(conn: sa.Connection) -> dict[str, int]:
    """With the old tables locked against writes: copy rows that arrived during the copy,
    drop those deleted meanwhile, check the counts, swap the names; return the counts."""
    for name in TABLES:  # the writers' order: jobs, phases, samples
        conn.execute(sa.text(f"LOCK TABLE {qualified(conn, name)} IN EXCLUSIVE MODE"))
    rows = {}
    for name in TABLES:
        old, new = qualified(conn, name), qualified(conn, name + NEW_SUFFIX)
        conn.execute(sa.text(_copy_sql(conn, name) + f" WHERE NOT EXISTS "
                             f"(SELECT 1 FROM {new} AS n WHERE n.id = o.id)"))
        conn.execute(sa.text(f"DELETE FROM {new} AS n WHERE NOT EXISTS "
                             f"(SELECT 1 FROM {old} AS o WHERE o.id = n.id)"))
        counts = [conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in (old, new)]
        if counts[0] != counts[1]:
            raise MigrationError(f"{name}: {counts[0]} rows in the old table, {counts[1]} "
                                 "copied; nothing was swapped")
        rows[name] = counts[0]
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence(:table, 'id'), max(id)) FROM {new}"),
            {"table": f"{partitions.schema_of(conn)}.{name}{NEW_SUFFIX}"})
    for name in TABLES:
        conn.execute(sa.text(f"ALTER TABLE {qualified(conn, name)} "
                             f'RENAME TO "{name}{UNPARTITIONED_SUFFIX}"'))
        conn.execute(sa.text(f"ALTER TABLE {qualified(conn, name + NEW_SUFFIX)} "
                             f'RENAME TO "{name}"'))
    return rows
