"""The autoscaling signal: desired GPUs by hand and against the FIFO simulation, the gauges
per pool on /metrics for a known backlog, and the example manifests in deploy/autoscaling
(valid YAML whose PromQL names only metrics and labels /metrics has)."""
from __future__ import annotations

import math
import re
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from perflib.config import Thresholds
from perflib.queue import autoscale
from perflib.queue.autoscale import UNASSIGNED, desired_gpus, pool_signals
from perflib.queue.fifo import queue_starts
from perflib.serve import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
A100 = "NVIDIA A100-SXM4-80GB"
RTX = "NVIDIA GeForce RTX 4090"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "autoscaling"
DOWN_URL = "postgresql://perflib:hunter2@127.0.0.1:9/perflib"
SIGNALS = ("perflib_backlog_predicted_seconds", "perflib_desired_gpus", "perflib_pool_gpus")


def live_job(job_id: str, status: str, pipeline: str, predicted: float | None,
             gpu_name: str | None = None, seconds_ago: float = 0.0, **fields) -> dict:
    """A queued or running job as a pipeline posts it (running: started `seconds_ago`)."""
    at = (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat()
    record = {"job_id": job_id, "pipeline_type": pipeline, "status": status,
              "resolution": "512x512", "steps": 20, "submitted_at": at, "hostname": "render-01"}
    if status == "running":
        record["started_at"] = at
    if predicted is not None:
        record["predicted_seconds"] = predicted
    if gpu_name is not None:
        record["gpu_name"] = gpu_name
    return {**record, **fields}


def finished(job: dict, seconds: float = 30.0) -> dict:
    """The same job, reported done."""
    started = datetime.fromisoformat(job.get("started_at", job["submitted_at"]))
    return {**job, "status": "success", "started_at": started.isoformat(),
            "total_seconds": seconds,
            "finished_at": (started + timedelta(seconds=seconds)).isoformat()}


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    """The autoscaling gauges: {name: {(pipeline_type, gpu_name): value}}."""
    found = {name: {} for name in SIGNALS}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][(sample.labels["pipeline_type"],
                                    sample.labels["gpu_name"])] = sample.value
    return found


@pytest.fixture
def client(sqlite_url, settings):
    with TestClient(base_url="http://127.0.0.1", app=create_app(sqlite_url, settings)) as client:
        yield client


@pytest.fixture
def any_client(db_url, settings):
    """A service on SQLite, then on PostgreSQL."""
    with TestClient(base_url="http://127.0.0.1", app=create_app(db_url, settings)) as client:
        yield client


# -- desired GPUs --------------------------------------------------------------------------------
@pytest.mark.parametrize("running, queued, target, gpus", [
    # 2 GPUs: both free at 10 s, the queue's last pair starts at 50 s; 3 GPUs: the third takes
    # jobs from 0 s, and the last two start at 30 s — within the 30 s target.
    ([10.0, 10.0], [20.0] * 6, 30.0, 3),
    ([], [], 30.0, 0),  # no live work: scale to zero
    ([5.0], [], 30.0, 1),
    ([5.0, 5.0, 500.0], [], 30.0, 3),  # never fewer than the jobs running
    ([], [20.0] * 6, 30.0, 3),  # 0, 0, 0, then 20 s
    ([], [20.0] * 6, 19.0, 6),  # a second round would start at 20 s: one GPU each
    ([60.0], [50.0, 50.0], 30.0, 3),
    ([-40.0], [10.0], 30.0, 1),  # overran its estimate: its GPU counts as free now
])
def test_desired_gpus_by_hand(running, queued, target, gpus):
    assert desired_gpus(running, queued, target) == gpus


@pytest.mark.parametrize("target", [0.0, -30.0, float("nan")])
def test_a_target_wait_that_is_not_positive_is_refused_by_name(target):
    with pytest.raises(ValueError, match="target_wait_seconds"):
        desired_gpus([10.0], [20.0], target)


@hypothesis_settings(max_examples=150, deadline=None, database=None)
@given(running=st.lists(st.floats(0, 600), max_size=6),
       queued=st.lists(st.floats(0, 600), max_size=30),
       target=st.floats(1, 300))
def test_desired_gpus_is_the_fewest_that_meet_the_target(running, queued, target):
    gpus = desired_gpus(running, queued, target)
    if not running and not queued:
        assert gpus == 0
        return
    floor = max(1, len(running))
    bound = max(floor, math.ceil((sum(running) + sum(queued)) / target))
    assert floor <= gpus <= bound

    def last_start(n: int) -> float:
        return queue_starts(running, queued, n)[-2] if queued else 0.0

    assert last_start(gpus) <= target + 1e-6
    if gpus > floor:
        assert last_start(gpus - 1) > target


