"""Engines: one SQLAlchemy engine per database URL, tuned for concurrent writers.

SQLite gets WAL journaling, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several
processes can write one file without "database is locked" escaping. An SQLite engine remembers
which file (device and inode) it opened: if the file at its path is deleted or replaced, the
engine is dropped and the next one opens (or recreates) the file that is there now, instead of
writing on into a file nobody can read any more. PostgreSQL tables live in the configured schema
through ``schema_translate_map``. Every engine's connections are counted in the fork gate
(:mod:`perflib.store.forkgate`), so a process forks only while none is in use.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateTable

from perflib.store import forkgate
from perflib.threads import PerProcess

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 60
REPLACED_CLOSE_WAIT_S = 10  # how long a replaced file's connections may take to close


class DatabaseFileReplaced(RuntimeError):
    """The SQLite file was deleted or replaced while rows were written to it."""


_engines: PerProcess[sa.Engine] = PerProcess()
_stand_ins: PerProcess[sa.Engine] = PerProcess()
_connections_closed = threading.Condition()  # an SQLite connection of some engine closed


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        record.info["read_only"] = not _writable(engine.url.database)
        if not hasattr(engine, "_perflib_sqlite_file"):
            engine._perflib_sqlite_file = _file_identity(engine.url.database)
        with _connections_closed:
            engine._perflib_open = getattr(engine, "_perflib_open", 0) + 1

    @sa.event.listens_for(engine, "close")
    def _on_close(_dbapi_connection, _record):
        with _connections_closed:
            engine._perflib_open = getattr(engine, "_perflib_open", 1) - 1
            _connections_closed.notify_all()

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, record):
        # A connection to a replaced file closes as soon as it is returned (see _replaced).
        if dbapi_connection is not None and getattr(engine, "_perflib_replaced", False):
            record.invalidate()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_connection, record, _proxy):
        # SQLite opens a file it may not write read-only, and the connection stays read-only
        # after the file is writable again: replace it then (the pool opens a new one).
        if record.info.get("read_only") and _writable(engine.url.database):
            raise sa.exc.DisconnectionError("the SQLite file is writable again")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Take the write lock up front: a deferred transaction that upgrades later can fail with
        # SQLITE_BUSY without waiting for the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: URL, schema: str) -> sa.Engine:
    """A new engine for `url`; SQLite files and their folder are created on first use."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        _configure_sqlite(engine)
        forkgate.guard(engine)
        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    forkgate.guard(engine)
    return engine.execution_options(schema_translate_map={None: schema})


def engine_for(url: URL, schema: str) -> sa.Engine:
    """The process-wide engine for `url` (created once, shared by every store on it; made
    afresh when its SQLite file was deleted or replaced)."""
    key = (url.render_as_string(hide_password=False), schema)
    return _engines.get(key, lambda: create_engine(url, schema), stale=_replaced)


def _replaced(engine: sa.Engine) -> bool:
    """Whether `engine`'s SQLite file was replaced: then every connection to the old file is
    closed before the file there now is opened. SQLite finds a database's WAL and shared-memory
    files by its path; a connection still open on the old file shares them with the new file's
    and, closing last, deletes the new file's WAL (its committed rows with it)."""
    if not sqlite_file_replaced(engine):
        return False
    if not getattr(engine, "_perflib_replaced", False):
        log.warning("SQLite file %s was deleted or replaced; opening the one there now",
                    engine.url.database)
    engine._perflib_replaced = True
    engine.dispose()  # idle connections close now, those in use when they are returned
    with _connections_closed:
        if not _connections_closed.wait_for(lambda: engine._perflib_open <= 0,
                                            REPLACED_CLOSE_WAIT_S):
            log.warning("%d connection(s) to the replaced SQLite file %s are still in use",
                        engine._perflib_open, engine.url.database)
    return True


def sqlite_file_replaced(engine: sa.Engine) -> bool:
    """True when the SQLite file `engine` opened is no longer the file at its path: what it
    writes now could never be read back."""
    opened = getattr(engine, "_perflib_sqlite_file", None)
    return opened is not None and _file_identity(engine.url.database) != opened


def _writable(path: str | None) -> bool:
    """Whether this process may write the SQLite file at `path` (a missing one it creates)."""
    if not path or path == ":memory:" or not os.path.exists(path):
        return True
    return os.access(path, os.W_OK)


def _file_identity(path: str | None) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None when there is none."""
    if not path or path == ":memory:":
        return None
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_dev, status.st_ino


def empty_stand_in(metadata: sa.MetaData) -> sa.Engine:
    """An in-memory SQLite database with `metadata`'s tables, empty and read-only: what a
    reader of a new database reads (reading must neither create the database nor its schema;
    a write through it fails). One per process; each of its connections builds its own."""
    return _stand_ins.get(id(metadata), lambda: _read_only_copy(metadata))


def _read_only_copy(metadata: sa.MetaData) -> sa.Engine:
    ddl = [str(CreateTable(table).compile(dialect=sqlite.dialect()))
           for table in metadata.sorted_tables]
    engine = sa.create_engine("sqlite://")

    @sa.event.listens_for(engine, "connect")
    def _build(dbapi_connection, _record):
        for statement in ddl:
            dbapi_connection.execute(statement)
        dbapi_connection.execute("PRAGMA query_only = ON")

    return engine


def dispose_engines() -> None:
    """Close the idle pooled connections of every engine this process made (connections in use
    close when they are returned); the engines stay usable and reconnect on demand."""
    for engine in _engines.values():
        engine.dispose()

