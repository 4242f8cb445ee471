"""Shared fixtures: real SQLite files and a real throwaway PostgreSQL server."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from perflib.config import Settings
from perflib.store import Store, schema
from perflib.store.engine import dispose_engines
from perflib.tracking import heartbeat, tracker
from tools.pgserver import PostgresServer, find_bindir

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO / "tests" / "fixtures" / "data"  # vendored from ../shared/data: tools/vendor_fixtures.py
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_program(message: str) -> None:
    """A program a test needs is not installed: skip here, fail under CI=true (CI installs it)."""
    if IN_CI:
        pytest.fail(message + " — CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server():
    bindir = find_bindir()
    if bindir is None:
        missing_program("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or "
                        "pg_config")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'perflib.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(spool_dir=tmp_path / "spool", sample_interval=0.05)


@pytest.fixture
def store(db_url, settings) -> Store:
    return Store(db_url, settings)


@pytest.fixture(autouse=True)
def _fresh_tracker_binding():
    """Each test names its own database; none falls back to the user's default file."""
    yield
    tracker._bindings.clear()
    heartbeat.stop_all()  # each test's database gets its own heartbeat thread: end it with it
    dispose_engines()  # each test's database has its own pool: its idle connections end with it


@pytest.fixture
def real_data() -> Path:
    """The real measured jobs (tests/fixtures/data, vendored so that CI always runs them)."""
    return REAL_DATA


@pytest.fixture(scope="module")
def sd15():
    """The recorded ComfyUI server with SD 1.5 prompts (tests/fixtures/data/comfyui/sd15)."""
    from tests.comfyui_server import RECORDINGS, Recording
    return Recording.load(RECORDINGS / "sd15")


@pytest.fixture
def sqlite_store(sqlite_url, settings) -> Store:
    return Store(sqlite_url, settings)


def row_counts(store: Store) -> dict[str, int]:
    """Rows in every perflib table: what a read must leave unchanged."""
    return {name: store.count(table) for name, table in schema.metadata.tables.items()}
