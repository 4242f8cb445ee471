"""Writes a web page could forge, retraining that cannot be flooded, and reads that never write."""
from __future__ import annotations

import threading
import time
import warnings
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from perflib.config import Settings, get_settings
from perflib.ops.alerts import save_alerts
from perflib.serve import create_app
from perflib.serve.retrain import RetrainLimited, RetrainTasks
from perflib.sim.simulate import default_incidents, simulate_history
from perflib.store import Store
from perflib.store.schema import metadata

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
ESTIMATE = {"pipeline_type": "image", "resolution": "512x512", "steps": 20}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _client(url: str, tmp_path, base_url: str = "http://127.0.0.1", **settings) -> TestClient:
    app = create_app(url, Settings(spool_dir=tmp_path / "spool", **settings))
    return TestClient(app, base_url=base_url)


def _open_alert(store: Store) -> int:
    alert = {"alert_type": "queue_backlog", "pipeline_type": "video", "severity": "high",
             "message": "video jobs wait", "evidence": {}, "fingerprint": "queue_backlog|video|"}
    return save_alerts(store, [alert], datetime.now(timezone.utc))[0]["id"]


def _row_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table))
                .scalar_one() for table in metadata.sorted_tables}


# -- cross-site writes ------------------------------------------------------------------------
def test_form_posts_are_refused_without_a_token(sqlite_url, tmp_path):
    client = _client(sqlite_url, tmp_path)
    services = client.app.state.services
    training = GatedTraining()
    training.gate.set()
    services.retrain = RetrainTasks(services.store, lambda: None, train=training)
    store = services.store
    store.init_db()
    alert_id = _open_alert(store)
    forms = [("retrain", {"data": {"pipeline_type": "video"}}),
             (f"alerts/{alert_id}/acknowledge", {"data": {"confirm": "yes"}}),
             ("record-metrics", {"data": {"job_id": "forged"}}),
             ("estimate-time", {"content": '{"pipeline_type": "image"}',
                                "headers": {"Content-Type": "text/plain;charset=UTF-8"}}),
             (f"alerts/{alert_id}/acknowledge", {"content": b"", "headers": FORM})]
    for path, request in forms:
        answer = client.post(f"{API}/{path}", **request)
        assert answer.status_code == 415, (path, answer.text)
        assert "application/json" in answer.json()["detail"]
    assert [a["id"] for a in client.get(f"{API}/alerts",
                                       params={"acknowledged": "false"}).json()["alerts"]] \
        == [alert_id]
    assert store.count() == 0
    # A body sent without any Content-Type is not JSON either.
    assert client.post(f"{API}/retrain", content=b"pipeline_type=video",
                       headers={"Content-Type": ""}).status_code == 415
    # Only the JSON request below ever reached the trainer.
    task = client.post(f"{API}/retrain", json={"pipeline_type": "image"}).json()
    assert _wait_finished(client, task["task_id"])["status"] == "succeeded"
    assert training.calls == ["image"]


def test_json_and_bodiless_writes_still_work(sqlite_url, tmp_path):
    client = _client(sqlite_url, tmp_path)
    store = client.app.state.services.store
    store.init_db()
    alert_id = _open_alert(store)
    assert client.post(f"{API}/estimate-time", json=ESTIMATE).status_code == 200
    assert client.post(f"{API}/estimate-time", content=b'{"pipeline_type": "image", '
                       b'"resolution": "512x512", "steps": 20}',
                       headers={"Content-Type": "Application/JSON; charset=utf-8"}
                       ).status_code == 200
    assert client.post(f"{API}/alerts/{alert_id}/acknowledge").status_code == 200  # curl -X POST


@pytest.mark.parametrize("origin, allowed", [
    ("https://evil.example", False), ("null", False), ("http://127.0.0.1.evil.example", False),
    ("http://localhost.evil.example:8328", False), ("http://perflib.example.evil.example", False),
    ("http://perflib.example", True), ("http://127.0.0.1:3000", True),
    ("http://localhost:8080", True), ("http://[::1]:8328", True)])
