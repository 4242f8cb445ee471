"""Durability of writes (issue #10, faults 3 and 4, and the dead letter), through the service and
the in-process tracker: a database that was read-only drains the spool by itself once writable,
a deleted SQLite file never swallows an acknowledged record, and a record the database refuses
is kept aside once instead of blocking its batch forever."""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import sqlalchemy as sa

from perflib import track_generation_job
from perflib.cli import main
from perflib.config import Settings
from perflib.serve import create_app
from perflib.store import Spool, Store, flush_all
from perflib.store.deadletter import DEAD_LETTER_FILE, refuses_record
from perflib.store.engine import engine_for
from perflib.store.spool import HOST, append_lines
from tests.test_serve import API, job

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

RETRY_SECONDS = 0.2
TOO_LONG = "m" * 300  # model_name is a 200-character column
NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def folder(tmp_path) -> Path:
    """tmp_path, or as root a folder that `nobody` may enter too (pytest's is its user's alone)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="perflib-durability-"))
    os.chown(path, NOBODY, -1)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def fast_settings(folder) -> Settings:
    return Settings(spool_dir=folder / "spool", sample_interval=0.05,
                    spool_retry_seconds=RETRY_SECONDS)


@pytest.fixture
def sqlite_file(folder, fast_settings) -> Path:
    """A SQLite database with the schema, no connection to it left open in this process."""
    path = folder / "db" / "perflib.db"
    store = Store(f"sqlite:///{path}", fast_settings)
    store.init_db()
    engine_for(store.url, fast_settings.db_schema).dispose()
    return path


@contextmanager
def read_only(path: Path):
    """`path` cannot be written by this process until the block ends: its write bits are off,
    and as root, whom permission bits do not bind, the process acts as `nobody` meanwhile (the
    folder it shares with the spool becomes nobody's, as a user's own folder would be)."""
    mode = path.stat().st_mode
    path.chmod(0o444)
    try:
        with _as_nobody(path.parent.parent) if os.geteuid() == 0 else nullcontext():
            assert not os.access(path, os.W_OK)
            yield
    finally:
        path.chmod(mode)


@contextmanager
def _as_nobody(folder: Path):
    """The whole process (every thread) is `nobody` in `folder`, made nobody's, until the
    block ends; its saved user stays root, so root's rights come back after."""
    for inside in [folder, *folder.rglob("*")]:
        os.chown(inside, NOBODY, -1)
    os.setresuid(NOBODY, NOBODY, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def stored_ids(path: Path) -> set[str]:
    """Job ids in the SQLite file at `path`, read with a connection of its own."""
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT job_id FROM generation_performance")}


def spooled(settings: Settings) -> int:
    return Spool(settings.spool_dir).count_waiting()


# -- fault 3: a database that was read-only -----------------------------------------------------
def test_service_started_on_read_only_sqlite_drains_by_itself_once_writable(
        sqlite_file, fast_settings):
    url = f"sqlite:///{sqlite_file}"
    with TestClient(base_url="http://127.0.0.1", app=create_app(url, fast_settings)) as client:
        with read_only(sqlite_file):
            answer = client.post(f"{API}/record-metrics", json=[job("ro-1"), job("ro-2")])
            assert answer.status_code == 202 and answer.json()["spooled"] == 2
            health = client.get("/healthz").json()  # a read while read-only: its connection
            assert health["status"] == "degraded" and health["spooled"] == 2  # is pooled

        # Writable again: with no new write, the spool drains by itself.
        assert wait_until(lambda: spooled(fast_settings) == 0), "the spool never drained"
        assert stored_ids(sqlite_file) == {"ro-1", "ro-2"}
        answer = client.post(f"{API}/record-metrics", json=job("after"))
        assert answer.status_code == 200 and answer.json()["stored"] == 1
        assert client.get("/healthz").json() | {"version": None} == {
            "status": "ok", "database": "ok", "spooled": 0, "version": None}
    assert stored_ids(sqlite_file) == {"ro-1", "ro-2", "after"}


def test_a_spooled_final_record_replaces_the_live_report_it_follows(sqlite_file, fast_settings):
    url = f"sqlite:///{sqlite_file}"
    with TestClient(base_url="http://127.0.0.1", app=create_app(url, fast_settings)) as client:
        assert client.post(f"{API}/record-metrics", json=job("j", "running")).status_code == 200
        with read_only(sqlite_file):
            engine_for(sa.make_url(url), fast_settings.db_schema).dispose()  # open files anew
            assert client.post(f"{API}/record-metrics", json=job("j")).status_code == 202
        assert wait_until(lambda: spooled(fast_settings) == 0), "the spool never drained"
    assert set(Store(url, fast_settings).jobs_frame().status) == {"success"}


def test_tracker_started_on_read_only_sqlite_drains_by_itself_once_writable(
        sqlite_file, fast_settings):
    store = Store(f"sqlite:///{sqlite_file}", fast_settings)
    with read_only(sqlite_file):
        for n in range(5):
            with track_generation_job(f"ro-{n}", "image", {"steps": 20}, db=store):
                pass
        flush_all()
        assert spooled(fast_settings) == 5
        assert store.count() == 0  # reads still work, and pool their read-only connection

    assert wait_until(lambda: spooled(fast_settings) == 0), "the spool never drained"
    with track_generation_job("after", "image", {"steps": 20}, db=store):
        pass
    flush_all()
    assert stored_ids(sqlite_file) == {f"ro-{n}" for n in range(5)} | {"after"}


def test_flush_spool_replays_the_spool_of_a_running_process(sqlite_url, tmp_path, monkeypatch,
                                                            capsys):
    folder = tmp_path / "spool"
    record = {"job_id": "from-live", "pipeline_type": "image", "status": "success",
              "total_seconds": 1.0, "started_at": "2026-11-01T10:00:00Z"}
    live = subprocess.Popen(["sleep", "60"])  # stands for a service that spooled and runs on
    try:
        Spool(folder).append([record])
        Spool(folder).path.rename(folder / f"spool-{HOST}-{live.pid}.jsonl")
        monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(folder))
        assert main(["--database-url", sqlite_url, "flush-spool"]) == 0
    finally:
        live.kill()
        live.wait()
    assert "replayed 1" in capsys.readouterr().out
    assert set(Store(sqlite_url).jobs_frame().job_id) == {"from-live"}
    assert not list(folder.glob("spool-*"))


