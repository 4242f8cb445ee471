"""Simulated data only when asked: seeding is explicit, marked, reported and purgeable; reads never
write; and the queue ETA counts GPUs, not hosts."""
from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from perflib.analysis import PerformanceAnalyzer
from perflib.analysis.origin import EMPTY_DATABASE
from perflib.cli import main
from perflib.ops.purge import purge_simulated
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.snapshot import fleet_size
from perflib.serve import app as service_app
from perflib.serve import create_app
from perflib.sim.simulate import generate_jobs, simulate_history
from perflib.store import Store, schema
from perflib.tracking.nvml import Nvml
from perflib.tracking.sampler import JobResources, ResourceSampler
from tests.conftest import row_counts
from tests.fake_nvml import FakeDevice, FakeNvml

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
RTX_4090 = "NVIDIA GeForce RTX 4090"


def real_jobs(count: int, end: datetime, **fields) -> list[dict]:
    """Jobs as a pipeline would record them: simulated shapes, real ids, no simulated flag."""
    records = list(generate_jobs(weeks=1, seed=5, end=end, jobs_per_day=count / 3.5 + 5))[:count]
    assert len(records) == count
    for number, record in enumerate(records):
        record.update(job_id=f"real-{number}", **fields)
        del record["simulated"]
    return records


# -- reads never write --------------------------------------------------------------------------
def test_report_on_an_empty_database_writes_nothing_and_says_so(tmp_path, capsys):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    store.init_db()
    before = row_counts(store)
    assert main(["--database-url", str(store.db), "report", "--output-dir", str(tmp_path)]) == 0
    assert row_counts(store) == before
    output = capsys.readouterr().out
    assert f"note: {EMPTY_DATABASE}" in output
    html = open(output.strip().splitlines()[-1].split("report written to ")[1]).read()
    assert "The database is empty" in html and "perflib simulate --if-empty" in html
    assert "This report shows simulated data" not in html


def test_service_report_routes_on_an_empty_database_write_nothing(tmp_path, settings,
                                                                  monkeypatch):
    # Rendered here, not taken from the project's folder of served reports.
    monkeypatch.setattr(service_app, "SERVED_REPORTS", tmp_path / "served")
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}", settings)
    store.init_db()
    before = row_counts(store)
    with TestClient(base_url="http://127.0.0.1", app=create_app(str(store.db), settings)) as client:
        report = client.get(f"{API}/weekly-report")
        assert report.status_code == 200
        assert report.json()["data_origin"]["notice"] == EMPTY_DATABASE
        page = client.get(f"{API}/weekly-report", params={"format": "html"})
        assert page.status_code == 200 and "The database is empty" in page.text
        assert list((tmp_path / "served").glob("*.html"))
        assert row_counts(store) == before

        simulate_history(store, weeks=1, end=NOW, jobs_per_day=40)
        with_jobs = row_counts(store)
        report = client.get(f"{API}/weekly-report").json()
        assert report["simulated"] is True and "simulated data" in report["data_origin"]["notice"]
        assert row_counts(store) == with_jobs


