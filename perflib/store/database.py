"""The store: creates the schema, writes job records in batches and reads them back as DataFrames.

A *job record* is a plain dict of ``generation_performance`` columns, plus optional ``phases`` and
``samples`` lists of dicts for ``generation_phases`` and ``resource_samples``. Writes are
idempotent on ``job_id``: a record that is already stored is skipped, never duplicated.
"""
from __future__ import annotations

import logging
from pathlib import Path
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import URL

from perflib.config import Settings, get_settings, resolve_database_url, safe_url
from perflib.prediction.work_terms import stored_terms
from perflib.record import LIVE_STATUSES
from perflib.store import partitions, schema, versioning
from perflib.store.inserts import insert_batch
from perflib.store.rows import DATETIME_COLUMNS, Batch
from perflib.store.engine import (DatabaseFileReplaced, empty_stand_in, engine_for,
                                  sqlite_file_replaced)

if TYPE_CHECKING:  # the tracker's write path needs neither (pandas comes with perflib[predict])
    import pandas as pd

log = logging.getLogger(__name__)

_TIMESTAMP_NAMES = set().union(*DATETIME_COLUMNS.values())


class Store:
    """Access to one perflib database (SQLite file or PostgreSQL schema)."""

    def __init__(self, db: str | URL | Mapping[str, Any] | None = None,
                 settings: Settings | None = None):
        self.db = db
        self.settings = settings

    # -- connection -------------------------------------------------------------------------
    @property
    def url(self) -> URL:
        return resolve_database_url(self.db, self.config)

    @property
    def config(self) -> Settings:
        """The settings in force: those given, else the environment's."""
        if self.settings is None:
            self.settings = get_settings()
        return self.settings

    @property
    def engine(self) -> sa.Engine:
        """The shared engine of a database at head. Reading never changes the schema: a new
        database (no perflib table yet, or a SQLite file not made yet) reads as empty, through
        a read-only stand-in (:func:`.engine.empty_stand_in`); one behind head raises
        :class:`~perflib.store.versioning.SchemaBehind`."""
        if _sqlite_file_missing(self.url):
            return empty_stand_in(schema.metadata)
        engine = engine_for(self.url, self.config.db_schema)
        if getattr(engine, "_perflib_at_head", False):
            return engine
        with engine.connect() as conn:
            if versioning.check(conn) == "new":
                return empty_stand_in(schema.metadata)
            _mark_at_head(engine, conn)
        return engine

    def writable_engine(self) -> sa.Engine:
        """The engine writes go through: a new database gets the schema at head first (one
        creator at a time); one behind head raises
        :class:`~perflib.store.versioning.SchemaBehind` (``perflib init-db`` upgrades it)."""
        engine = engine_for(self.url, self.config.db_schema)
        if not getattr(engine, "_perflib_at_head", False):
            with engine.begin() as conn:
                versioning.create_if_new(conn)
                _mark_at_head(engine, conn)
        return engine

    @property
    def is_postgres(self) -> bool:
        """Whether reads run on PostgreSQL (a new database's empty stand-in is SQLite)."""
        return self.engine.dialect.name == "postgresql"

    @property
    def is_partitioned(self) -> bool:
        """Whether the job tables are partitioned by day (PostgreSQL; :mod:`.partitions`)."""
        return getattr(self.engine, "_perflib_partitioned", False)

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    # -- schema -----------------------------------------------------------------------------
    def init_db(self) -> versioning.Upgrade:
        """Bring the database to head (``perflib init-db``): create a new one's schema, upgrade
        any earlier perflib's (including one made before Alembic); say from where to where."""
        engine = engine_for(self.url, self.config.db_schema)
        with engine.begin() as conn:
            done = versioning.upgrade(conn, self._backfill_cost_terms)
            _mark_at_head(engine, conn)
        return done

    def _backfill_cost_terms(self, conn: sa.Connection) -> None:
        """Schema 1 → 2: compute the stored cost terms of jobs written before they existed."""
        table = schema.generation_performance
        inputs = ["id", "width", "height", "frame_count", "batch_size", "steps",
                  "guidance_scale", "model_name", "passes"]
        rows = conn.execute(sa.select(*(table.c[name] for name in inputs))
                            .where(table.c.work_units.is_(None))).mappings().all()
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            terms = stored_terms(chunk, self.config.model_profiles)
            conn.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")),
                         [{"row_id": row["id"], **derived} for row, derived in zip(chunk, terms)])
        log.info("computed the cost terms of %d stored jobs", len(rows))

    def revision(self) -> str | None:
        """The database's Alembic revision (None: none recorded)."""
        if _sqlite_file_missing(self.url):
            return None
        with engine_for(self.url, self.config.db_schema).connect() as conn:
            return versioning.revision(conn)

    # -- writes -----------------------------------------------------------------------------
    def write_jobs(self, records: Sequence[Mapping[str, Any]], replace_live: bool = False) -> int:
        """Insert job records with their phases and samples; return how many jobs were new.

        With `replace_live`, a stored row of the same job that is still queued or running is
        replaced (a service reporting a job's progress); finished jobs are never overwritten.

        On SQLite, a file deleted or replaced during the write took the rows with it: they are
        written again into the file at the path now, and the count is returned only once they
        are there.
        """
        if not records:
            return 0
        batch = None
        for _attempt in range(2):
            engine = self.writable_engine()
            batch = batch or Batch.of(records, self.config.model_profiles,
                                      aware=engine.dialect.name == "postgresql")
            inserted = insert_batch(engine, batch, replace_live)
            if not sqlite_file_replaced(engine):
                return inserted
        raise DatabaseFileReplaced(f"SQLite file {self.url.database} was deleted or replaced "
                                   "during two writes in a row")

    # -- reads ------------------------------------------------------------------------------
    def frame(self, query, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Run a SELECT; rows as a DataFrame (its own column names unless `columns` are given),
        every timestamp column as UTC."""
        import pandas as pd

        with self.engine.connect() as conn:
            result = conn.execute(query)
            names = list(columns) if columns is not None else list(result.keys())
            frame = pd.DataFrame(result.mappings().all(), columns=names)
        return _utc_columns(frame, _TIMESTAMP_NAMES.intersection(frame.columns))

    def jobs_frame(self, since: datetime | None = None, until: datetime | None = None,
                   pipeline_type: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Jobs as a DataFrame ordered by ``submitted_at`` (timestamps as UTC)."""
        table = schema.generation_performance
        time_column = sa.func.coalesce(table.c.started_at, table.c.submitted_at)
        query = sa.select(table).order_by(time_column, table.c.id)
        if since is not None:
            query = query.where(time_column >= since)
        if until is not None:
            query = query.where(time_column < until)
        if pipeline_type:
            query = query.where(table.c.pipeline_type == pipeline_type)
        if limit:
            query = query.limit(limit)
        return self.frame(query)

    def recent_jobs(self, gpu_name: str | None, model_name: str | None,
                    limit: int = 50, finished_before: datetime | None = None) -> pd.DataFrame:
        """The latest successful jobs of one GPU and model, newest first; with
        `finished_before`, only those finished before then (history as of a moment)."""
        table = schema.generation_performance
        query = sa.select(table).where(table.c.gpu_name.is_(None) if gpu_name is None
                                       else table.c.gpu_name == gpu_name,
                                       table.c.model_name.is_(None) if model_name is None
                                       else table.c.model_name == model_name)
        return self._latest_successes(query, limit, finished_before)

    def latest_jobs(self, pipeline_type: str, limit: int = 200,
                    finished_before: datetime | None = None) -> pd.DataFrame:
        """The latest successful jobs of one pipeline type on any GPU and model, newest first
        (finished before `finished_before` where given)."""
        table = schema.generation_performance
        query = sa.select(table).where(table.c.pipeline_type == pipeline_type)
        return self._latest_successes(query, limit, finished_before)

    def _latest_successes(self, query, limit: int, finished_before: datetime | None
                          ) -> pd.DataFrame:
        table = schema.generation_performance
        query = query.where(table.c.status == "success")
        if finished_before is not None:
            query = query.where(table.c.finished_at < finished_before)
        return self.frame(query.order_by(table.c.finished_at.desc()).limit(limit))

    def live_jobs(self) -> pd.DataFrame:
        """Jobs reported as queued or running, oldest submission first."""
        table = schema.generation_performance
        query = (sa.select(table).where(table.c.status.in_(LIVE_STATUSES))
                 .order_by(table.c.submitted_at, table.c.id))
        return self.frame(query)

    def phases_frame(self, job_ids: Iterable[str] | None = None) -> pd.DataFrame:
        table = schema.generation_phases
        query = sa.select(table).order_by(table.c.job_id, table.c.seq)
        if job_ids is not None:
            query = query.where(table.c.job_id.in_(list(job_ids)))
        return self.frame(query)

    def count(self, table: sa.Table = schema.generation_performance) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

    def summary(self) -> pd.DataFrame:
        """Per pipeline and status: job count and mean/median/max total seconds (in SQL)."""
        t = schema.generation_performance
        query = (sa.select(t.c.pipeline_type, t.c.status, sa.func.count().label("jobs"),
                           sa.func.avg(t.c.total_seconds).label("mean_seconds"),
                           sa.func.min(t.c.total_seconds).label("min_seconds"),
                           sa.func.max(t.c.total_seconds).label("max_seconds"),
                           sa.func.avg(t.c.cpu_avg_pct).label("cpu_avg_pct"))
                 .group_by(t.c.pipeline_type, t.c.status)
                 .order_by(t.c.pipeline_type, t.c.status))
        return self.frame(query)


class UsesStore:
    """Base of the seed's facades: `db` may be a URL, the seed-style dict, a Store or None (the
    configured database); the store is opened on first use."""

    def __init__(self, db: Any = None, settings: Settings | None = None):
        self.db = db
        self.settings = settings

    @property
    def store(self) -> Store:
        if not isinstance(self.db, Store):
            self.db = Store(self.db, self.settings)
        return self.db

    @property
    def config(self) -> Settings:
        return self.store.config


# -- helpers ----------------------------------------------------------------------------------
def _mark_at_head(engine: sa.Engine, conn: sa.Connection) -> None:
    """Remember that `engine`'s database is at head, and whether its job tables are
    partitioned, for the rest of this process (no further check)."""
    engine._perflib_partitioned = (conn.dialect.name == "postgresql"
                                   and partitions.table_kind(conn) == "partitioned")
    engine._perflib_at_head = True


def _sqlite_file_missing(url: URL) -> bool:
    """A SQLite database whose file is not there but could be made: a new database, which
    reading must not make (nor its folder). A path under a plain file is no database at all,
    and opening it fails as it always did."""
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return False
    missing = Path(path).absolute()
    if missing.exists():
        return False
    ancestor = next(folder for folder in missing.parents if folder.exists())
    return ancestor.is_dir()


def _utc_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    import pandas as pd

    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame
