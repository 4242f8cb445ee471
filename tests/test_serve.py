"""The HTTP service: every endpoint in process and through a real uvicorn, bad input, access,
a database that is down, the queue ETA, and the dashboard page in a headless browser."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from perflib.analysis import PerformanceAnalyzer
from perflib.config import Settings
from perflib.prediction.predictor import RELOAD_CHECK_SECONDS, PerformancePredictor
from perflib.queue.snapshot import expected_start
from perflib.serve import create_app, main
from perflib.serve.guards import MAX_BODY_BYTES, is_loopback
from perflib.sim.simulate import generate_jobs
from perflib.store import Spool, Store
from tools.loadtest import free_port, wait_until_serving

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

from tests.conftest import missing_program

API = "/api/anime/performance"
CHROMIUM = "/usr/bin/chromium"
DOWN_URL = "postgresql://perflib:hunter2@127.0.0.1:9/perflib"
ESTIMATE = {"pipeline_type": "video", "resolution": "768x768", "frame_count": 60, "steps": 25,
            "job_type": "scene"}
ESTIMATE_KEYS = {"predicted_time_seconds", "confidence", "prediction_method", "model_used",
                 "uncertainty_range", "recommendations", "queue",
                 "speed_source",  # observed / pooled / gpu_profile / heuristic (issue #12)
                 "geometry_source"}  # configured / inferred / sibling:<name> / default (#20)
FUZZ = hypothesis_settings(max_examples=200, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])


def job(job_id: str, status: str = "success", minutes_ago: float = 60, seconds: float = 100.0,
        **fields) -> dict:
    """A job record as a pipeline would post it."""
    started = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    record = {"job_id": job_id, "pipeline_type": "video", "job_type": "scene",
              "status": status, "resolution": "768x768", "frame_count": 60, "steps": 25,
              "gpu_name": "NVIDIA GeForce RTX 4090", "hostname": "render-01",
              "submitted_at": started.isoformat()}
    if status not in ("queued", "running"):
        record.update(started_at=started.isoformat(), total_seconds=seconds,
                      finished_at=(started + timedelta(seconds=seconds)).isoformat())
    elif status == "running":
        record["started_at"] = started.isoformat()
    return {**record, **fields}


# -- databases and clients ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_db(tmp_path_factory) -> Path:
    """Two simulated weeks on two GPUs with a trained linear model and the alerts `perflib
    maintain` raises (copied per use)."""
    path = tmp_path_factory.mktemp("trained") / "perflib.db"
    store = Store(f"sqlite:///{path}")
    store.write_jobs(list(generate_jobs(weeks=2, gpus=2, seed=0)))
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    PerformanceAnalyzer(store).detect_alerts()
    return path


def copy_database(source: Path, folder: Path) -> str:
    """A consistent copy of a SQLite database (WAL included); returns its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "perflib.db"
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


@pytest.fixture(scope="module")
def in_process(trained_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("in-process")
    settings = Settings(spool_dir=folder / "spool")
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy_database(trained_db, folder), settings)) as client:
        yield client


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A service on an empty database, for the fuzzers to write into and query."""
    folder = tmp_path_factory.mktemp("scratch")
    settings = Settings(spool_dir=folder / "spool")
    with TestClient(base_url="http://127.0.0.1", app=create_app(f"sqlite:///{folder / 'perflib.db'}", settings)) as client:
        yield client


@pytest.fixture(scope="module")
def live_server(trained_db, tmp_path_factory):
    """``python -m perflib.serve`` on a free loopback port, stopped after the module."""
    folder = tmp_path_factory.mktemp("uvicorn")
    url = copy_database(trained_db, folder)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "perflib.serve", "--port", str(port), "--database-url", url],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, process, log_path)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["database"] == "ok"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)
    assert "Application shutdown complete" in log_path.read_text(), log_path.read_text()


@pytest.fixture(params=["in-process", "uvicorn"])
def api(request) -> httpx.Client:
    """The same service through FastAPI's TestClient and through a real uvicorn process."""
    if request.param == "in-process":
        yield request.getfixturevalue("in_process")
        return
    with httpx.Client(base_url=request.getfixturevalue("live_server"), timeout=60) as client:
        yield client


