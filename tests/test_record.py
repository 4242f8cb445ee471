"""The one job record: strict checks that every way in (service, importer, tracker, CLI) shares,
and work units defined once, stored at write time, summed over sampling passes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from perflib import record as job_record_module
from perflib.cli import main
from perflib.config import ModelProfile, Settings
from perflib.prediction.features import build_features
from perflib.record import RecordError, estimate_params, job_record
from perflib.serve import schemas
from perflib.serve.app import create_app
from perflib.store import Store
from perflib.store import flush_all
from perflib.store.importer import REQUIRED_COLUMNS, import_jobs
from perflib.store.schema import generation_performance
from perflib.tracking.tracker import track_generation_job
from tests.old_schema import make_pre_alembic

BASE = {"pipeline_type": "image", "resolution": "512x512", "steps": 20}
NOW = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)


def finished(job_id: str, **fields) -> dict:
    return {"job_id": job_id, "pipeline_type": "image", "status": "success",
            "resolution": "512x512", "steps": 20, "started_at": NOW.isoformat(),
            "total_seconds": 3.0, **fields}


@pytest.mark.parametrize("field, value", [
    ("steps", True), ("steps", False), ("batch_size", True), ("frame_count", "２"),
    ("steps", "２０"), ("resolution", "５１２x512"), ("resolution", "512x٥١٢"),
    ("guidance_scale", True), ("guidance_scale", "７.5"), ("steps", 20.5)])
def test_booleans_and_non_ascii_digits_are_refused_not_coerced(field, value):
    with pytest.raises(RecordError) as refused:
        estimate_params({**BASE, field: value})
    assert refused.value.field == field
    with pytest.raises(RecordError) as refused:
        job_record(finished("j", **{field: value}))
    assert refused.value.field == field


def test_plain_numbers_of_any_kind_are_taken():
    job = estimate_params({**BASE, "steps": np.int64(30), "frame_count": "4", "batch_size": 2.0,
                           "guidance_scale": np.float32(5.0)})
    assert (job["steps"], job["frame_count"], job["batch_size"]) == (30, 4, 2)
    assert job["guidance_scale"] == 5.0 and (job["width"], job["height"]) == (512, 512)


def test_a_text_longer_than_its_column_is_refused_before_the_database():
    with pytest.raises(RecordError) as refused:
        job_record(finished("j", model_name="m" * 201))
    assert refused.value.field == "model_name"
    assert generation_performance.c.model_name.type.length == 200


def test_every_way_in_uses_the_same_record_model():
    assert schemas.JobRecord is job_record_module.JobRecord
    assert issubclass(schemas.EstimateRequest, job_record_module.JobParams)


# -- the service ------------------------------------------------------------------------------
@pytest.fixture
def client(tmp_path):
    settings = Settings(spool_dir=tmp_path / "spool")
    with TestClient(base_url="http://127.0.0.1", app=create_app(f"sqlite:///{tmp_path / 'perflib.db'}", settings)) as client:
        yield client


@pytest.mark.parametrize("field, value", [("steps", True), ("resolution", "５１２x５１２")])
def test_service_answers_422_naming_the_field(client, field, value):
    answer = client.post("/api/anime/performance/estimate-time", json={**BASE, field: value})
    assert answer.status_code == 422
    assert field in json.dumps(answer.json())
    answer = client.post("/api/anime/performance/record-metrics",
                         json=finished("svc", **{field: value}))
    assert answer.status_code == 422
    assert field in json.dumps(answer.json())


# -- the importer -----------------------------------------------------------------------------
GOOD = {"job_id": "ok", "pipeline_type": "image", "job_type": "character", "status": "success",
        "resolution": "512x768", "frame_count": "1", "steps": "20", "batch_size": "1",
        "guidance_scale": "7.5", "sampler": "ddim", "model_name": "sd15", "gpu_name": "rtx",
        "started_at": "2026-11-01T10:00:00", "finished_at": "2026-11-01T10:00:09",
        "total_seconds": "1.5"}


def test_import_refuses_strictly_by_line_and_keeps_the_rest(store, tmp_path):
    rows = [{**GOOD, "job_id": "a"},
            {**GOOD, "job_id": "b", "steps": "２０"},
            {**GOOD, "job_id": "c", "extra_params": "{not json"},
            {**GOOD, "job_id": "d", "extra_params": '{"lora": "x", "strength": NaN}'},
            {**GOOD, "job_id": "e", "resolution": "５１２x768"},
            {**GOOD, "job_id": "f", "extra_params": '{"lora": "x"}'}]
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = import_jobs(path, store)
    assert report.inserted == 2
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "steps"), (3, "extra_params"), (4, "extra_params"), (5, "resolution")]
    frame = store.jobs_frame().set_index("job_id")
    assert frame.loc["f", "extra_params"] == {"lora": "x"}


def test_import_csv_with_a_bad_extra_params_cell(store, tmp_path):
    header = ",".join(REQUIRED_COLUMNS) + ",extra_params"
    good = ",".join(GOOD[c] for c in REQUIRED_COLUMNS)
    path = tmp_path / "jobs.csv"
    path.write_text(f'{header}\n{good.replace("ok", "x1", 1)},"{{""a"": 1}}"\n'
                    f'{good.replace("ok", "x2", 1)},"{{broken"\n')
    report = import_jobs(path, store)
    assert report.inserted == 1 and [(e.line, e.field) for e in report.errors] == [
        (3, "extra_params")]


# -- the tracker ------------------------------------------------------------------------------
def test_tracker_keeps_the_job_but_not_a_boolean_as_steps(store):
    with track_generation_job("tb", "image", {"resolution": "512x512", "steps": True},
                              db=store):
        pass
    flush_all()
    row = store.jobs_frame().set_index("job_id").loc["tb"]
    assert pd.isna(row.steps) and row.width == 512
    assert row.extra_params["invalid_fields"]["steps"]["value"] is True


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_estimate_names_the_field(sqlite_url, capsys):
    code = main(["--database-url", sqlite_url, "estimate", "--pipeline-type", "image",
                 "--resolution", "５１２x512", "--steps", "20"])
    assert code == 2
    assert "resolution" in capsys.readouterr().err


# -- work units: one definition -----------------------------------------------------------------
def test_stored_work_units_equal_the_features_work_units(tmp_path):
    profiles = {"wan": ModelProfile(vae_spatial_factor=8, vae_temporal_factor=4, patch_size=2,
                                    full_attention=True)}
    store = Store(f"sqlite:///{tmp_path / 'w.db'}", Settings(model_profiles=profiles))
    jobs = [job_record(finished("sd", guidance_scale=1.0, batch_size=2)),
            job_record(finished("wan", pipeline_type="video", model_name="wan", frame_count=33,
                                resolution="832x480", steps=30))]
    store.write_jobs(jobs)
    stored = store.jobs_frame().set_index("job_id")
    features = build_features(stored, profiles)
    for name in ("work_units", "attention_work", "decode_work"):
        assert np.allclose(stored[name].to_numpy(float), features[name].to_numpy(float))
    assert stored.loc["sd", "work_units"] == 64 * 64 * 2 * 20 * 1.0
    tokens = (832 / 16) * (480 / 16) * (1 + 32 // 4)
    assert stored.loc["wan", "work_units"] == pytest.approx(tokens * 30 * 2)


def test_a_hires_fix_job_works_for_the_sum_of_its_passes(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    passes = [{"width": 512, "height": 512, "steps": 20, "guidance_scale": 7.0},
              {"width": 1024, "height": 1024, "steps": 10, "denoise": 0.5,
               "guidance_scale": 7.0, "source": "upscale"}]
    store.write_jobs([job_record(finished("hires", passes=passes))])
    row = store.jobs_frame().set_index("job_id").loc["hires"]
    assert row.work_units == 64 * 64 * 20 * 2 + 128 * 128 * 10 * 2
    assert row.decode_work == 128 * 128
    assert row.passes[1]["denoise"] == 0.5
    features = build_features(store.jobs_frame())
    assert features.work_units.iloc[0] == row.work_units
    with pytest.raises(RecordError) as refused:
        job_record(finished("bad", passes=[{"width": 512, "height": 512, "steps": True}]))
    assert refused.value.field == "passes.0.steps"


def test_sql_analyses_read_the_stored_work_units(tmp_path):
    """The daily aggregate's work is the stored, profile-aware one (not an SD-only formula)."""
    profiles = {"dit": ModelProfile(vae_spatial_factor=8, patch_size=2)}
    store = Store(f"sqlite:///{tmp_path / 'a.db'}", Settings(model_profiles=profiles))
    store.write_jobs([job_record(finished(f"d{i}", model_name="dit",
                                          started_at=(NOW + timedelta(minutes=i)).isoformat()))
                      for i in range(3)])
    from perflib.analysis.sql import work_units
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.sum(work_units()))).scalar()
    assert total == 3 * (512 / 16) ** 2 * 20 * 2


