"""PostgreSQL time partitioning of the job tables: one partition per UTC day.

``generation_performance`` is partitioned by ``started_at``, ``generation_phases`` and
``resource_samples`` by ``job_started_at`` (their job's start, copied at write time), so a day's
jobs, phases and samples sit in partitions with the same bounds and retention drops them whole.
Rows without a time (jobs queued and never started) go to each table's DEFAULT partition.

A unique key of a partitioned table must hold the partition key, so ``job_id`` alone cannot be
unique: ``(job_id, started_at)`` is (NULLs equal from PostgreSQL 15 on), and the store looks up
the batch's job ids before inserting (see :func:`stored_job_ids`). Foreign keys to ``job_id``
cannot exist either; :func:`perflib.store.deletion.delete_jobs` deletes phases and samples itself.

Day partitions are created ahead by ``perflib maintain`` and, when a write brings a day that has
none, just before the write in a short transaction of their own (see :func:`ensure_partitions`).
SQLite keeps plain tables.
"""
from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from time import sleep
from typing import Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateColumn

from perflib.store import schema
from perflib.threads import PerProcess

log = logging.getLogger(__name__)

PARTITION_KEYS = {"generation_performance": "started_at",
                  "generation_phases": "job_started_at",
                  "resource_samples": "job_started_at"}
TABLES = {name: schema.metadata.tables[name] for name in PARTITION_KEYS}
AHEAD_DAYS = 7
# How far a stored copy of a job may have started from the written one and still be found (a
# running job's report and its final record share their started_at; a job not started yet is
# looked for from its submission to now). Wider costs an index probe per day per written job.
DUPLICATE_WINDOW = timedelta(hours=1)
UNPARTITIONED_SUFFIX = "_unpartitioned"
# Each new partition holds a few locks until commit: a year of backfill in one transaction
# would overflow PostgreSQL's shared lock table.
DAYS_PER_TRANSACTION = 7
# A partition is created or dropped under a lock on its table that a long query can keep
# waiting, with every writer queued behind: each try waits at most this long.
LOCK_WAIT = "2s"
LOCK_ATTEMPTS = 3
RETRY_PAUSE_S = 1.0
_DDL_LOCK = 7346253  # pg_advisory_xact_lock key: one partition creator at a time
_ID_LOCKS = 7346254  # first key of the per-job-id advisory locks of replace_live
_ID_LOCK_BUCKETS = 256  # few enough that a big batch cannot fill the shared lock table
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
# Per engine (by id, with a weak reference telling a reused id from the same engine): the
# (table, day) partitions this process knows exist; a forked child starts knowing none.
_known: PerProcess[tuple[weakref.ref, set[tuple[str, date]]]] = PerProcess()


@dataclass(frozen=True)
class Partition:
    """One partition of a parent table: [start, end) in UTC, or the DEFAULT (no bounds)."""

    parent: str
    name: str
    start: datetime | None
    end: datetime | None
    rows_estimate: int  # pg_class.reltuples: -1 when never analysed

    @property
    def is_default(self) -> bool:
        return self.start is None


# -- names and catalog ------------------------------------------------------------------------
def schema_of(conn: sa.Connection) -> str:
    return conn.get_execution_options().get("schema_translate_map", {}).get(None) or "public"


def qualified(conn: sa.Connection, name: str) -> str:
    return f'"{schema_of(conn)}"."{name}"'


def partition_name(table: str, day: date | None) -> str:
    return f"{table}_default" if day is None else f"{table}_p{day:%Y%m%d}"