def app_client(db, settings, **overrides) -> TestClient:
    return TestClient(base_url="http://127.0.0.1", app=create_app(db, settings.with_overrides(**overrides)))


# -- every endpoint ------------------------------------------------------------------------------
def test_every_endpoint_answers_the_seed_examples(api):
    estimate = api.post(f"{API}/estimate-time", json=ESTIMATE)
    assert estimate.status_code == 200, estimate.text
    body = estimate.json()
    assert set(body) == ESTIMATE_KEYS
    assert body["prediction_method"] == "ml_model" and body["predicted_time_seconds"] > 0
    low, high = body["uncertainty_range"]
    assert low <= body["predicted_time_seconds"] <= high
    assert body["queue"]["gpus"] == 2
    assert body["queue"]["expected_finish_seconds"] == pytest.approx(
        body["queue"]["expected_start_seconds"] + body["predicted_time_seconds"], abs=0.01)

    trends = api.get(f"{API}/trends", params={"days_back": 7, "pipeline_type": "video"}).json()
    assert trends["period_days"] == 7 and set(trends["trends"]) == {"video"}
    video = trends["trends"]["video"]
    assert video["time_trend"] in ("improving", "degrading", "stable")
    assert video["avg_generation_time"] > 0 and 0.9 < video["success_rate"] <= 1
    assert {"bottlenecks", "recommendations"} <= set(video)

    alerts = api.get(f"{API}/alerts", params={"severity": "high", "acknowledged": "false"})
    assert alerts.status_code == 200
    assert all(a["severity"] == "high" and not a["acknowledged"] for a in alerts.json()["alerts"])

    report = api.get(f"{API}/weekly-report", params={"weeks_back": 1}).json()
    assert {"overall_statistics", "bottlenecks", "trends", "alerts", "opportunities",
            "prediction_accuracy"} <= set(report)
    assert report["overall_statistics"]["total_jobs"] > 0

    recorded = api.post(f"{API}/record-metrics", json=job(f"seed-example-{time.time_ns()}"))
    assert recorded.status_code == 200 and recorded.json()["stored"] == 1

    dashboard = api.get(f"{API}/dashboard").json()
    assert set(dashboard["system_status"]) == {"jobs_24h", "avg_generation_time",
                                               "success_rate_24h", "queued_jobs"}
    assert dashboard["system_status"]["jobs_24h"] > 0
    assert sum(row["jobs"] for row in dashboard["jobs_per_hour"]) == \
        dashboard["system_status"]["jobs_24h"]

    status = api.get(f"{API}/model-status").json()
    assert status["video"]["family"] == "linear_regression"
    assert status["video"]["heuristic_in_use"] is False

    assert api.get("/healthz").json()["database"] == "ok"
    assert "perflib_estimate_seconds" in api.get("/metrics").text
    page = api.get("/dashboard")
    assert page.status_code == 200 and 'id="jobs-24h"' in page.text
    assert api.get("/docs").status_code == 200
    assert f"{API}/estimate-time" in api.get("/openapi.json").json()["paths"]


def test_acknowledging_an_alert(api):
    open_alerts = api.get(f"{API}/alerts", params={"acknowledged": "false"}).json()["alerts"]
    assert open_alerts, "the simulated history raises at least one alert"
    alert_id = open_alerts[0]["id"]
    answer = api.post(f"{API}/alerts/{alert_id}/acknowledge")
    assert answer.status_code == 200 and answer.json() == {"id": alert_id, "acknowledged": True}
    acknowledged = api.get(f"{API}/alerts", params={"acknowledged": "true"}).json()["alerts"]
    assert alert_id in [a["id"] for a in acknowledged]
    assert api.post(f"{API}/alerts/999999/acknowledge").status_code == 404