def test_writes_from_another_sites_pages_are_refused(sqlite_url, tmp_path, origin, allowed):
    client = _client(sqlite_url, tmp_path, base_url="http://perflib.example", api_token="s3cret",
                     allowed_hosts=("perflib.example",))
    headers = {"Origin": origin, "Authorization": "Bearer s3cret"}
    estimate = client.post(f"{API}/estimate-time", json=ESTIMATE, headers=headers)
    acknowledge = client.post(f"{API}/alerts/1/acknowledge", headers=headers)  # no-cors fetch
    if allowed:
        assert estimate.status_code == 200 and acknowledge.status_code == 404
    else:
        assert estimate.status_code == acknowledge.status_code == 403, estimate.text
        assert "another site" in acknowledge.json()["detail"]
    assert client.get(f"{API}/dashboard", headers={"Origin": origin}).status_code == 200


# -- DNS rebinding: only this service's Host names ---------------------------------------------
REBOUND = {"Host": "rebind.evil:8328", "Origin": "http://rebind.evil:8328"}


def test_a_rebound_name_neither_writes_nor_reads(sqlite_url, tmp_path):
    client = _client(sqlite_url, tmp_path)
    store = client.app.state.services.store
    store.init_db()
    record = {"job_id": "rebound", "pipeline_type": "image", "status": "success",
              "started_at": datetime.now(timezone.utc).isoformat(), "total_seconds": 3.0}
    answer = client.post(f"{API}/record-metrics", json=record, headers=REBOUND)
    assert answer.status_code == 400
    assert "PERFLIB_ALLOWED_HOSTS" in answer.json()["detail"]
    for path in (f"{API}/dashboard", f"{API}/alerts", "/metrics", "/dashboard", "/healthz"):
        assert client.get(path, headers={"Host": "rebind.evil:8328"}).status_code == 400, path
    assert store.count() == 0
    assert client.post(f"{API}/record-metrics", json=record).status_code == 200  # 127.0.0.1
    assert store.count() == 1


@pytest.mark.parametrize("host, known", [
    ("127.0.0.1:8328", True), ("localhost:8328", True), ("LOCALHOST", True), ("[::1]:8328", True),
    ("10.1.2.3:8328", True), ("[fe80::1]:8328", True),  # an address cannot be rebound
    ("perflib.internal:8328", True), ("gpu-7.fleet.example", True), ("fleet.example", False),
    ("localhost.evil", False), ("127.0.0.1.evil", False), ("rebind.evil", False), ("", False),
    ("[::1", False), ("a" * 300, False)])
def test_known_hosts(sqlite_url, tmp_path, host, known):
    client = _client(sqlite_url, tmp_path, allowed_hosts=("perflib.internal", "*.fleet.example"))
    answer = client.get("/healthz", headers={"Host": host})
    assert (answer.status_code == 200) is known, answer.text
    assert len(answer.text) < 300  # a long Host is not echoed whole