def table_kind(conn: sa.Connection, name: str = "generation_performance") -> str | None:
    """'partitioned', 'plain', or None when the table does not exist."""
    kind = conn.execute(sa.text(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relname = :name"),
        {"schema": schema_of(conn), "name": name}).scalar()
    return None if kind is None else "partitioned" if kind == "p" else "plain"


def list_partitions(conn: sa.Connection, parent: str) -> list[Partition]:
    """The partitions of `parent` with their UTC bounds, oldest first, the DEFAULT last."""
    rows = conn.execute(sa.text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = :schema AND p.relname = :parent"),
        {"schema": schema_of(conn), "parent": parent}).all()
    partitions = []
    for name, bound, estimate in rows:
        match = _BOUND.search(bound)
        start, end = ((_utc(match.group(1)), _utc(match.group(2))) if match else (None, None))
        partitions.append(Partition(parent, name, start, end, int(estimate)))
    return sorted(partitions, key=lambda p: (p.start is None, p.start or datetime.min))


# -- creation ---------------------------------------------------------------------------------
def create_tables(conn: sa.Connection, suffix: str = "",
                  tables: Mapping[str, sa.Table] = TABLES) -> None:
    """Create the three job tables partitioned by day (named with `suffix`, for a migration),
    each with its DEFAULT partition; `tables` gives their columns (a revision's own)."""
    for name, table in tables.items():
        parent = qualified(conn, name + suffix)
        key = PARTITION_KEYS[name]
        columns = [str(CreateColumn(c).compile(dialect=postgresql.dialect()))
                   for c in table.columns]
        unique = ["job_id", "seq", key] if name != "generation_performance" else ["job_id", key]
        nulls = " NULLS NOT DISTINCT" if conn.dialect.server_version_info >= (15,) else ""
        conn.execute(sa.text(
            f"CREATE TABLE {parent} ({', '.join(columns)}, "
            f"UNIQUE{nulls} ({', '.join(unique)})) PARTITION BY RANGE ({key})"))
        index_columns = [["id"]] + [[c.name for c in index.columns] for index in table.indexes]
        for columns_of_index in index_columns:
            conn.execute(sa.text(f"CREATE INDEX ON {parent} ({', '.join(columns_of_index)})"))
        conn.execute(sa.text(f"CREATE TABLE {qualified(conn, partition_name(name, None))} "
                             f"PARTITION OF {parent} DEFAULT"))


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def ensure_partitions(engine: sa.Engine, days: Iterable[date],
                      parents: Mapping[str, str] | None = None, attempts: int = 1) -> int:
    """Create the missing day partitions of `days` for the three tables; return how many.

    Runs in short transactions of its own, before the write that needs them: creating a
    partition locks the parent, which inside a writer's transaction would stall every other
    writer until that whole batch commits. Rows of those days already in the DEFAULT partition
    move into the new one. Days whose lock is not had in `attempts` tries of ``LOCK_WAIT`` are
    left (a WARNING): their rows land in DEFAULT and move when the day is created (the next
    write of it, or ``perflib maintain``). `parents` maps a table to the parent to use (a
    migration's new tables).
    """
    cache = _known_days(engine) if parents is None else set()
    wanted = sorted({day for day in days if any((name, day) not in cache for name in TABLES)})
    created = 0
    for first in range(0, len(wanted), DAYS_PER_TRANSACTION):
        chunk = wanted[first:first + DAYS_PER_TRANSACTION]
        made = _with_brief_locks(engine, lambda conn: _create_days(conn, chunk, parents),
                                 attempts)
        if made is None:
            log.warning("day partitions %s to %s not created: their tables stayed locked; "
                        "their rows go to DEFAULT until they are", chunk[0], chunk[-1])
            continue
        created += made
        cache |= {(name, day) for name in TABLES for day in chunk}
    return created


def _create_days(conn: sa.Connection, days: Sequence[date],
                 parents: Mapping[str, str] | None) -> int:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
    created = 0
    for name in TABLES:
        parent = (parents or {}).get(name, name)
        existing = {p.start.date() for p in list_partitions(conn, parent) if p.start}
        for day in days:
            if day not in existing:
                _create_day(conn, name, parent, day)
                created += 1
    return created


def _with_brief_locks(engine: sa.Engine, work: Callable[[sa.Connection], int],
                      attempts: int) -> int | None:
    """`work` in a transaction whose lock waits end after ``LOCK_WAIT``, tried `attempts`
    times; its result, or None when every try found the lock held."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                return work(conn)
        except sa.exc.OperationalError as exc:
            from psycopg.errors import LockNotAvailable  # PostgreSQL only: perflib[postgres]

            if not isinstance(exc.orig, LockNotAvailable):
                raise
            if attempt + 1 < attempts:
                sleep(RETRY_PAUSE_S)
    return None


def _create_day(conn: sa.Connection, name: str, parent: str, day: date) -> None:
    key = PARTITION_KEYS[name]
    start = datetime.combine(day, time(), timezone.utc)
    bounds = {"start": start, "end": start + timedelta(days=1)}
    default = qualified(conn, partition_name(name, None))
    in_range = f"{key} >= :start AND {key} < :end"
    strays = conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {in_range})"),
                          bounds).scalar()
    if strays:
        conn.execute(sa.text(
            f"CREATE TEMP TABLE perflib_strays ON COMMIT DROP AS WITH moved AS "
            f"(DELETE FROM {default} WHERE {in_range} RETURNING *) SELECT * FROM moved"), bounds)
    conn.execute(sa.text(
        f"CREATE TABLE {qualified(conn, partition_name(name, day))} PARTITION OF "
        f"{qualified(conn, parent)} FOR VALUES FROM ('{bounds['start'].isoformat()}') "
        f"TO ('{bounds['end'].isoformat()}')"))
    if strays:
        conn.execute(sa.text(f"INSERT INTO {qualified(conn, parent)} "
                             "SELECT * FROM perflib_strays"))
        conn.execute(sa.text("DROP TABLE perflib_strays"))


def _known_days(engine: sa.Engine) -> set[tuple[str, date]]:
    """The (table, day) partitions this process knows `engine`'s database has."""
    return _known.get(id(engine), lambda: (weakref.ref(engine), set()),
                      stale=lambda held: held[0]() is not engine)[1]


def forget_known(engine: sa.Engine) -> None:
    """Drop this process's memory of existing partitions (after some were dropped)."""
    _known.set(id(engine), (weakref.ref(engine), set()))


# -- the write path ---------------------------------------------------------------------------
def record_days(records: Sequence[Mapping], key: str = "started_at") -> set[date]:
    """The UTC days of the records' `key` times."""
    return {_utc(record[key]).date() for record in records if record.get(key) is not None}


def duplicate_window(started: Sequence[datetime | None], submitted: Sequence[datetime | None]
                     ) -> tuple[datetime, datetime]:
    """The start times a stored copy of these jobs may have (see `DUPLICATE_WINDOW`), from
    their UTC starts and submissions: a job not started yet is looked for from its submission
    (or now) to now."""
    now = datetime.now(timezone.utc)
    starts = [start for start in started if start is not None]
    waiting = [submission or now for start, submission in zip(started, submitted)
               if start is None]
    earliest = min(starts + waiting)
    latest = max(starts + ([now] if waiting else []))
    return earliest - DUPLICATE_WINDOW, latest + DUPLICATE_WINDOW


def _near(table: sa.Table, key: str, window: tuple[datetime, datetime]):
    """A condition partition pruning understands: the DEFAULT and the window's days only."""
    column = table.c[key]
    return sa.or_(column.is_(None), sa.and_(column >= window[0], column < window[1]))


def lock_job_ids(conn: sa.Connection, job_ids: Sequence[str]) -> None:
    """Hold, until commit, advisory locks on the job ids' buckets (in order: no deadlock), so
    two writers replacing one job's live row do not both insert it."""
    conn.execute(sa.text(
        "SELECT count(pg_advisory_xact_lock(:first + bucket)) FROM (SELECT DISTINCT "
        "abs(hashtext(id)) % :buckets AS bucket FROM unnest(CAST(:ids AS text[])) AS id "
        "ORDER BY bucket) AS buckets"),
        {"first": _ID_LOCKS, "buckets": _ID_LOCK_BUCKETS, "ids": list(job_ids)})


def delete_live(conn: sa.Connection, job_ids: Sequence[str], statuses: Sequence[str],
                window: tuple[datetime, datetime]) -> None:
    """Delete the stored live rows of these jobs with their phases and samples."""
    jobs = schema.generation_performance
    deleted = list(conn.execute(sa.delete(jobs).where(
        jobs.c.job_id.in_(job_ids), jobs.c.status.in_(statuses),
        _near(jobs, "started_at", window)).returning(jobs.c.job_id)).scalars())
    if deleted:
        for child in (schema.generation_phases, schema.resource_samples):
            conn.execute(sa.delete(child).where(child.c.job_id.in_(deleted),
                                                _near(child, "job_started_at", window)))


def stored_job_ids(conn: sa.Connection, job_ids: Sequence[str],
                   window: tuple[datetime, datetime]) -> set[str]:
    """Which of these jobs are stored already (started within the window, or never). The ids
    travel as one binary array, planned for its values every time (prepare=False), so the
    server matches the window's rows against a hash of them instead of probing per id."""
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT j.job_id FROM {qualified(conn, 'generation_performance')}"
                       f" AS j WHERE j.job_id = ANY(%b::text[]) AND (j.started_at IS NULL OR "
                       f"(j.started_at >= %s AND j.started_at < %s))",
                       (list(job_ids), *window), prepare=False)
        return {job for (job,) in cursor}