def test_a_huge_backlog_takes_the_closed_form_bound(monkeypatch):
    monkeypatch.setattr(autoscale, "MAX_SIMULATED_JOBS", 5)
    # Simulated, 3 GPUs would do; above the cap the answer is ceil(120 s / 30 s).
    assert desired_gpus([], [20.0] * 6, 30.0) == 4
    assert desired_gpus([], [20.0] * 5, 30.0) == 3  # at the cap it still simulates (bound: 4)


def test_a_pipeline_never_seen_on_a_gpu_is_the_unassigned_pool():
    live = pd.DataFrame({"pipeline_type": ["image"] * 3, "gpu_name": [None] * 3,
                         "status": ["queued"] * 3, "hostname": [None] * 3,
                         "gpu_index": [None] * 3, "started_at": [None] * 3})
    recent = pd.DataFrame(columns=["pipeline_type", "gpu_name", "hostname", "gpu_index"])
    [signal] = pool_signals(live, pd.Series([20.0, 40.0, 30.0]).to_numpy(), recent, 30.0)
    assert (signal.pipeline_type, signal.gpu_name) == ("image", UNASSIGNED)
    # One GPU would start the third job at 60 s; two start it at 20 s.
    assert (signal.backlog_seconds, signal.desired_gpus, signal.gpus) == (90.0, 2, 0)


def test_unpinned_jobs_join_the_pipeline_pool_with_the_most_gpus():
    recent = pd.DataFrame({"pipeline_type": ["image"] * 3, "gpu_name": [RTX, A100, A100],
                           "hostname": ["a", "b", "b"], "gpu_index": [0, 0, 1]})
    live = pd.DataFrame({"pipeline_type": ["image"], "gpu_name": [None], "status": ["queued"],
                         "hostname": [None], "gpu_index": [None], "started_at": [None]})
    signals = {s.gpu_name: s for s in pool_signals(live, pd.Series([50.0]).to_numpy(), recent,
                                                   30.0)}
    assert signals[A100].backlog_seconds == 50.0 and signals[A100].gpus == 2
    assert RTX not in signals  # no live work there


# -- the gauges on /metrics ----------------------------------------------------------------------
def known_backlog() -> list[dict]:
    """Two pools' live jobs, as of now."""
    image = [  # on A100s: two 30 s jobs 20 s in (10 s left each), six 20 s jobs naming no GPU
        *[live_job(f"img-run-{n}", "running", "image", 30.0, A100, seconds_ago=20, gpu_index=n)
          for n in range(2)],
        *[live_job(f"img-q-{n}", "queued", "image", 20.0) for n in range(6)]]
    video = [  # on a 4090: a 100 s job 40 s in; a 50 s job pinned to the 4090, one naming none
        live_job("vid-run", "running", "video", 100.0, RTX, seconds_ago=40,
                 hostname="render-02", gpu_index=0),
        live_job("vid-pinned", "queued", "video", 50.0, RTX),
        live_job("vid-any", "queued", "video", 50.0)]
    return image + video


def test_metrics_show_backlog_and_desired_gpus_per_pool(any_client):
    client = any_client
    posted = time.monotonic()
    backlog = known_backlog()
    assert client.post(f"{API}/record-metrics", json=backlog).status_code == 200
    signals = scrape(client)
    elapsed = time.monotonic() - posted  # the running jobs ran on meanwhile
    image, video = ("image", A100), ("video", RTX)
    assert set(signals["perflib_desired_gpus"]) == {image, video}
    # 2 × 10 s left + 6 × 20 s queued.
    assert 140 - 2 * elapsed - 0.01 <= signals["perflib_backlog_predicted_seconds"][image] <= 140
    assert signals["perflib_desired_gpus"][image] == 3  # as by hand above
    assert signals["perflib_pool_gpus"][image] == 2
    # 60 s left + 50 + 50; with 2 GPUs the second queued job would wait 50 s, with 3 none does.
    assert 160 - elapsed - 0.01 <= signals["perflib_backlog_predicted_seconds"][video] <= 160
    assert signals["perflib_desired_gpus"][video] == 3
    assert signals["perflib_pool_gpus"][video] == 1

    # Everything done, each queued job on GPU 0 of its pool's host: with no live work left the
    # pools leave /metrics (a scaler's query reads that as 0, see keda-scaledobject.yaml).
    gpu_zero = {"image": {"hostname": "render-01", "gpu_name": A100, "gpu_index": 0},
                "video": {"hostname": "render-02", "gpu_name": RTX, "gpu_index": 0}}
    done = [finished(job if job["status"] == "running"
                     else {**job, **gpu_zero[job["pipeline_type"]]}) for job in backlog]
    assert client.post(f"{API}/record-metrics", json=done).status_code == 200
    assert scrape(client) == {name: {} for name in SIGNALS}


