"""How a batch of job rows lands: one transaction per batch, through the driver.

SQLite: ``INSERT OR IGNORE`` with the driver's executemany (the unique job_id skips a job already
stored). PostgreSQL: ``COPY`` straight into each table, new jobs being the common case; a row
already stored makes the COPY fail, and the batch is written again the careful way: each table's
rows COPYed into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.
Day-partitioned tables cannot keep job_id unique (:mod:`.partitions`): one query finds which of
the batch's jobs are stored already, and only the others are copied.
"""
from __future__ import annotations

import sys
from datetime import datetime
from functools import partial
from operator import is_not
from typing import Callable, Sequence

import sqlalchemy as sa

from perflib.record import LIVE_STATUSES
from perflib.store import partitions, schema
from perflib.store.rows import Batch, Rows

_Insert = Callable[[sa.Engine, Batch, bool, bool], int]


def insert_batch(engine: sa.Engine, batch: Batch, replace_live: bool) -> int:
    """Insert `batch` in one transaction, with the live rows of its jobs replaced first when
    `replace_live`; return how many jobs were new."""
    insert: _Insert = _insert_plain
    if getattr(engine, "_perflib_partitioned", False):
        insert = _insert_partitioned
        started = filter(partial(is_not, None), batch.jobs.column("started_at"))
        partitions.ensure_partitions(engine, set(map(datetime.date, started)))
    try:
        return insert(engine, batch, replace_live, False)
    except Exception as exc:
        if not _unique_violation(exc):
            raise
    return insert(engine, batch, replace_live, True)  # rolled back whole: again, carefully


def _insert_plain(engine: sa.Engine, batch: Batch, replace_live: bool, careful: bool) -> int:
    with engine.begin() as conn:
        if replace_live:
            table = schema.generation_performance
            ids = list(map(str, batch.jobs.column("job_id")))
            for start in range(0, len(ids), 500):
                conn.execute(sa.delete(table).where(table.c.job_id.in_(ids[start:start + 500]),
                                                    table.c.status.in_(LIVE_STATUSES)))
        inserted = _put(conn, batch.jobs, careful)
        for rows in batch.children:
            _put(conn, rows, careful)
    return inserted


def _insert_partitioned(engine: sa.Engine, batch: Batch, replace_live: bool,
                        careful: bool) -> int:
    """Into day-partitioned tables, where no index keeps job_id unique: one query looks up
    which jobs are stored already (in the days their copies could lie in), and only the others
    are inserted, with their phases and samples."""
    ids = list(map(str, batch.jobs.column("job_id")))
    window = partitions.duplicate_window(batch.jobs.column("started_at"),
                                         batch.jobs.column("submitted_at"))
    with engine.begin() as conn:
        if replace_live:
            distinct = list(dict.fromkeys(ids))
            partitions.lock_job_ids(conn, distinct)
            partitions.delete_live(conn, distinct, LIVE_STATUSES, window)
        fresh = _new_jobs(batch, ids, partitions.stored_job_ids(conn, ids, window))
        inserted = _put(conn, fresh.jobs, careful)
        for rows in fresh.children:
            _put(conn, rows, careful)
    return inserted


def _new_jobs(batch: Batch, ids: Sequence[str], stored: set[str]) -> Batch:
    """`batch` less the jobs stored already and the repeats of a job (its first copy wins)."""
    if not stored and len(set(ids)) == len(ids):
        return batch
    keep = []
    for job in ids:
        keep.append(job not in stored)
        stored.add(job)
    return batch.of_jobs(keep)


def _put(conn: sa.Connection, rows: Rows, careful: bool) -> int:
    """Insert `rows` through the driver, skipping those whose unique key is stored already;
    on PostgreSQL unless `careful`, COPY straight in (a stored row makes it fail)."""
    if not rows.values:
        return 0
    target = _qualified(conn, rows.table.name)
    column_list = ", ".join(f'"{c}"' for c in rows.columns)
    driver = conn.connection.driver_connection
    if conn.dialect.name != "postgresql":
        cursor = driver.cursor()
        cursor.executemany(f"INSERT OR IGNORE INTO {target} ({column_list}) "
                           f"VALUES ({', '.join('?' for _ in rows.columns)})", rows.values)
        return cursor.rowcount
    with driver.cursor() as cursor:
        if not careful:
            _copy(cursor, target, column_list, rows.values)
            return len(rows.values)
        staging = f'"perflib_staging_{rows.table.name}"'
        cursor.execute(f"CREATE TEMP TABLE {staging} ON COMMIT DROP AS "
                       f"SELECT {column_list} FROM {target} WITH NO DATA")
        _copy(cursor, staging, column_list, rows.values)
        cursor.execute(f"INSERT INTO {target} ({column_list}) SELECT {column_list} "
                       f"FROM {staging} ON CONFLICT DO NOTHING")
        inserted = cursor.rowcount
        cursor.execute(f"DROP TABLE {staging}")
    return inserted


def _copy(cursor, target: str, column_list: str, rows: list[tuple]) -> None:
    with cursor.copy(f"COPY {target} ({column_list}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _qualified(conn: sa.Connection, table_name: str) -> str:
    schema_name = conn.get_execution_options().get("schema_translate_map", {}).get(None)
    return f'"{schema_name}"."{table_name}"' if schema_name else f'"{table_name}"'


def _unique_violation(exc: BaseException) -> bool:
    """Whether a PostgreSQL COPY failed on a row whose unique key is stored already."""
    psycopg = sys.modules.get("psycopg")  # loaded where PostgreSQL is in use
    return psycopg is not None and isinstance(exc, psycopg.errors.UniqueViolation)