def test_an_old_database_gets_its_cost_terms_on_upgrade(tmp_path):
    """A database perflib made at schema 1, before Alembic and the stored cost terms."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    store.write_jobs([job_record(finished("old"))])
    with store.engine.begin() as conn:
        conn.execute(sa.update(generation_performance).values(work_units=None))
        make_pre_alembic(conn)
        conn.execute(sa.text("CREATE TABLE perflib_schema_info (id INTEGER PRIMARY KEY, "
                             "version INTEGER NOT NULL, upgraded_at DATETIME NOT NULL)"))
        conn.execute(sa.text("INSERT INTO perflib_schema_info VALUES (1, 1, '2026-01-01')"))
    Store(url).init_db()
    assert Store(url).jobs_frame().work_units.iloc[0] == 64 * 64 * 20 * 2


def test_a_tracked_job_the_record_refuses_outright_goes_to_the_dead_letter_file(store, settings):
    """An identifying field at fault (here the pipeline type) cannot be salvaged: the measured
    job is kept in the dead-letter file with the reason, not dropped."""
    with track_generation_job("bad-pipeline", "audio", {"steps": 20}, db=store):
        pass
    flush_all()
    assert "bad-pipeline" not in set(store.jobs_frame().job_id)
    lines = (settings.spool_dir / "dead-letter.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["record"]["job_id"] == "bad-pipeline" and "pipeline_type" in entry["reason"]


def test_a_multi_pass_estimate_prices_cheaper_passes(tmp_path):
    """Advice for a hires-fix job changes every pass (its work is the sum over them)."""
    from perflib.prediction.predictor import PerformancePredictor

    predictor = PerformancePredictor(Store(f"sqlite:///{tmp_path / 'e.db'}"))
    passes = [{"width": 512, "height": 512, "steps": 20, "guidance_scale": 7.0},
              {"width": 1024, "height": 1024, "steps": 15, "denoise": 0.5,
               "guidance_scale": 7.0}]
    one_pass = predictor.estimate({**BASE, "passes": passes[:1]})
    both = predictor.estimate({**BASE, "passes": passes})
    assert both["predicted_time_seconds"] > 2 * one_pass["predicted_time_seconds"]
    advice = " ".join(both["recommendations"])
    assert "steps 20+15 → 13+10" in advice and "1024x1024 → 768x768" in advice