def test_a_pool_leaves_metrics_once_its_work_is_gone(client):
    queued = [live_job(f"q-{n}", "queued", "image", 20.0) for n in range(2)]
    assert client.post(f"{API}/record-metrics", json=queued).status_code == 200
    pool = ("image", UNASSIGNED)  # no image job has run on a known GPU
    assert scrape(client)["perflib_desired_gpus"] == {pool: 1.0}
    cancelled = [{**finished(job, 0.0), "status": "cancelled"} for job in queued]  # on no GPU
    assert client.post(f"{API}/record-metrics", json=cancelled).status_code == 200
    assert scrape(client) == {name: {} for name in SIGNALS}


def test_an_empty_store_reports_no_pool(client):
    assert scrape(client) == {name: {} for name in SIGNALS}


def test_a_job_posted_without_an_estimate_is_priced_by_the_model(client):
    job = live_job("unpriced", "queued", "image", None, A100)
    assert client.post(f"{API}/record-metrics", json=job).status_code == 200
    estimate = client.post(f"{API}/estimate-time", json={
        "pipeline_type": "image", "resolution": "512x512", "steps": 20}).json()
    backlog = scrape(client)["perflib_backlog_predicted_seconds"][("image", A100)]
    assert backlog == pytest.approx(estimate["predicted_time_seconds"], rel=0.05)


def test_with_the_database_down_the_signal_is_absent_not_an_error(settings):
    with TestClient(base_url="http://127.0.0.1", app=create_app(DOWN_URL, settings)) as down:
        answer = down.get("/metrics")
    assert answer.status_code == 200 and "perflib_database_up 0.0" in answer.text
    assert not re.search(r"^perflib_desired_gpus\{", answer.text, re.MULTILINE)


def test_a_target_wait_that_is_not_positive_stops_the_service_at_start(sqlite_url, settings):
    bad = settings.with_overrides(thresholds=Thresholds(queue_seconds=0.0))
    with pytest.raises(ValueError, match="PERFLIB_THRESHOLD_QUEUE_SECONDS"):
        create_app(sqlite_url, bad)


# -- the manifests -------------------------------------------------------------------------------
QUERY_KEYS = {"query", "seriesQuery", "metricsQuery"}
SELECTOR = re.compile(r"(perflib_\w+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def manifests() -> dict[str, list]:
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(DEPLOY.glob("*.yaml"))}


def strings_under(node, keys: set[str]):
    """Every string value under one of `keys`, anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from strings_under(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from strings_under(item, keys)


def test_every_manifest_is_valid_yaml_with_a_kind_or_rules():
    parsed = manifests()
    assert {"keda-scaledobject.yaml", "prometheus-adapter-rules.yaml", "hpa.yaml"} <= set(parsed)
    for name, docs in parsed.items():
        assert docs, f"{name} is empty"
        for doc in docs:
            assert "kind" in doc or "externalRules" in doc, name


def test_keda_scales_to_the_desired_gpus_not_a_multiple_of_the_current_count():
    [scaled] = manifests()["keda-scaledobject.yaml"]
    [trigger] = scaled["spec"]["triggers"]
    # AverageValue: replicas = value ÷ threshold; Value would multiply the current replicas.
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert float(trigger["metadata"]["threshold"]) == 1.0
    assert "perflib_desired_gpus" in trigger["metadata"]["query"]


def test_the_hpa_reads_the_metric_the_adapter_exposes():
    [config] = manifests()["prometheus-adapter-rules.yaml"]
    exposed = {rule["name"]["as"] for rule in config["externalRules"]}
    for rule in config["externalRules"]:
        assert rule["resources"]["namespaced"] is False  # perflib's gauges carry no namespace
    [hpa] = manifests()["hpa.yaml"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] in exposed
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_the_queries_name_only_metrics_and_labels_that_metrics_has(client):
    assert client.post(f"{API}/record-metrics", json=known_backlog()).status_code == 200
    samples = [sample for family in text_string_to_metric_families(client.get("/metrics").text)
               for sample in family.samples]
    queries = [query for docs in manifests().values() for doc in docs
               for query in strings_under(doc, QUERY_KEYS)]
    selectors = [match for query in queries for match in SELECTOR.findall(query)]
    assert len(selectors) >= 3, queries  # KEDA's query, the adapter's series and metrics query
    for name, matchers in selectors:
        series = [s for s in samples if s.name == name]
        assert series, f"{name} is not on /metrics"
        for label, operator, value in MATCHER.findall(matchers):
            assert any(label in s.labels for s in series), f"{name} has no label {label}"
            if operator == "=":
                assert any(s.labels.get(label) == value for s in series), (name, label, value)
    for query in queries:
        for group in BY.findall(query):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert any(label in s.labels for s in samples if s.name in SIGNALS), label