def test_retrained_model_is_used_without_restart(api):
    before = api.get(f"{API}/model-status").json()["video"]["version"]
    task = api.post(f"{API}/retrain", json={"pipeline_type": None,
                                             "model_type": "linear_regression"})
    assert task.status_code == 202 and task.json()["status"] in ("queued", "running")
    task_id = task.json()["task_id"]
    deadline = time.monotonic() + 60
    while (state := api.get(f"{API}/retrain/{task_id}").json())["status"] in ("queued",
                                                                                "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["status"] == "succeeded", state
    assert state["result"]["version"] == before + 1
    assert state["result"]["model_type"] == "linear_regression"
    # The predictor looks for a new active version every RELOAD_CHECK_SECONDS.
    deadline = time.monotonic() + RELOAD_CHECK_SECONDS + 5
    while f"v{before + 1} " not in api.post(f"{API}/estimate-time",
                                            json=ESTIMATE).json()["model_used"]:
        assert time.monotonic() < deadline, "the new model version was not picked up"
        time.sleep(0.1)
    assert api.get(f"{API}/retrain/no-such-task").status_code == 404


def test_retrain_without_enough_history_fails_with_a_reason(sqlite_url, settings):
    client = app_client(sqlite_url, settings)
    task_id = client.post(f"{API}/retrain").json()["task_id"]
    deadline = time.monotonic() + 30
    while (state := client.get(f"{API}/retrain/{task_id}").json())["status"] in ("queued",
                                                                                   "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["status"] == "failed" and "at least 30" in state["error"]


def test_metrics_expose_jobs_latency_and_queue(sqlite_url, settings):
    client = app_client(sqlite_url, settings)
    records = [job(f"m-{n}", seconds=10.0 * (n + 1)) for n in range(3)]
    records += [job("m-failed", "failed", seconds=5.0), job("m-queued", "queued")]
    assert client.post(f"{API}/record-metrics", json=records).status_code == 200
    client.post(f"{API}/estimate-time", json=ESTIMATE)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(client.get("/metrics").text)
               for s in family.samples}
    success = (("pipeline_type", "video"), ("status", "success"))
    assert samples[("perflib_job_total_seconds_count", success)] == 3
    assert samples[("perflib_job_total_seconds_sum", success)] == 60.0
    assert samples[("perflib_queue_jobs", (("status", "queued"),))] == 1
    assert samples[("perflib_estimate_seconds_count", ())] == 1
    assert samples[("perflib_api_records_total", (("outcome", "stored"),))] == 5
    assert samples[("perflib_database_up", ())] == 1


# -- recording jobs --------------------------------------------------------------------------------
def test_recorded_jobs_show_in_trends_and_dashboard(db_url, settings):
    client = app_client(db_url, settings)
    seconds = [90.0 + (n % 7) * 5 for n in range(60)]
    records = [job(f"t-{n}", "failed" if n % 10 == 0 else "success", minutes_ago=n * 140 + 5,
                   seconds=s) for n, s in enumerate(seconds)]
    first = client.post(f"{API}/record-metrics", json=records)
    assert first.json() == {"received": 60, "stored": 60, "already_stored": 0, "spooled": 0}
    again = client.post(f"{API}/record-metrics", json=records)
    assert again.json()["already_stored"] == 60 and again.json()["stored"] == 0

    trends = client.get(f"{API}/trends", params={"days_back": 7, "pipeline_type": "video"})
    video = trends.json()["trends"]["video"]
    succeeded = [s for n, s in enumerate(seconds) if n % 10]
    assert video["success_rate"] == pytest.approx(0.9, abs=0.001)
    assert video["avg_generation_time"] == pytest.approx(sum(succeeded) / len(succeeded),
                                                         rel=0.05)
    status = client.get(f"{API}/dashboard").json()["system_status"]
    assert status["jobs_24h"] == sum(1 for n in range(60) if n * 140 + 5 < 24 * 60)


def test_a_record_keeps_phases_and_extra_fields(sqlite_url, settings):
    client = app_client(sqlite_url, settings)
    record = job("phased", prompt="a cat", phases=[{"name": "denoise", "seconds": 80.0},
                                                   {"name": "decode", "seconds": 15.0}])
    assert client.post(f"{API}/record-metrics", json=record).status_code == 200
    store = Store(sqlite_url, settings)
    stored = store.jobs_frame().iloc[0]
    assert (stored.width, stored.height, stored.steps) == (768, 768, 25)
    assert stored.extra_params == {"prompt": "a cat"}
    phases = store.phases_frame(["phased"])
    assert list(phases.name) == ["denoise", "decode"] and list(phases.seq) == [0, 1]


def test_live_jobs_are_replaced_but_finished_ones_never(sqlite_url, settings):
    client = app_client(sqlite_url, settings)
    for status in ("queued", "running", "success", "running"):
        answer = client.post(f"{API}/record-metrics", json=job("lifecycle", status))
        assert answer.status_code == 200
    stored = Store(sqlite_url, settings).jobs_frame()
    assert len(stored) == 1 and stored.status.iloc[0] == "success"


# -- the queue ETA ---------------------------------------------------------------------------------
@pytest.mark.parametrize("running, queued, gpus, start", [
    ([], [], 1, 0.0),
    ([60.0], [30.0, 50.0], 1, 140.0),
    ([60.0], [30.0, 50.0], 2, 60.0),
    ([60.0, 10.0], [30.0, 50.0, 20.0], 3, 50.0),
    ([-25.0], [40.0], 1, 40.0),  # overran its estimate: its GPU is taken to be free now
    ([], [10.0] * 8, 4, 20.0),
])
def test_expected_start_is_fifo_over_the_gpus(running, queued, gpus, start):
    assert expected_start(running, queued, gpus) == pytest.approx(start)


def test_queue_eta_with_live_jobs_on_one_then_two_gpus(db_url, settings):
    client = app_client(db_url, settings)
    live = [job("gpu-a-done", minutes_ago=120),
            job("running", "running", minutes_ago=40 / 60, predicted_seconds=100.0),
            job("queued-1", "queued", minutes_ago=20 / 60, predicted_seconds=30.0),
            job("queued-2", "queued", minutes_ago=10 / 60, predicted_seconds=50.0)]
    assert client.post(f"{API}/record-metrics", json=live).status_code == 200

    one_gpu = client.post(f"{API}/estimate-time", json=ESTIMATE).json()
    queue = one_gpu["queue"]
    assert (queue["jobs_ahead"], queue["gpus"]) == (3, 1)
    # 100 s running job 40 s in: 60 s left, then 30 s and 50 s queued jobs, one after another.
    assert queue["expected_start_seconds"] == pytest.approx(140, abs=2)
    assert queue["expected_finish_seconds"] == pytest.approx(
        queue["expected_start_seconds"] + one_gpu["predicted_time_seconds"], abs=0.01)

    second_gpu = job("gpu-b-done", minutes_ago=90, hostname="render-02",
                     gpu_name="NVIDIA A100-SXM4-80GB")
    assert client.post(f"{API}/record-metrics", json=second_gpu).status_code == 200
    queue = client.post(f"{API}/estimate-time", json=ESTIMATE).json()["queue"]
    # GPU 1: 60 s left; GPU 2: the 30 s job, then the 50 s job from 30 s: the next free at 60 s.
    assert (queue["jobs_ahead"], queue["gpus"]) == (3, 2)
    assert queue["expected_start_seconds"] == pytest.approx(60, abs=2)

    done = job("running", minutes_ago=40 / 60, seconds=41.0)
    unestimated = job("queued-3", "queued", minutes_ago=1 / 60)  # no predicted_seconds
    assert client.post(f"{API}/record-metrics", json=[done, unestimated]).status_code == 200
    queue = client.post(f"{API}/estimate-time", json=ESTIMATE).json()["queue"]
    assert (queue["jobs_ahead"], queue["gpus"]) == (3, 2)
    # 30 s and 50 s side by side; queued-3 (estimated by the model: minutes) takes the GPU
    # freed at 30 s, so the next one frees at 50 s.
    assert queue["expected_start_seconds"] == pytest.approx(50, abs=2)


# -- bad input, limits, access -------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"resolution": "9000x9000"}, "resolution"),
    ({"resolution": "768 by 768"}, "resolution"),
    ({"frame_count": 10_001}, "frame_count"),
    ({"steps": 1001}, "steps"),
    ({"steps": "many"}, "steps"),
    ({"steps": None}, "steps"),
    ({"pipeline_type": "audio"}, "pipeline_type"),
    ({"guidance_scale": 1e9}, "guidance_scale"),
    ({"batch_size": 0}, "batch_size"),
    ({"model_name": "x" * 201}, "model_name"),
])
def test_bad_estimate_is_422_naming_the_field(api, change, field):
    answer = api.post(f"{API}/estimate-time", json={**ESTIMATE, **change})
    assert answer.status_code == 422
    assert any(error["loc"][-1] == field for error in answer.json()["detail"]), answer.text


