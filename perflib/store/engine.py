"""Engines: one SQLAlchemy engine per database URL, tuned for concurrent writers.

SQLite gets WAL journaling, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several
processes can write one file without "database is locked" escaping. PostgreSQL tables live in the
configured schema through ``schema_translate_map``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

SQLITE_BUSY_TIMEOUT_S = 60

_engines: dict[tuple[str, str], sa.Engine] = {}
_engines_lock = threading.Lock()


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

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
        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    return engine.execution_options(schema_translate_map={None: schema})


def engine_for(url: URL, schema: str) -> sa.Engine:
    """The process-wide engine for `url` (created once, shared by every store on it)."""
    key = (url.render_as_string(hide_password=False), schema)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_engine(url, schema)
        return engine


def _forget_engines_in_child() -> None:
    # Connections inherited across fork must not be shared with the parent.
    global _engines_lock
    _engines_lock = threading.Lock()
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)