# -- explicit seeding -------------------------------------------------------------------------
def test_simulate_if_empty_seeds_once_and_the_report_says_it_is_simulated(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    seed = ["--database-url", url, "simulate", "--if-empty", "--weeks", "3",
            "--jobs-per-day", "60", "--gpus", "4", "--gpus-per-host", "2"]
    assert main(seed) == 0
    assert "trained a" in capsys.readouterr().out
    store = Store(url)
    seeded = row_counts(store)
    assert seeded["generation_performance"] > 500
    assert seeded["performance_prediction_models"] >= 1 and seeded["performance_trends"] > 0
    jobs = store.jobs_frame()
    assert jobs.simulated.astype(bool).all() and jobs.job_id.str.startswith("sim-").all()
    assert set(zip(jobs.hostname, jobs.gpu_index)) == {
        ("render-01", 0), ("render-01", 1), ("render-02", 0), ("render-02", 1)}

    assert main(seed) == 0
    assert "nothing simulated" in capsys.readouterr().out
    assert row_counts(store) == seeded

    assert main(["--database-url", url, "report", "--output-dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    html = open(output.strip().splitlines()[-1].split("report written to ")[1]).read()
    assert "This report shows simulated data" in html and html.count("<img") >= 6
    assert "def " not in html and "import " not in html  # code hidden
    assert row_counts(store)["generation_performance"] == seeded["generation_performance"]


def test_simulate_if_empty_leaves_a_database_with_real_jobs_alone(store, capsys):
    store.write_jobs(real_jobs(3, NOW))
    before = row_counts(store)
    assert main(["--database-url", str(store.db), "simulate", "--if-empty", "--weeks", "3"]) == 0
    assert "holds 3 jobs: nothing simulated" in capsys.readouterr().out
    assert row_counts(store) == before


# -- knowing what is simulated ---------------------------------------------------------------------
def test_report_says_whether_its_jobs_are_simulated_real_or_mixed(store):
    analyzer = PerformanceAnalyzer(store)
    assert analyzer.data_origin(7, NOW).notice() == EMPTY_DATABASE
    store.write_jobs(real_jobs(40, NOW))
    assert analyzer.data_origin(7, NOW).notice() is None and not analyzer.is_simulated()
    assert "No jobs in this period" in analyzer.data_origin(7, NOW - timedelta(days=30)).notice()

    simulate_history(store, weeks=1, seed=1, end=NOW, jobs_per_day=20)
    origin = analyzer.data_origin(7, NOW)
    assert origin.mixed and analyzer.is_simulated()
    assert origin.window_jobs - origin.window_simulated_jobs == 40
    report = analyzer.generate_performance_report(7, NOW)
    assert report["simulated"] is True
    assert report["data_origin"]["notice"].startswith("Real and simulated jobs are mixed: "
                                                       f"{origin.window_simulated_jobs} of the")


def test_rows_from_before_the_simulated_flag_count_as_simulated_by_their_id(store):
    legacy = list(generate_jobs(weeks=1, seed=2, end=NOW, jobs_per_day=10))
    for record in legacy:
        del record["simulated"]
    store.write_jobs(legacy)
    origin = PerformanceAnalyzer(store).data_origin(None)
    assert origin.simulated_jobs == origin.jobs == len(legacy)
    assert "This report shows simulated data" in origin.notice()


# -- purge ----------------------------------------------------------------------------------
def test_purge_removes_exactly_the_simulated_rows(store, capsys):
    real = real_jobs(80, NOW - timedelta(days=3))
    real[0]["samples"] = [{"seq": 0, "sampled_at": real[0]["started_at"], "cpu_pct": 12.0}]
    store.write_jobs(real)
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    models = schema.performance_prediction_models
    with store.engine.begin() as conn:  # trained an hour before anything was simulated
        conn.execute(sa.update(models).values(created_at=datetime.now(timezone.utc)
                                              - timedelta(hours=1)))

    simulated = list(generate_jobs(weeks=2, seed=3, end=NOW, jobs_per_day=30))
    simulated[0]["samples"] = [{"seq": 0, "sampled_at": simulated[0]["started_at"]}]
    store.write_jobs(simulated)
    predictor.train_model("video", "linear_regression")
    predictor.save_model_to_db("video", "linear_regression")
    analyzer = PerformanceAnalyzer(store)
    analyzer.aggregate_daily(days_back=None)
    alerts = schema.performance_alerts
    with store.engine.begin() as conn:
        for name, seen in (("before", NOW - timedelta(days=30)), ("during", NOW)):
            conn.execute(sa.insert(alerts).values(
                alert_type="test", severity="low", message=name, fingerprint=name,
                first_seen=seen, last_seen=seen, acknowledged=False))
    before = row_counts(store)
    real_phases = sum(len(r["phases"]) for r in real)

    assert main(["--database-url", str(store.db), "purge", "--simulated", "--dry-run"]) == 0
    assert f"would delete {len(simulated)} simulated jobs" in capsys.readouterr().out
    assert row_counts(store) == before

    plan = purge_simulated(store)
    after = row_counts(store)
    assert (plan.jobs, plan.samples, plan.model_versions, plan.alerts) == (len(simulated), 1, 1, 1)
    assert plan.active_models_removed == ("video",)
    assert after["generation_performance"] == len(real)
    assert set(store.jobs_frame().job_id) == {r["job_id"] for r in real}
    assert after["generation_phases"] == real_phases == before["generation_phases"] - plan.phases
    assert after["resource_samples"] == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(models.c.pipeline_type)).scalars().all() == ["all"]
        assert conn.execute(sa.select(alerts.c.message)).scalars().all() == ["before"]
        trend_jobs = conn.execute(sa.select(sa.func.sum(schema.performance_trends.c.job_count))
                                  ).scalar()
    assert trend_jobs == len(real)  # the simulated days were recomputed from real jobs
    assert purge_simulated(store).describe() == "no simulated jobs: nothing to purge"


# -- the fleet counts GPUs -------------------------------------------------------------------
def test_fleet_size_counts_the_gpus_of_a_host(store):
    simulate_history(store, weeks=1, gpus=8, gpus_per_host=8, end=NOW, jobs_per_day=400)
    jobs = store.jobs_frame()
    assert set(jobs.hostname) == {"render-01"} and set(jobs.gpu_index) == set(range(8))
    assert jobs.gpu_name.nunique() == 2  # what the fleet size counted before: 2 GPUs
    assert fleet_size(store) == 8


def test_fleet_size_counts_one_gpu_per_host_and_model_when_jobs_give_no_index(store):
    store.write_jobs(real_jobs(10, NOW, hostname="old-host", gpu_name=RTX_4090, gpu_index=None))
    assert fleet_size(store) == 1


def test_queue_eta_spreads_the_queue_over_every_gpu_of_a_host(tmp_path, settings):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    finished = [{"job_id": f"done-{gpu}", "pipeline_type": "image", "status": "success",
                 "resolution": "512x512", "steps": 20, "hostname": "render-01",
                 "gpu_name": RTX_4090, "gpu_index": gpu, "total_seconds": 10.0,
                 "started_at": (NOW - timedelta(hours=2)).isoformat()} for gpu in range(8)]
    queued = [{"job_id": f"queued-{n}", "pipeline_type": "image", "status": "queued",
               "predicted_seconds": 100.0, "submitted_at": datetime.now(timezone.utc).isoformat()}
              for n in range(8)]
    with TestClient(base_url="http://127.0.0.1", app=create_app(url, settings)) as client:
        assert client.post(f"{API}/record-metrics", json=finished + queued).status_code == 200
        queue = client.post(f"{API}/estimate-time", json={
            "pipeline_type": "image", "resolution": "512x512", "steps": 20}).json()["queue"]
    # Eight 100 s jobs on eight GPUs: the next one starts after 100 s, not after 800 s.
    assert (queue["gpus"], queue["jobs_ahead"]) == (8, 8)
    assert queue["expected_start_seconds"] == pytest.approx(100, abs=2)


@pytest.mark.parametrize("devices, gpu_indices, expected", [
    (["A100"], None, 0),                  # the only GPU there is
    (["A100", "A100"], None, None),       # any of two: unknown
    (["A100", "A100", "A100"], (2,), 2),  # the job's own GPU
    ([], (1,), None),                     # no GPU reading
])
def test_a_tracked_job_records_its_gpu_index(devices, gpu_indices, expected):
    nvml = Nvml(FakeNvml([FakeDevice(name) for name in devices], missing_library=not devices))
    nvml.start()
    sampler = ResourceSampler(interval=0.05, nvml=nvml)
    job = JobResources(gpu_indices=gpu_indices)
    sampler.attach(job)
    sampler.sample_once()
    assert job.aggregates()["gpu_index"] == expected