def test_the_bound_name_and_configured_names_are_known(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFLIB_ALLOWED_HOSTS", " Perflib.Internal , *.fleet.example,")
    assert get_settings().allowed_hosts == ("perflib.internal", "*.fleet.example")
    client = _client(sqlite_url, tmp_path, host="gpu-box.lan")
    assert client.get("/healthz", headers={"Host": "gpu-box.lan:8328"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "other-box.lan:8328"}).status_code == 400


# -- retraining: one per pipeline, a bounded rate ------------------------------------------------
class GatedTraining:
    """A training that waits for the test to let it finish, so a task stays running."""

    def __init__(self):
        self.gate = threading.Event()
        self.calls: list[str | None] = []

    def __call__(self, pipeline_type, model_type) -> dict:
        self.calls.append(pipeline_type)
        assert self.gate.wait(30)
        return {"model_type": model_type, "version": len(self.calls)}


def _wait_finished(client: TestClient, task_id: str) -> dict:
    deadline = time.monotonic() + 30
    while (state := client.get(f"{API}/retrain/{task_id}").json())["status"] in ("queued",
                                                                                   "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def test_a_repeated_retrain_returns_the_running_task(sqlite_url, tmp_path):
    with _client(sqlite_url, tmp_path) as client:
        services = client.app.state.services
        training = GatedTraining()
        services.retrain = RetrainTasks(services.store, lambda: None, train=training)
        try:
            first = client.post(f"{API}/retrain", json={"pipeline_type": "video"})
            again = client.post(f"{API}/retrain", json={"pipeline_type": "video",
                                                        "model_type": "random_forest"})
            other = client.post(f"{API}/retrain", json={"pipeline_type": "image"})
            assert first.status_code == 202 and again.status_code == 200
            assert again.json()["task_id"] == first.json()["task_id"]
            assert again.json()["status"] in ("queued", "running")
            assert other.status_code == 202 and other.json()["task_id"] != first.json()["task_id"]
        finally:
            training.gate.set()
        assert _wait_finished(client, first.json()["task_id"])["status"] == "succeeded"
        assert _wait_finished(client, other.json()["task_id"])["status"] == "succeeded"
        assert training.calls == ["video", "image"]
        later = client.post(f"{API}/retrain", json={"pipeline_type": "video"})
        assert later.status_code == 202 and later.json()["task_id"] != first.json()["task_id"]


def test_retrains_beyond_the_rate_are_429_with_retry_after(sqlite_url, tmp_path):
    with _client(sqlite_url, tmp_path, retrain_limit=2,
                 retrain_window_seconds=600.0) as client:
        services = client.app.state.services
        assert (services.retrain.limit, services.retrain.window_seconds) == (2, 600.0)
        training = GatedTraining()
        services.retrain = RetrainTasks(services.store, lambda: None, limit=2,
                                        window_seconds=600.0, train=training)
        try:
            started = [client.post(f"{API}/retrain", json={"pipeline_type": pipeline})
                       for pipeline in ("image", "video")]
            assert [answer.status_code for answer in started] == [202, 202]
            # Asking again for a running one is not a new training: still answered.
            assert client.post(f"{API}/retrain", json={"pipeline_type": "image"}
                               ).status_code == 200
            refused = client.post(f"{API}/retrain", json={"pipeline_type": None})
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 600
            assert "at most 2" in refused.json()["detail"]
        finally:
            training.gate.set()
        for answer in started:
            assert _wait_finished(client, answer.json()["task_id"])["status"] == "succeeded"
        assert training.calls == ["image", "video"]


def test_the_rate_window_slides(sqlite_url):
    tasks = RetrainTasks(Store(sqlite_url), lambda: None, limit=1, window_seconds=0.5,
                         train=lambda pipeline, family: {"model_type": family, "version": 1})
    try:
        first, created = tasks.submit("image", "auto")
        assert created
        deadline = time.monotonic() + 10
        while tasks.get(first.task_id).status != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RetrainLimited) as refused:
            tasks.submit("image", "auto")
        assert refused.value.retry_after_seconds == 1
        time.sleep(0.6)
        assert tasks.submit("image", "auto")[1]
    finally:
        tasks.shutdown()


# -- reads never write ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def incident_store(tmp_path_factory) -> Store:
    """Three weeks ending now, with planted incidents that call for alerts."""
    folder = tmp_path_factory.mktemp("incidents")
    store = Store(f"sqlite:///{folder / 'perflib.db'}", Settings(spool_dir=folder / "spool"))
    end = datetime.now(timezone.utc)
    simulate_history(store, weeks=3, gpus=2, seed=1, end=end, jobs_per_day=80,
                     incidents=default_incidents(end.date(), 3))
    return store


def test_alerts_and_the_report_only_read(incident_store, tmp_path):
    client = TestClient(base_url="http://127.0.0.1", app=create_app(incident_store))
    before = _row_counts(incident_store)
    for params in ({}, {"severity": "high"}, {"acknowledged": "false"}):
        assert client.get(f"{API}/alerts", params=params).status_code == 200
    report = client.get(f"{API}/weekly-report", params={"weeks_back": 1})
    assert report.status_code == 200
    assert report.json()["alerts"], "the planted incidents call for alerts"
    assert _row_counts(incident_store) == before
