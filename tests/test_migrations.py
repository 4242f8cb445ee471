"""Schema revisions by Alembic: databases made by perflib c9cd00a (vendored in tests/fixtures)
upgrade with ``perflib init-db`` to exactly a fresh database's schema without losing a row;
readers never run DDL; a database behind head gets one line naming ``perflib init-db``; a new
database gets its schema from its first writer."""
from __future__ import annotations

import multiprocessing
import re
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from perflib import track_generation_job
from perflib.cli import main
from perflib.config import Settings
from perflib.store import Store, engine as engine_module, flush_all, schema, versioning
from perflib.store.errors import DATABASE_DOWN
from perflib.store.versioning import SchemaBehind
from perflib.threads import PerProcess

FIXTURES = Path(__file__).parent / "fixtures"
DAY_PARTITION = re.compile(r"_p\d{8}$")
JOB = {"job_id": "j1", "pipeline_type": "image", "status": "success", "total_seconds": 1.0,
       "started_at": "2026-11-01T00:00:00Z"}


# -- helpers ----------------------------------------------------------------------------------
def c9cd00a_database(kind: str, url: str, tmp_path: Path) -> str:
    """A copy of the database c9cd00a made (`kind`: "empty" from init-db, "history" from
    simulate --if-empty and maintain) at `url`'s place; returns the URL."""
    if url.startswith("sqlite"):
        target = tmp_path / f"c9cd00a-{kind}.db"
        shutil.copy(FIXTURES / f"c9cd00a-{kind}.db", target)
        return f"sqlite:///{target}"
    dump = (FIXTURES / f"c9cd00a-{kind}.sql").read_text()
    with psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True) as conn:
        conn.execute(dump)  # a plain pg_dump: statements only, no psql commands
    return url


def layout(store: Store) -> dict:
    """Tables (day partitions aside) with their columns (type, nullability, default), indexes,
    unique constraints, primary and foreign keys, as SQLAlchemy reflects them."""
    engine = engine_module.engine_for(store.url, store.config.db_schema)
    with engine.connect() as conn:
        name = conn.get_execution_options().get("schema_translate_map", {}).get(None)
        inspector = sa.inspect(conn)
        return {table: {
            "columns": [(c["name"], repr(c["type"]), c["nullable"], c.get("default"))
                        for c in inspector.get_columns(table, schema=name)],
            "indexes": sorted((tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table, schema=name)),
            "unique": sorted(tuple(u["column_names"])
                             for u in inspector.get_unique_constraints(table, schema=name)),
            "primary": inspector.get_pk_constraint(table, schema=name)["constrained_columns"],
            "foreign": sorted((tuple(f["constrained_columns"]), f["referred_table"])
                              for f in inspector.get_foreign_keys(table, schema=name)),
        } for table in inspector.get_table_names(schema=name) if not DAY_PARTITION.search(table)}


def row_counts(store: Store, tables) -> dict[str, int]:
    engine = engine_module.engine_for(store.url, store.config.db_schema)
    with engine.connect() as conn:
        name = conn.get_execution_options().get("schema_translate_map", {}).get(None)
        return {table: conn.execute(sa.select(sa.func.count()).select_from(
            sa.table(table, schema=name))).scalar_one() for table in tables}


def at_revision(url: str, revision: str, settings: Settings) -> Store:
    """A new database brought to `revision` only (as an older perflib would leave it)."""
    store = Store(url, settings)
    with engine_module.engine_for(store.url, settings.db_schema).begin() as conn:
        versioning._lock(conn)
        command.upgrade(versioning._config(conn), revision)
    return store


def another_database(url: str, request, tmp_path: Path) -> str:
    """A second new database beside `url`'s, on the same server."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("pg_server").create_database(f"fresh_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def cold_engines(monkeypatch):
    """Engines as a new process finds them: none made yet, nothing known about any schema."""
    engines = PerProcess()
    monkeypatch.setattr(engine_module, "_engines", engines)
    yield
    for engine in engines.clear():
        engine.dispose()


@pytest.fixture
def ddl_statements():
    """Every CREATE, ALTER or DROP any engine sends while the test runs."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if re.match(r"\s*(CREATE|ALTER|DROP)\b", statement, re.IGNORECASE):
            seen.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", record)


# -- c9cd00a's databases ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["empty", "history"])
def test_a_c9cd00a_database_upgrades_to_exactly_a_fresh_schema(kind, db_url, request,
                                                               tmp_path, settings, capsys):
    old = Store(c9cd00a_database(kind, db_url, tmp_path), settings)
    old_tables = set(layout(old)) - {"perflib_schema_info"}
    before = row_counts(old, old_tables)
    fresh = Store(another_database(db_url, request, tmp_path), settings)
    assert fresh.init_db().before == ""

    assert main(["--database-url", str(old.db), "init-db"]) == 0
    assert "from revision none (made by perflib before migrations) to revision " \
           f"{versioning.head()} (head)" in capsys.readouterr().out
    assert layout(old) == layout(fresh)
    assert old.revision() == fresh.revision() == versioning.head()
    assert row_counts(old, old_tables) == before
    assert old.init_db().before == versioning.head()  # a second run changes nothing
    if kind == "history":
        assert before["generation_performance"] > 100 and old.count() == before[
            "generation_performance"]