def test_flush_spool_all_adds_the_spools_of_other_hosts(sqlite_url, tmp_path, monkeypatch,
                                                        capsys):
    folder = tmp_path / "spool"
    folder.mkdir()
    record = {"job_id": "from-elsewhere", "pipeline_type": "image", "status": "success",
              "total_seconds": 1.0, "started_at": "2026-11-01T10:00:00Z"}
    (folder / "spool-otherhost-123.jsonl").write_text(json.dumps(record) + "\n")
    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(folder))
    assert main(["--database-url", sqlite_url, "flush-spool"]) == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert main(["--database-url", sqlite_url, "flush-spool", "--all"]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert set(Store(sqlite_url).jobs_frame().job_id) == {"from-elsewhere"}


def test_append_to_a_file_claimed_meanwhile_goes_to_a_new_file(tmp_path):
    path = tmp_path / f"spool-{HOST}-1.jsonl"
    path.write_text("old\n")
    with open(path) as replayer:
        fcntl.flock(replayer, fcntl.LOCK_EX)  # a replayer reading the file it claimed
        appender = threading.Thread(target=append_lines, args=(path, ["new\n"]))
        appender.start()
        time.sleep(0.3)  # the append has opened the file and waits for the lock
        claimed = path.rename(path.with_name(path.name + ".replaying-1"))
    appender.join(10)
    assert claimed.read_text() == "old\n", "the line followed a claimed file that gets deleted"
    assert path.read_text() == "new\n"


# -- fault 4: a deleted SQLite file -------------------------------------------------------------
@pytest.mark.parametrize("also_wal", [False, True], ids=["db-file", "db-wal-shm"])
def test_service_never_acknowledges_a_record_written_into_a_deleted_file(
        tmp_path, fast_settings, also_wal):
    path = tmp_path / "perflib.db"
    client = TestClient(base_url="http://127.0.0.1", app=create_app(f"sqlite:///{path}", fast_settings))
    assert client.post(f"{API}/record-metrics", json=job("before")).status_code == 200
    for file in tmp_path.glob("perflib.db*"):
        if also_wal or file.name == "perflib.db":
            file.unlink()

    answer = client.post(f"{API}/record-metrics", json=[job("after-1"), job("after-2")])
    assert answer.status_code == 200 and answer.json()["stored"] == 2
    assert stored_ids(path) == {"after-1", "after-2"}
    assert client.get("/healthz").json()["database"] == "ok"


def test_tracker_never_loses_a_record_written_after_the_file_was_deleted(tmp_path,
                                                                         fast_settings):
    path = tmp_path / "perflib.db"
    store = Store(f"sqlite:///{path}", fast_settings)
    with track_generation_job("before", "image", {}, db=store):
        pass
    flush_all()
    path.unlink()
    for n in range(3):
        with track_generation_job(f"after-{n}", "image", {}, db=store):
            pass
    flush_all()
    assert stored_ids(path) == {"after-0", "after-1", "after-2"}
    assert spooled(fast_settings) == 0


def test_a_connection_left_on_a_deleted_file_never_takes_the_new_files_rows(tmp_path,
                                                                           fast_settings):
    """Another thread (the heartbeat) is inside a transaction on the file when it is deleted:
    SQLite finds WAL files by path, so that connection must be closed before the new file opens."""
    path = tmp_path / "perflib.db"
    store = Store(f"sqlite:///{path}", fast_settings)
    assert store.write_jobs([job("before")]) == 1
    in_use = engine_for(store.url, fast_settings.db_schema).connect()
    in_use.execute(sa.text("DELETE FROM generation_performance"))  # a write, not committed yet
    path.unlink()

    def commit_then_return():
        in_use.commit()
        in_use.close()
    returned = threading.Timer(0.5, commit_then_return)
    returned.start()
    assert store.write_jobs([job("after-1"), job("after-2")]) == 2
    returned.join()
    assert store.write_jobs([job("after-3")]) == 1
    assert stored_ids(path) == {"after-1", "after-2", "after-3"}


def test_a_file_deleted_during_a_write_gets_the_rows_written_again(tmp_path, fast_settings):
    path = tmp_path / "perflib.db"
    store = Store(f"sqlite:///{path}", fast_settings)
    store.init_db()
    deleted = []

    @sa.event.listens_for(store.engine, "commit")
    def _delete_once(_conn):
        if not deleted:
            deleted.append(path)
            path.unlink()  # another process removes the file while this write commits

    records = [job(f"racing-{n}") for n in range(3)]
    assert store.write_jobs(records) == 3
    assert deleted and stored_ids(path) == {"racing-0", "racing-1", "racing-2"}


# -- the dead letter ----------------------------------------------------------------------------
def dead_letters(settings: Settings) -> list[dict]:
    path = settings.spool_dir / DEAD_LETTER_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.postgres
def test_tracker_dead_letters_a_refused_record_once_and_the_rest_land(pg_url, fast_settings,
                                                                      caplog):
    store = Store(pg_url, fast_settings)
    store.init_db()
    with store.engine.begin() as conn:  # a database made by an older system: narrower columns
        conn.execute(sa.text(f"ALTER TABLE {fast_settings.db_schema}.generation_performance "
                             "ALTER COLUMN model_name TYPE varchar(10)"))
    with caplog.at_level("WARNING", logger="perflib"):
        for n in range(6):
            params = {"model_name": "stable-diffusion-xl" if n == 3 else "sd15", "steps": 20}
            with track_generation_job(f"job-{n}", "image", params, db=store):
                pass
        flush_all()
    assert set(store.jobs_frame().job_id) == {f"job-{n}" for n in range(6)} - {"job-3"}
    [letter] = dead_letters(fast_settings)
    assert letter["record"]["job_id"] == "job-3" and "too long" in letter["reason"]
    assert "job-3" in caplog.text and DEAD_LETTER_FILE in caplog.text
    assert spooled(fast_settings) == 0, "a refused record is not spooled for another try"

    with track_generation_job("job-6", "image", {"steps": 20}, db=store):
        pass
    flush_all()
    assert store.count() == 6 and len(dead_letters(fast_settings)) == 1


@pytest.mark.postgres
def test_service_dead_letters_a_refused_spooled_record_counts_it_and_never_replays_it(
        pg_url, fast_settings):
    good = {"job_id": "spooled-good", "pipeline_type": "image", "status": "success",
            "total_seconds": 1.0, "started_at": "2026-11-01T10:00:00Z"}
    bad = {**good, "job_id": "spooled-bad", "model_name": TOO_LONG}
    folder = fast_settings.spool_dir
    folder.mkdir(parents=True)
    # Left by a tracker process that has ended (it did not validate text lengths).
    (folder / f"spool-{HOST}-999999.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (good, bad, {**good, "job_id": "spooled-2"})))

    with TestClient(base_url="http://127.0.0.1", app=create_app(pg_url, fast_settings)) as client:
        assert wait_until(lambda: spooled(fast_settings) == 0), "the spool never drained"
        assert set(Store(pg_url, fast_settings).jobs_frame().job_id) == {"spooled-good",
                                                                         "spooled-2"}
        assert client.post(f"{API}/record-metrics", json=job("posted")).status_code == 200
        metrics = client.get("/metrics").text
        assert "perflib_dead_letter_records_total 1.0" in metrics
        assert client.get("/healthz").json()["status"] == "ok"
    [letter] = dead_letters(fast_settings)
    assert letter["record"]["job_id"] == "spooled-bad"


@pytest.mark.postgres
def test_flush_spool_dead_letters_what_the_database_refuses(pg_url, tmp_path, monkeypatch,
                                                            capsys):
    folder = tmp_path / "spool"
    good = {"job_id": "ok", "pipeline_type": "image", "status": "success",
            "total_seconds": 1.0, "started_at": "2026-11-01T10:00:00Z"}
    Spool(folder).append([good, {**good, "job_id": "x" * 250}])
    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(folder))
    assert main(["--database-url", pg_url, "flush-spool"]) == 0
    out, err = capsys.readouterr()
    assert "replayed 2" in out and "1 of them refused" in err
    assert set(Store(pg_url).jobs_frame().job_id) == {"ok"}
    assert main(["--database-url", pg_url, "flush-spool"]) == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert len((folder / DEAD_LETTER_FILE).read_text().splitlines()) == 1


def test_unavailable_is_retried_and_refused_is_not():
    down = sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    read_only_db = sqlite3.OperationalError("attempt to write a readonly database")
    too_long = sa.exc.DataError("COPY", {}, Exception("value too long"))
    assert not refuses_record(down) and not refuses_record(read_only_db)
    assert refuses_record(too_long) and refuses_record(sqlite3.IntegrityError("NOT NULL"))