# -- retention --------------------------------------------------------------------------------
def whole_partitions_before(conn: sa.Connection, cutoff: datetime) -> list[Partition]:
    """Day partitions of the three tables that end at or before `cutoff`."""
    return [p for name in TABLES for p in list_partitions(conn, name)
            if p.end is not None and p.end <= cutoff]


def stray_days(conn: sa.Connection) -> set[date]:
    """Days that have rows in a DEFAULT partition (a write that could not create its day)."""
    return {day for name, key in PARTITION_KEYS.items() for day in conn.execute(sa.text(
        f"SELECT DISTINCT CAST(timezone('UTC', {key}) AS date) "
        f"FROM {qualified(conn, partition_name(name, None))} WHERE {key} IS NOT NULL")).scalars()}


def delete_strays_before(conn: sa.Connection, moment: datetime) -> None:
    """Delete the rows in the DEFAULT partitions whose time is before `moment`."""
    for name, key in PARTITION_KEYS.items():
        conn.execute(sa.text(f"DELETE FROM {qualified(conn, partition_name(name, None))} "
                             f"WHERE {key} < :moment"), {"moment": moment})


def drop_before(engine: sa.Engine, cutoff: datetime) -> tuple[int, int]:
    """DETACH and DROP the day partitions wholly before `cutoff`, each in a short transaction
    of its own (see ``LOCK_WAIT``); return how many went and how many are left for the next
    run (from the first that stayed locked on: the others wait for the same lock)."""
    with engine.connect() as conn:
        doomed = whole_partitions_before(conn, cutoff)
    dropped = 0
    for partition in doomed:
        if _with_brief_locks(engine, lambda conn: _drop(conn, partition), LOCK_ATTEMPTS) is None:
            break
        dropped += 1
    forget_known(engine)
    return dropped, len(doomed) - dropped


