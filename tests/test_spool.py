"""An unreachable database loses nothing: records spool and flush-spool lands every one."""
from __future__ import annotations

import json
import logging

import pytest

from perflib import track_generation_job
from perflib.cli import main
from perflib.config import Settings
from perflib.store import Spool, Store, flush_all

SECRET = "s3cr3t-Pa55word"


@pytest.fixture
def unreachable_url() -> str:
    # Nothing listens on port 9 of loopback: connections are refused at once.
    return f"postgresql+psycopg://perflib:{SECRET}@127.0.0.1:9/perflib?connect_timeout=2"


def test_unreachable_database_spools_then_flush_spool_lands_all(
        unreachable_url, db_url, settings, caplog, capsys, monkeypatch):
    down = Store(unreachable_url, settings)
    with caplog.at_level(logging.DEBUG, logger="perflib"):
        for n in range(300):
            with track_generation_job(f"spooled-{n}", "image", {"steps": 20}, db=down) as job:
                job.mark_phase("denoise")
        flush_all()
    spool = Spool(settings.spool_dir)
    assert spool.count_pending() == 300
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the outage is logged once, not per job"
    assert SECRET not in caplog.text and "***" in caplog.text

    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(settings.spool_dir))
    assert main(["--database-url", db_url, "flush-spool"]) == 0
    assert "replayed 300" in capsys.readouterr().out
    up = Store(db_url, settings)
    assert up.count() == 300
    assert len(up.phases_frame()) == 300
    assert spool.count_pending() == 0
    assert main(["--database-url", db_url, "flush-spool"]) == 0  # empty spool is fine


def test_spool_replays_on_next_successful_write(db_url, tmp_path):
    settings = Settings(spool_dir=tmp_path / "spool")
    Spool(settings.spool_dir).append([{"job_id": "old-1", "pipeline_type": "image",
                                       "status": "success", "total_seconds": 1.5,
                                       "started_at": "2026-11-01T10:00:00"}])
    store = Store(db_url, settings)
    with track_generation_job("new-1", "image", {}, db=store):
        pass
    flush_all()
    assert set(store.jobs_frame().job_id) == {"old-1", "new-1"}
    assert not Spool(settings.spool_dir).has_pending()


def test_replay_is_idempotent_and_keeps_corrupt_lines(sqlite_url, tmp_path):
    spool = Spool(tmp_path / "spool")
    record = {"job_id": "dup", "pipeline_type": "video", "status": "success",
              "total_seconds": 2.0, "started_at": "2026-11-01T10:00:00+00:00"}
    spool.append([record, record])
    with open(spool.path, "a") as handle:
        handle.write('{"job_id": "cut-sh')  # a crash mid-write
    store = Store(sqlite_url, Settings(spool_dir=tmp_path / "spool"))
    assert spool.replay(store.write_jobs) == 2
    assert store.count() == 1
    assert list((tmp_path / "spool").glob("*.corrupt"))


def test_no_password_in_repr_or_errors(unreachable_url, settings, caplog):
    store = Store(unreachable_url, settings)
    assert SECRET not in repr(store)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(Exception) as caught:
            store.count()
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text


def test_replay_leaves_spools_of_live_processes_alone(sqlite_url, tmp_path):
    from perflib.store.spool import HOST

    record = {"job_id": "x", "pipeline_type": "image", "status": "success",
              "total_seconds": 1.0, "started_at": "2026-11-01T10:00:00Z"}
    folder = tmp_path / "spool"
    folder.mkdir()
    live = folder / f"spool-{HOST}-1.jsonl"  # pid 1 is always alive: it may still be appending
    live.write_text(json.dumps(record) + "\n")
    dead = folder / f"spool-{HOST}-999999.jsonl"
    dead.write_text(json.dumps({**record, "job_id": "y"}) + "\n")
    store = Store(sqlite_url, Settings(spool_dir=folder))
    spool = Spool(folder)
    assert spool.replay(store.write_jobs) == 1 and set(store.jobs_frame().job_id) == {"y"}
    assert live.exists()
    assert spool.replay(store.write_jobs, include_live=True) == 1 and store.count() == 2