@pytest.mark.parametrize("record, field", [
    (job("bad-status", status="exploded"), "status"),
    (job("", ), "job_id"),
    (job("nul\x00id"), "job_id"),
    (job("bad-res", resolution="8193x10"), "resolution"),
    (job("negative", seconds=-1.0), "total_seconds"),
    (job("late", finished_at="2000-01-01T00:00:00Z"), "finished_at"),
    (job("missing", status="success", started_at=None, finished_at=None), "started_at"),
    ({**job("nan-extra"), "weights": {"alpha": float("nan")}}, "weights"),
    ({**job("no-pipeline"), "pipeline_type": None}, "pipeline_type"),
])
def test_bad_record_is_422_naming_the_field(in_process, record, field):
    for body in (record, [job("fine-1"), record]):
        answer = in_process.post(f"{API}/record-metrics", content=json.dumps(body),
                                 headers={"Content-Type": "application/json"})
        assert answer.status_code == 422
        detail = answer.json()["detail"]
        assert any(field in error["loc"] or field in error["msg"] for error in detail), detail
    assert in_process.get("/healthz").status_code == 200


@pytest.mark.parametrize("path, params, name", [
    ("trends", {"days_back": 0}, "days_back"),
    ("trends", {"days_back": "week"}, "days_back"),
    ("trends", {"pipeline_type": "audio"}, "pipeline_type"),
    ("alerts", {"severity": "urgent"}, "severity"),
    ("alerts", {"acknowledged": "perhaps"}, "acknowledged"),
    ("weekly-report", {"weeks_back": 0}, "weeks_back"),
    ("weekly-report", {"format": "pdf"}, "format"),
])
def test_bad_query_is_422_naming_the_parameter(api, path, params, name):
    answer = api.get(f"{API}/{path}", params=params)
    assert answer.status_code == 422
    assert any(error["loc"] == ["query", name] for error in answer.json()["detail"])


