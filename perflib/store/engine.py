"""Engines: one SQLAlchemy engine per database URL, tuned for concurrent writers.

SQLite gets WAL journaling, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several
processes can write one file without "database is locked" escaping. An SQLite engine remembers
which file (device and inode) it opened: if the file at its path is deleted or replaced, the
engine is dropped and the next one opens (or recreates) the file that is there now, instead of
writing on into a file nobody can read any more; the old engine opens no connection again (a
thread may still hold it), and the new file gets none of the deleted one's ``-wal``/``-shm``, which
connections still open on that file keep using. PostgreSQL tables live in the configured schema
through ``schema_translate_map``. Every engine's connections are counted in the fork gate
(:mod:`perflib.store.forkgate`), so a process forks only while none is in use.
"""
from __future__ import annotations

import contextlib
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


class DatabaseFileReplaced(RuntimeError):
    """The SQLite file was deleted or replaced while rows were written to it."""


_engines: PerProcess[sa.Engine] = PerProcess()
_stand_ins: PerProcess[sa.Engine] = PerProcess()
_new_file_locks: PerProcess[threading.Lock] = PerProcess()  # held while a SQLite file is made


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "do_connect")
    def _on_do_connect(dialect, _record, cargs, cparams):
        return _open_sqlite(engine, dialect, cargs, cparams)

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

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_connection, record, _proxy):
        # SQLite opens a file it may not write read-only, and the connection stays read-only
        # after the file is writable again: replace it then (the pool opens a new one).
        if record.info.get("read_only") and _writable(engine.url.database):
            raise sa.exc.DisconnectionError("the SQLite file is writable again")
        # A connection to a file deleted or replaced since is closed, never used: the pool
        # then asks for a new one, which _open_sqlite refuses.
        if _superseded(engine):
            raise sa.exc.DisconnectionError("the SQLite file was deleted or replaced")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Take the write lock up front: a deferred transaction that upgrades later can fail with
        # SQLITE_BUSY without waiting for the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _open_sqlite(engine: sa.Engine, dialect, cargs, cparams):
    """A new connection of `engine`. An engine whose file was deleted or replaced opens none
    (its successor from :func:`engine_for` does). A new file gets no ``-wal`` or ``-shm`` left by
    a deleted one: connections still open on that file keep using them, and a new file sharing
    its WAL index with them loses what it commits."""
    path = engine.url.database
    if _superseded(engine):
        raise DatabaseFileReplaced(f"SQLite file {path} was deleted or replaced")
    if not path or path == ":memory:" or os.path.exists(path):
        return dialect.connect(*cargs, **cparams)
    with _new_file_locks.get(path, threading.Lock):  # one thread at a time clears and creates
        if not os.path.exists(path):
            for leftover in (f"{path}-wal", f"{path}-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        return dialect.connect(*cargs, **cparams)


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
    """Whether `engine`'s SQLite file was replaced (then it is closed, to be made afresh)."""
    if not sqlite_file_replaced(engine):
        return False
    log.warning("SQLite file %s was deleted or replaced; opening the one there now",
                engine.url.database)
    engine._perflib_superseded = True
    engine.dispose()
    return True


def _superseded(engine: sa.Engine) -> bool:
    """Whether `engine` must open no connection: its file was replaced, or it was, by the
    engine made for the file there now (which may even have the old file's inode number)."""
    return getattr(engine, "_perflib_superseded", False) or sqlite_file_replaced(engine)


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

