"""Several processes tracking jobs into one database: every job lands, none is locked out."""
from __future__ import annotations

import subprocess
import sys

import pytest

from perflib.config import Settings
from perflib.store import Spool, Store

WORKER = """
import sys
from perflib import configure, track_generation_job
from perflib.config import Settings
configure(sys.argv[1], Settings(spool_dir=sys.argv[3], sample_interval=0.05))
for n in range(int(sys.argv[4])):
    with track_generation_job(f"p{sys.argv[2]}-{n}", "image", {"steps": 10}) as job:
        job.mark_phase("denoise")
"""  # exits right after the last job: the exit flush must land what is still buffered


@pytest.mark.parametrize("processes,jobs", [(4, 400)])
def test_processes_writing_one_database_all_land(db_url, tmp_path, processes, jobs):
    spool_dir = tmp_path / "spool"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, str(p), str(spool_dir),
                                 str(jobs)], stderr=subprocess.PIPE, text=True)
               for p in range(processes)]
    errors = [w.communicate(timeout=240)[1] for w in workers]
    assert all(w.returncode == 0 for w in workers), errors
    assert not any("locked" in e for e in errors), errors
    store = Store(db_url, Settings(spool_dir=spool_dir))
    assert Spool(spool_dir).count_pending() == 0
    assert store.count() == processes * jobs


def test_a_forked_child_tracks_into_the_parents_database(sqlite_url, tmp_path):
    """Bindings made before a fork (their threads stay in the parent) are remade in the child."""
    import multiprocessing

    from perflib import track_generation_job
    from perflib.store import flush_all

    store = Store(sqlite_url, Settings(spool_dir=tmp_path / "spool"))
    with track_generation_job("parent", "image", {}, db=store):
        pass
    flush_all()

    def child():
        with track_generation_job("child", "image", {}, db=store):
            pass

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert set(store.jobs_frame().job_id) == {"parent", "child"}


def test_a_fork_during_a_write_transaction_leaves_the_child_able_to_write(sqlite_url, tmp_path):
    """SQLite's lock state lives in process memory: a child forked while a parent thread held a
    write transaction would wait out the busy timeout on every write. The fork waits instead."""
    import multiprocessing
    import threading
    from datetime import datetime, timedelta, timezone

    import sqlalchemy as sa

    from perflib.record import job_record
    from perflib.store.engine import engine_for

    store = Store(sqlite_url, Settings(spool_dir=tmp_path / "spool"))
    engine = store.engine
    in_transaction, release = threading.Event(), threading.Event()

    def hold_a_write_transaction():
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
            in_transaction.set()
            release.wait(10)

    holder = threading.Thread(target=hold_a_write_transaction)
    holder.start()
    assert in_transaction.wait(10)
    threading.Timer(0.5, release.set).start()  # the fork below waits for this commit

    def child():
        assert engine_for(store.url, "") is not engine  # the child opens its own
        now = datetime.now(timezone.utc)
        record = job_record({"job_id": "forked", "pipeline_type": "image",
                             "status": "success",
                             "started_at": now - timedelta(seconds=1), "finished_at": now})
        assert store.write_jobs([record]) == 1

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(20)
    holder.join()
    assert process.exitcode == 0, "the child could not write within 20 s"
    assert set(store.jobs_frame().job_id) == {"forked"}