def test_the_head_schema_is_the_one_the_code_declares(sqlite_url):
    """schema.py and the revisions agree: a change to one needs the other."""
    store = Store(sqlite_url)
    store.init_db()
    with engine_module.engine_for(store.url, store.config.db_schema).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


def test_an_index_missing_on_an_old_table_is_created(tmp_path, settings):
    url = c9cd00a_database("history", "sqlite", tmp_path)
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_generation_performance_status_started"))
    Store(url, settings).init_db()
    with sa.create_engine(url).connect() as conn:
        names = {i["name"] for i in sa.inspect(conn).get_indexes("generation_performance")}
    assert "ix_generation_performance_status_started" in names


# -- behind head: one line naming perflib init-db ---------------------------------------------
def test_a_database_behind_head_is_refused_with_one_line(db_url, settings, capsys):
    store = at_revision(db_url, "0001", settings)
    message = (rf"^database \S+ is at revision 0001, perflib needs {versioning.head()}: "
               r"run perflib init-db$")
    with pytest.raises(SchemaBehind, match=message):
        store.write_jobs([JOB])
    with pytest.raises(SchemaBehind, match=message):
        Store(db_url, settings).jobs_frame()
    assert isinstance(SchemaBehind("x"), DATABASE_DOWN)  # the service answers 503
    assert main(["--database-url", db_url, "report", "--weeks-back", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.endswith("run perflib init-db")
    assert store.revision() == "0001"  # neither the writer nor the reader upgraded it

    assert main(["--database-url", db_url, "init-db"]) == 0
    assert (f"from revision 0001 to revision {versioning.head()} (head)"
            in capsys.readouterr().out)
    assert store.write_jobs([JOB]) == 1


def test_a_c9cd00a_database_is_not_upgraded_by_a_writer(tmp_path, settings):
    url = c9cd00a_database("history", "sqlite", tmp_path)
    with pytest.raises(SchemaBehind, match="at revision none .* run perflib init-db$"):
        Store(url, settings).write_jobs([JOB])
    assert Store(url, settings).revision() is None


def test_a_database_newer_than_perflib_asks_for_a_newer_perflib(sqlite_url, settings,
                                                                 cold_engines):
    store = Store(sqlite_url, settings)
    store.init_db()
    with sa.create_engine(sqlite_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine_module._engines.clear()  # a writer in a process of its own
    with pytest.raises(SchemaBehind, match="revision 9999, newer than this perflib's"):
        Store(sqlite_url, settings).write_jobs([JOB])


# -- readers never run DDL --------------------------------------------------------------------
def test_reading_runs_no_ddl(db_url, settings, tmp_path, cold_engines, ddl_statements):
    Store(db_url, settings).write_jobs([JOB])
    engine_module._engines.clear()  # a reader in a process of its own
    ddl_statements.clear()
    reader = Store(db_url, settings)
    assert list(reader.jobs_frame().job_id) == ["j1"] and reader.count() == 1
    assert main(["--database-url", db_url, "report", "--output-dir", str(tmp_path)]) == 0
    assert ddl_statements == []


def test_reading_a_new_database_reads_it_empty_and_makes_nothing(db_url, settings, tmp_path,
                                                                 ddl_statements):
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{tmp_path / 'data' / 'perflib.db'}"  # neither file nor folder
    reader = Store(db_url, settings)
    assert reader.count() == 0 and reader.jobs_frame().empty and reader.live_jobs().empty
    assert reader.revision() is None and ddl_statements == []
    if db_url.startswith("sqlite"):
        assert not Path(sa.make_url(db_url).database).parent.exists()
    else:
        with sa.create_engine(db_url).connect() as conn:
            assert settings.db_schema not in sa.inspect(conn).get_schema_names()
    with pytest.raises(sa.exc.OperationalError, match="readonly"):  # a write never vanishes
        with reader.engine.begin() as conn:
            conn.execute(sa.insert(schema.generation_performance).values(
                job_id="j1", pipeline_type="image", status="success"))


# -- the first writer creates a new database's schema -----------------------------------------
def test_an_empty_sqlite_file_gets_its_schema_from_the_first_tracked_job(tmp_path, settings):
    path = tmp_path / "data" / "perflib.db"
    path.parent.mkdir()
    path.touch()  # an empty file, as `touch` or a failed earlier start leaves it
    store = Store(f"sqlite:///{path}", settings)
    with track_generation_job("first", "image", {"steps": 20}, db=store):
        pass
    flush_all()
    assert store.revision() == versioning.head()
    assert list(Store(f"sqlite:///{path}", settings).jobs_frame().job_id) == ["first"]


def _write_one(url: str, number: int, settings: Settings) -> None:
    Store(url, settings).write_jobs([dict(JOB, job_id=f"w{number}")])


def test_concurrent_first_writers_do_not_race(db_url, settings):
    Store(db_url, settings).count()  # a reader first: it makes nothing
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_one, args=(db_url, n, settings))
               for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0] * 4
    assert Store(db_url, settings).count() == 4
    assert Store(db_url, settings).revision() == versioning.head()
