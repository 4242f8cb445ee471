"""Schema creation and batched writes behave the same on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from perflib.cli import main
from perflib.store import Store, schema, versioning
from perflib.store.deletion import delete_jobs
from perflib.prediction.work_terms import STORED_TERMS, stored_terms
from tests.old_schema import make_pre_alembic


def test_schema_creation_twice_is_harmless(store, capsys):
    assert store.init_db().after == versioning.head()
    store.write_jobs([{"job_id": "keep", "pipeline_type": "image", "status": "success",
                       "total_seconds": 1.0, "started_at": "2026-11-01T00:00:00Z"}])
    assert store.init_db().before == versioning.head()
    assert main(["--database-url", store.db, "init-db"]) == 0
    assert f"at revision {versioning.head()} (head): nothing" in capsys.readouterr().out
    assert store.count() == 1 and store.revision() == versioning.head()
    with store.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names(
            schema=conn.get_execution_options().get("schema_translate_map", {}).get(None)))
    assert {"generation_performance", "generation_phases", "resource_samples",
            "performance_prediction_models", "performance_trends",
            "performance_alerts"} <= names


def test_postgres_tables_live_in_the_configured_schema(pg_url, settings):
    store = Store(pg_url, settings.with_overrides(db_schema="render_farm"))
    store.init_db()
    with store.engine.connect() as conn:
        assert "generation_performance" in sa.inspect(conn).get_table_names(schema="render_farm")


def test_write_jobs_is_idempotent_and_keeps_phases_and_samples(store):
    record = {"job_id": "j1", "pipeline_type": "video", "status": "success",
              "total_seconds": 12.5, "started_at": "2026-11-01T10:00:00+02:00",
              "extra_params": {"prompt": "forest", "seed": 3},
              "phases": [{"seq": 0, "name": "denoise", "seconds": 10.0}],
              "samples": [{"seq": 0, "sampled_at": "2026-11-01T08:00:01Z", "cpu_pct": 50.0}]}
    assert store.write_jobs([record, dict(record, job_id="j2")]) == 2
    assert store.write_jobs([record]) == 0
    frame = store.jobs_frame()
    assert list(frame.job_id) == ["j1", "j2"]
    assert frame.started_at.iloc[0].isoformat() == "2026-11-01T08:00:00+00:00"
    assert frame.extra_params.iloc[0] == {"prompt": "forest", "seed": 3}
    assert len(store.phases_frame()) == 2
    assert store.count(schema.resource_samples) == 2


def test_deleting_jobs_takes_their_phases_and_samples(store):
    """Partitioned tables have no foreign key to cascade: the children go explicitly."""
    record = {"job_id": "gone", "pipeline_type": "image", "status": "running",
              "started_at": "2026-11-01T10:00:00Z",
              "phases": [{"seq": 0, "name": "denoise", "seconds": 1.0}],
              "samples": [{"seq": 0, "sampled_at": "2026-11-01T10:00:01Z", "cpu_pct": 5.0}]}
    store.write_jobs([record, dict(record, job_id="kept", status="success")])
    jobs = schema.generation_performance
    with store.engine.begin() as conn:
        assert delete_jobs(conn, sa.and_(jobs.c.job_id.in_(["gone", "kept"]),
                                         jobs.c.status == "running")) == 1
    assert list(store.jobs_frame().job_id) == ["kept"]
    assert set(store.phases_frame().job_id) == {"kept"}
    assert store.count(schema.resource_samples) == 1


def test_upgrade_adds_missing_columns(sqlite_url, settings):
    """A database made before Alembic by a perflib whose table lacked a column."""
    store = Store(sqlite_url, settings)
    store.init_db()
    with store.engine.begin() as conn:
        make_pre_alembic(conn)
        conn.exec_driver_sql("ALTER TABLE generation_performance DROP COLUMN user_rating")
    store.init_db()
    with store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("generation_performance")}
    assert "user_rating" in columns


def test_jobs_frame_filters_by_time_and_pipeline(store):
    store.write_jobs([
        {"job_id": f"j{day}", "pipeline_type": "image" if day % 2 else "video",
         "status": "success", "total_seconds": 1.0, "started_at": f"2026-11-{day:02d}T12:00:00Z"}
        for day in range(1, 11)])
    frame = store.jobs_frame(since="2026-11-03", until="2026-11-07", pipeline_type="video")
    assert list(frame.job_id) == ["j4", "j6"]


def test_cost_terms_of_a_batch_match_each_record_computed_alone(store):
    """The write computes cost terms once per job shape: a batch mixing repeated shapes, a job
    with passes, one without a width and one with fewer keys stores what each alone would."""
    base = {"pipeline_type": "image", "status": "success", "width": 1024, "height": 1024,
            "steps": 30, "guidance_scale": 7.0, "model_name": "sdxl",
            "started_at": "2026-11-01T10:00:00+02:00"}
    records = [dict(base, job_id=f"same-{n}") for n in range(3)]
    records += [dict(base, job_id="other", steps=20, batch_size=2,
                     started_at=datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc)),
                dict(base, job_id="passes", passes=[{"width": 512, "height": 512, "steps": 10},
                                                    {"width": 1024, "height": 1024,
                                                     "steps": 5}]),
                dict(base, job_id="no-width", width=None),
                {"job_id": "few-keys", "pipeline_type": "video", "status": "success",
                 "width": 768, "height": 768, "started_at": "2026-11-01T09:00:00Z"}]
    assert store.write_jobs(records) == len(records)
    stored = store.jobs_frame().set_index("job_id")
    for record in records:
        alone = stored_terms([record], store.config.model_profiles)[0]
        for name in STORED_TERMS:
            value = stored.loc[record["job_id"], name]
            assert (value != value if alone[name] is None else value == alone[name]), \
                (record["job_id"], name)
    assert stored.loc["few-keys", "started_at"].isoformat() == "2026-11-01T09:00:00+00:00"
    assert stored.loc["same-0", "started_at"].isoformat() == "2026-11-01T08:00:00+00:00"
    assert stored.loc["other", "started_at"].isoformat() == "2026-11-01T07:30:00+00:00"


def test_a_timestamp_outside_the_years_allowed_is_refused_before_the_database(store):
    """A UTC datetime the driver would take as it is, but outside 1970–2200, is refused with
    its reason and nothing of the batch is written (the writer dead-letters it alone)."""
    good = {"job_id": "ok", "pipeline_type": "image", "status": "success",
            "started_at": datetime(2026, 11, 1, tzinfo=timezone.utc)}
    with pytest.raises(ValueError, match="outside 1970"):
        store.write_jobs([good, dict(good, job_id="old",
                                     finished_at=datetime(1900, 1, 1, tzinfo=timezone.utc))])
    assert store.count() == 0
