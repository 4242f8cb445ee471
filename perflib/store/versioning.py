"""Schema revisions by Alembic (:mod:`perflib.store.migrations`), run on the store's own
connection: no ``alembic.ini`` and no second URL.

A database is *new* (no perflib table at all), *at head*, or *behind* (an older revision, or
made before Alembic: perflib tables without ``alembic_version``). Only ``perflib init-db``
(:func:`upgrade`) moves a database forward; a writer creates a new database's schema
(:func:`create_if_new`) and refuses one behind head with :class:`SchemaBehind`, as readers do.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from perflib.config import safe_url
from perflib.store import partitions
from perflib.store.migrations import baseline

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
_CREATOR_LOCK = 7346251  # pg_advisory_xact_lock key: one schema creator or upgrader at a time


class SchemaBehind(RuntimeError):
    """The database's schema is older than this perflib's (or newer): it needs perflib init-db
    (or a newer perflib)."""


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: from which revision (None: made before Alembic; "" a new
    database) to which."""

    before: str | None
    after: str

    def describe(self, where: str) -> str:
        if self.before == self.after:
            return f"{where} is at revision {self.after} (head): nothing to upgrade"
        if self.before == "":
            return f"created the schema of {where} at revision {self.after} (head)"
        start = ("revision none (made by perflib before migrations)" if self.before is None
                 else f"revision {self.before}")
        return f"upgraded {where} from {start} to revision {self.after} (head)"


@functools.cache
def head() -> str:
    """This perflib's latest revision."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def revision(conn: sa.Connection) -> str | None:
    """The database's revision: None without ``alembic_version``."""
    options = {"version_table_schema": _schema_name(conn)}
    return MigrationContext.configure(conn, opts=options).get_current_revision()


def has_perflib_tables(conn: sa.Connection) -> bool:
    names = set(sa.inspect(conn).get_table_names(schema=_schema_name(conn)))
    return bool(names & (set(baseline.metadata.tables) | {"alembic_version"}))


def check(conn: sa.Connection) -> str:
    """'head' or 'new'; raise :class:`SchemaBehind` for a database behind (or ahead of) head."""
    current = revision(conn)
    if current == head():
        return "head"
    if current is None and not has_perflib_tables(conn):
        return "new"
    raise behind(conn, current)


def behind(conn: sa.Connection, current: str | None) -> SchemaBehind:
    where = f"database {safe_url(conn.engine.url)}"
    if current is not None and current not in _known_revisions():
        return SchemaBehind(f"{where} is at revision {current}, newer than this perflib's "
                            f"{head()}: upgrade perflib")
    shown = "none (made by perflib before migrations)" if current is None else current
    return SchemaBehind(f"{where} is at revision {shown}, perflib needs {head()}: "
                        "run perflib init-db")


def create_if_new(conn: sa.Connection) -> None:
    """In the caller's transaction: give a new database the schema at head (concurrent first
    writers wait for one another); a database behind head raises :class:`SchemaBehind`."""
    _lock(conn)
    if check(conn) == "new":
        command.upgrade(_config(conn), "head")


def upgrade(conn: sa.Connection, backfill: Callable[[sa.Connection], None]) -> Upgrade:
    """In the caller's transaction: bring any earlier perflib database to head. One made before
    Alembic first gets revision 0001's schema in place (missing tables, columns and indexes;
    `backfill` for rows written before schema 2's stored cost terms), then is stamped 0001."""
    _lock(conn)
    before = revision(conn)
    if before == head():
        return Upgrade(before, before)
    if before is None:
        if not has_perflib_tables(conn):
            before = ""
        else:
            _adopt(conn, backfill)
            command.stamp(_config(conn), BASELINE)
    command.upgrade(_config(conn), "head")
    return Upgrade(before, head())


def _adopt(conn: sa.Connection, backfill: Callable[[sa.Connection], None]) -> None:
    """Bring a database made before Alembic to exactly revision 0001's schema."""
    old_schema_version = _old_schema_version(conn)
    if conn.dialect.name == "postgresql" and partitions.table_kind(conn) is None:
        partitions.create_tables(conn, tables=_baseline_job_tables())
    baseline.metadata.create_all(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    schema_name = _schema_name(conn)
    for table in baseline.metadata.sorted_tables:
        _add_missing_columns(conn, inspector, table, schema_name)
        _add_missing_indexes(conn, inspector, table, schema_name)
    if old_schema_version is None or old_schema_version < 2:
        backfill(conn)


def _add_missing_columns(conn: sa.Connection, inspector, table: sa.Table,
                         schema_name: str | None) -> None:
    """Nullable columns revision 0001 defines that an older table lacks."""
    existing = {c["name"] for c in inspector.get_columns(table.name, schema=schema_name)}
    for column in table.columns:
        if column.name not in existing and column.nullable:
            column_type = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {_qualified(table.name, schema_name)} "
                                 f'ADD COLUMN "{column.name}" {column_type}'))


def _add_missing_indexes(conn: sa.Connection, inspector, table: sa.Table,
                         schema_name: str | None) -> None:
    """Indexes revision 0001 defines that an older table lacks (by their columns). A table
    partitioned by day gets them as :func:`partitions.create_tables` makes them."""
    existing = {tuple(index["column_names"])
                for index in inspector.get_indexes(table.name, schema=schema_name)}
    partitioned = (conn.dialect.name == "postgresql"
                   and partitions.table_kind(conn, table.name) == "partitioned")
    for index in table.indexes:
        columns = tuple(column.name for column in index.columns)
        if columns in existing:
            continue
        if partitioned:
            conn.execute(sa.text(f"CREATE INDEX ON {_qualified(table.name, schema_name)} "
                                 f"({', '.join(columns)})"))
        else:
            index.create(conn)


def _old_schema_version(conn: sa.Connection) -> int | None:
    """The version perflib recorded before Alembic (``perflib_schema_info``), if any."""
    if not sa.inspect(conn).has_table("perflib_schema_info", schema=_schema_name(conn)):
        return None
    info = baseline.schema_info
    return conn.execute(sa.select(info.c.version).where(info.c.id == 1)).scalar()


def _baseline_job_tables() -> dict[str, sa.Table]:
    return {name: baseline.metadata.tables[name] for name in partitions.PARTITION_KEYS}


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Concurrent first-time creators wait here instead of racing on CREATE SCHEMA and
        # CREATE TABLE (IF NOT EXISTS does not stop two at once).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATOR_LOCK})
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{partitions.schema_of(conn)}"'))


def _config(conn: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision
                     for script in ScriptDirectory.from_config(_config()).walk_revisions())


def _schema_name(conn: sa.Connection) -> str | None:
    return conn.get_execution_options().get("schema_translate_map", {}).get(None)


def _qualified(table_name: str, schema_name: str | None) -> str:
    return f'"{schema_name}"."{table_name}"' if schema_name else f'"{table_name}"'
