"""The scale data builder: a tiled realistic history, written whole through the normal schema."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from perflib.config import Settings
from perflib.prediction.work_terms import STORED_TERMS, stored_terms
from perflib.store import Store, schema
from tools.scale_data import BuildResult, build_scale_database, new_hour_records

END = datetime(2026, 11, 23, tzinfo=timezone.utc)      # a Monday, midnight


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgres", marks=pytest.mark.postgres)])
def built(request, tmp_path_factory) -> tuple[Store, BuildResult]:
    """5,000 jobs over 45 days from a 2,000-job template: two whole copies and a part of one
    (built once per backend; the tests only read it)."""
    folder = tmp_path_factory.mktemp("scale")
    url = (f"sqlite:///{folder / 'scale.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_server").create_database("scale_data"))
    settings = Settings(spool_dir=folder / "spool")
    result = build_scale_database(url, 5000, days=45, seed=4, end=END, settings=settings,
                                  template_jobs=2000, sample_share=0.05)
    return Store(url, settings), result


def test_builds_the_asked_number_of_distinct_jobs_over_the_days(built):
    store, result = built
    jobs = store.jobs_frame()
    assert result.jobs == len(jobs) == 5000
    assert jobs.job_id.is_unique and jobs.simulated.all()
    assert result.copies == math.ceil(5000 / result.template_jobs) >= 2
    assert result.start == END - timedelta(days=45) and result.end == END
    assert jobs.submitted_at.min() >= result.start and jobs.finished_at.max() <= END
    assert (jobs.submitted_at.max() - jobs.submitted_at.min()) > timedelta(days=43)
    assert (jobs.started_at >= jobs.submitted_at).all()
    assert (jobs.finished_at > jobs.started_at).all()
    assert (jobs.recorded_at == jobs.finished_at).all()      # as if tracked, not all just now
    # Each copy runs on its own GPUs of a bigger fleet.
    gpus = jobs.groupby(jobs.job_id.str.split("-").str[2])[["hostname", "gpu_index"]].apply(
        lambda copy: set(copy.itertuples(index=False, name=None)))
    assert len(gpus) == result.copies and jobs.hostname.str.fullmatch(r"render-\d{4}").all()
    assert sum(map(len, gpus)) == len(set().union(*gpus))
    assert result.seconds > 0 and result.rows_per_s > 0
    assert result.rows == result.jobs + result.phases + result.samples


def test_keeps_the_arrival_shape_and_the_planted_incidents(built):
    store, _ = built
    jobs = store.jobs_frame()
    hours = jobs.submitted_at.dt.hour
    assert (hours == 14).sum() > 4 * (hours == 3).sum()         # busy afternoons, quiet nights
    weekend = jobs.submitted_at.dt.day_of_week >= 5
    assert weekend.mean() < 0.25
    # The default incidents: a week of queue backlog 36 days before the end.
    backlog = jobs.submitted_at.between(END - timedelta(days=36), END - timedelta(days=29))
    clean = jobs.submitted_at.between(END - timedelta(days=45), END - timedelta(days=38))
    assert backlog.sum() > 2 * clean.sum()
    assert (jobs.model_name == "sdxl-refiner-hires").any()


def test_cost_terms_are_those_the_store_computes(built):
    store, _ = built
    jobs = store.jobs_frame().sample(200, random_state=0)
    records = jobs.to_dict("records")
    expected = stored_terms([{**r, "passes": None} for r in records], store.config.model_profiles)
    for record, terms in zip(records, expected):
        for name in STORED_TERMS:
            assert record[name] == pytest.approx(terms[name]), (record["job_id"], name)


def test_every_job_has_its_phases_and_some_have_samples(built):
    store, result = built
    phases = store.frame(sa.select(schema.generation_phases))
    per_job = phases.groupby("job_id").size()
    assert result.phases == len(phases) and len(per_job) == result.jobs
    assert per_job.between(1, 3).all()
    samples = store.count(schema.resource_samples)
    assert result.samples == samples > 0
    sampled_jobs = store.frame(sa.select(schema.resource_samples.c.job_id).distinct())
    assert 0.02 < len(sampled_jobs) / result.jobs < 0.10        # thinned: 5% asked
    jobs = store.jobs_frame().set_index("job_id")
    first = phases.sort_values("started_at").groupby("job_id").started_at.first()
    lag = (first - jobs.started_at.reindex(first.index)).dt.total_seconds()
    assert np.allclose(lag, jobs.init_seconds.reindex(first.index), atol=1e-3)
    if "job_started_at" in phases:      # time-partitioned tables: the job's start beside it
        assert list(phases.job_started_at) == list(jobs.started_at.reindex(phases.job_id))


def test_new_hour_records_are_an_average_hour_of_the_history():
    start = END + timedelta(hours=3)      # a quiet hour: still an average hour's jobs
    records = new_hour_records(1_000_000, start)
    assert len(records) == round(1_000_000 / 90 / 24)
    assert len({r["job_id"] for r in records}) == len(records)
    assert all(start <= r["submitted_at"] < start + timedelta(hours=1) for r in records)
    assert all(r["submitted_at"] <= r["started_at"] < r["finished_at"] for r in records)
    assert all(r["phases"][0]["started_at"] >= r["started_at"] and r["simulated"]
               for r in records)
    assert {r["pipeline_type"] for r in records} == {"image", "video"}


def test_new_hour_records_add_to_a_built_history(db_url, settings):
    result = build_scale_database(db_url, 3000, days=21, seed=4, end=END, settings=settings)
    records = new_hour_records(3000, END + timedelta(hours=14), days=21, seed=4)
    store = Store(db_url, settings)
    assert records and store.write_jobs(records) == len(records)
    assert store.count() == result.jobs + len(records)


def test_refuses_a_database_that_holds_jobs(db_url, settings):
    build_scale_database(db_url, 50, days=21, end=END, settings=settings)
    with pytest.raises(ValueError, match="already holds jobs"):
        build_scale_database(db_url, 50, days=21, end=END, settings=settings)


@pytest.mark.parametrize("arguments, field", [(dict(jobs=0), "jobs"), (dict(days=7), "days"),
                                              (dict(sample_share=2), "sample_share")])
def test_refuses_bad_arguments_naming_them(sqlite_url, settings, arguments, field):
    with pytest.raises(ValueError, match=field):
        build_scale_database(sqlite_url, **{"jobs": 10, **arguments}, end=END,
                             settings=settings)