def _drop(conn: sa.Connection, partition: Partition) -> int:
    conn.execute(sa.text(f"ALTER TABLE {qualified(conn, partition.parent)} "
                         f"DETACH PARTITION {qualified(conn, partition.name)}"))
    conn.execute(sa.text(f"DROP TABLE {qualified(conn, partition.name)}"))
    return 1


def estimated_rows(conn: sa.Connection, partitions: Iterable[Partition]
                   ) -> tuple[dict[str, int], bool]:
    """Rows per parent table in `partitions`, and whether any figure is an estimate: PostgreSQL's
    (``reltuples``, no row read), or an exact count for a partition never analysed."""
    totals, estimated = dict.fromkeys(TABLES, 0), False
    for partition in partitions:
        rows = partition.rows_estimate
        if rows < 0:
            rows = conn.execute(sa.text(
                f"SELECT count(*) FROM {qualified(conn, partition.name)}")).scalar_one()
        else:
            estimated = True
        totals[partition.parent] += rows
    return totals, estimated


def _utc(value) -> datetime:
    if type(value) is datetime and value.tzinfo is timezone.utc:  # the writer's common case
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
    if type(value) is datetime:
        return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
                else value.astimezone(timezone.utc))
    import pandas as pd  # another type, or text Python does not read

    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