def test_oversized_bodies_are_413(api):
    too_big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    declared = api.post(f"{API}/record-metrics", content=too_big,
                        headers={"Content-Type": "application/json"})
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the streamed body is counted
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)

    streamed = api.post(f"{API}/estimate-time", content=chunks(),
                        headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert api.post(f"{API}/estimate-time", json=ESTIMATE).status_code == 200


def test_writes_need_the_token_when_one_is_set(sqlite_url, settings):
    client = app_client(sqlite_url, settings, api_token="s3cret")
    record = job("guarded")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Bearer s3crét".encode("latin-1")}):
        for method, path, body in (("post", "record-metrics", record), ("post", "retrain", {}),
                                   ("post", "alerts/1/acknowledge", None),
                                   ("post", "record-metrics", {"not": "a record"})):
            answer = getattr(client, method)(f"{API}/{path}", json=body, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.headers["www-authenticate"] == "Bearer"
    good = {"Authorization": "Bearer s3cret"}
    assert client.post(f"{API}/record-metrics", json=record, headers=good).status_code == 200
    assert client.post(f"{API}/retrain", headers=good).status_code == 202
    assert client.post(f"{API}/alerts/1/acknowledge", headers=good).status_code == 404
    assert client.post(f"{API}/estimate-time", json=ESTIMATE).status_code == 200
    assert client.get(f"{API}/trends").status_code == 200
    assert client.get(f"{API}/dashboard").status_code == 200


def test_database_down_reads_are_503_and_records_are_spooled(sqlite_url, settings):
    down = app_client(DOWN_URL, settings)
    for method, path, body in (("GET", "trends", None), ("GET", "dashboard", None),
                               ("GET", "alerts", None), ("GET", "model-status", None),
                               ("GET", "weekly-report", None), ("POST", "estimate-time", ESTIMATE)):
        answer = down.request(method, f"{API}/{path}", json=body)
        assert answer.status_code == 503, answer.text
        assert "unavailable" in answer.json()["detail"]
        assert "hunter2" not in answer.text and "***" in answer.text
    assert down.get("/healthz").json()["database"] == "unavailable"
    assert "perflib_database_up 0.0" in down.get("/metrics").text

    spooled = down.post(f"{API}/record-metrics", json=[job("kept-1"), job("kept-2")])
    assert spooled.status_code == 202
    assert spooled.json() == {"received": 2, "stored": 0, "already_stored": 0, "spooled": 2}
    assert Spool(settings.spool_dir).count_pending() == 2

    # Back up: the next record that lands brings the spooled ones with it.
    up = app_client(sqlite_url, settings)
    assert up.post(f"{API}/record-metrics", json=job("kept-3")).status_code == 200
    assert sorted(Store(sqlite_url, settings).jobs_frame().job_id) == ["kept-1", "kept-2",
                                                                        "kept-3"]
    assert Spool(settings.spool_dir).count_pending() == 0


# -- fuzzing: bad input is never a 5xx (and never spooled while the database is up) -------------
junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                 st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(
                     datetime.isoformat),
                 st.sampled_from(["8193x1", "0x10", "64x64x64", "2099-13-01T00:00:00"]))
DROP = object()


def mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid bodies, as they are or with a field or two replaced by junk or dropped, an
    unknown field added, or the whole body junk."""
    def apply(body_and_changes):
        body, changes = body_and_changes
        body = dict(body)
        for name, value in changes:
            if value is DROP:
                body.pop(name, None)
            else:
                body[name] = value
        return body

    names = st.sampled_from(["pipeline_type", "resolution", "steps", "frame_count",
                             "status", "job_id", "started_at", "total_seconds", "batch_size",
                             "guidance_scale", "phases", "extra_params", "unknown"])
    changes = st.lists(st.tuples(names, st.one_of(junk, st.just(DROP))), min_size=1,
                       max_size=2)
    return st.one_of(valid, st.tuples(valid, changes).map(apply), junk)


text = st.text(max_size=64)
resolutions = st.one_of(st.builds("{}x{}".format, st.integers(1, 8192), st.integers(1, 8192)),
                        st.sampled_from(["768x768", "512X512", " 64 × 64 "]))
offsets = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)),
                    st.integers(-12 * 60, 14 * 60))
timestamps = st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30),
                          timezones=st.one_of(st.none(), offsets)).map(datetime.isoformat)
valid_estimates = st.fixed_dictionaries(
    {"pipeline_type": st.sampled_from(["image", "video"]), "resolution": resolutions,
     "steps": st.integers(1, 1000)},
    optional={"frame_count": st.integers(1, 10_000), "job_type": text,
              "guidance_scale": st.floats(0, 100), "batch_size": st.integers(1, 1024),
              "sampler": text, "model_name": text, "gpu_name": text})
valid_records = st.fixed_dictionaries(
    {"job_id": st.text(min_size=1, max_size=200),
     "pipeline_type": st.sampled_from(["image", "video"]),
     "status": st.sampled_from(["success", "failed", "cancelled", "queued", "running",
                                "completed", "error"]),
     "resolution": resolutions, "steps": st.integers(1, 1000), "started_at": timestamps,
     "total_seconds": st.floats(0, 1e6)},
    optional={"frame_count": st.integers(1, 10_000), "finished_at": timestamps,
              "submitted_at": timestamps, "predicted_seconds": st.floats(0, 1e6),
              "gpu_name": text, "hostname": text, "queue_depth": st.integers(0, 1000),
              "gpu_util_avg_pct": st.floats(0, 100), "prompt": text,
              "extra_params": st.dictionaries(text, st.one_of(text, st.integers(),
                                                              st.floats(-1e9, 1e9))),
              "phases": st.lists(st.fixed_dictionaries(
                  {"name": st.text(min_size=1, max_size=100)},
                  optional={"seconds": st.floats(0, 1e5), "started_at": timestamps}),
                  max_size=3)})
estimate_bodies = mutated(valid_estimates)
record_bodies = st.one_of(mutated(valid_records), st.lists(mutated(valid_records), max_size=4))


def _post_raw(client, path: str, body) -> httpx.Response:
    # json.dumps, unlike httpx, lets NaN and infinities through, as a careless client would.
    return client.post(path, content=json.dumps(body), headers={"Content-Type":
                                                                "application/json"})


@FUZZ
@given(body=estimate_bodies)
def test_fuzzed_estimates_are_never_a_server_error(in_process, body):
    assert _post_raw(in_process, f"{API}/estimate-time", body).status_code in (200, 422)


@FUZZ
@given(body=record_bodies)
def test_fuzzed_records_are_stored_or_refused_never_spooled(scratch, body):
    assert _post_raw(scratch, f"{API}/record-metrics", body).status_code in (200, 422)


@hypothesis_settings(max_examples=100, deadline=None, database=None)
@given(path=st.sampled_from(["trends", "alerts", "weekly-report", "retrain/x",
                             "alerts/1/acknowledge"]),
       params=st.dictionaries(st.sampled_from(["days_back", "pipeline_type", "severity",
                                               "acknowledged", "weeks_back", "format"]),
                              st.one_of(st.text(max_size=8), st.integers(-10, 1000)),
                              max_size=3))
def test_fuzzed_queries_are_never_a_server_error(scratch, path, params):
    method = scratch.post if path.endswith("acknowledge") else scratch.get
    assert method(f"{API}/{path}", params=params).status_code < 500


# -- starting the service ------------------------------------------------------------------------
def test_refuses_a_public_address_without_a_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERFLIB_API_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--host", "0.0.0.0", "--port", str(free_port())])
    assert "PERFLIB_API_TOKEN" in str(exited.value.code)
    env = {k: v for k, v in os.environ.items() if k != "PERFLIB_API_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "perflib.serve", "--host", "0.0.0.0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "refusing to bind 0.0.0.0" in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True),
                                            ("::1", True), ("127.0.0.2", True),
                                            ("0.0.0.0", False), ("10.0.0.5", False),
                                            ("render-01.example.com", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


# -- the dashboard page in a headless browser --------------------------------------------------
def test_dashboard_page_shows_the_four_numbers(live_server, tmp_path):
    if not Path(CHROMIUM).exists():
        missing_program(f"{CHROMIUM} not installed (apt-get install chromium)")

    def system_status() -> dict:
        return httpx.get(f"{live_server}{API}/dashboard").json()["system_status"]

    before = system_status()
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=5000", "--dump-dom", f"{live_server}/dashboard"],
        capture_output=True, text=True, timeout=60).stdout
    after = system_status()  # a job may leave the 24-hour window meanwhile

    def shown(element_id: str) -> str:
        match = re.search(rf'id="{element_id}">([^<]*)<', dom)
        assert match, f"#{element_id} not in the page:\n{dom[:2000]}"
        return match.group(1)

    for element_id, text in (("jobs-24h", "{jobs_24h:,}"), ("queued-jobs", "{queued_jobs:,}"),
                             ("success-rate-24h", "{rate:.1f}%")):
        assert shown(element_id) in {text.format(**status, rate=status["success_rate_24h"] * 100)
                                     for status in (before, after)}
    assert re.fullmatch(r"\d+(\.\d)? (s|min)", shown("avg-generation-time"))
    assert dom.count('class="bar"') == 24


def test_concurrent_estimates_share_model_passes(tmp_path):
    """Dynamic batching: concurrent requests go through the model together, each getting the
    answer it would have got alone, and a bad request fails alone."""
    import asyncio

    from perflib.prediction.predictor import PerformancePredictor
    from perflib.serve.estimator import EstimateBatcher

    predictor = PerformancePredictor(Store(f"sqlite:///{tmp_path / 'b.db'}",
                                           Settings(spool_dir=tmp_path)))
    calls = []
    original = predictor.estimate_many

    def counting(requests, as_of=None):
        calls.append(len(requests))
        return original(requests, as_of)

    predictor.estimate_many = counting
    requests = [{"pipeline_type": "video", "resolution": "512x512", "frame_count": 8 + n,
                 "steps": 20} for n in range(12)] + [{"pipeline_type": "audio"}]
    batcher = EstimateBatcher(predictor)

    async def everyone():
        return await asyncio.gather(*(batcher.estimate(r) for r in requests),
                                    return_exceptions=True)

    answers = asyncio.run(everyone())
    assert sum(calls) == len(requests) and len(calls) < len(requests)
    for request, answer in zip(requests[:-1], answers[:-1]):
        assert answer == predictor.estimate(request)
    assert isinstance(answers[-1], ValueError) and "pipeline_type" in str(answers[-1])
