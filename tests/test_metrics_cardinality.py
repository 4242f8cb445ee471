"""/metrics stays bounded whatever GPU names are posted: at most POOL_LABEL_CAP pools by name
(the rest summed as gpu_name="other"), and a pool's series go once it has no live work and no
GPU started its jobs lately."""
from __future__ import annotations

import warnings

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from perflib.queue.autoscale import OTHER, POOL_LABEL_CAP, PoolSignal, fold_pools
from perflib.serve import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
POOL_GAUGES = ("perflib_backlog_predicted_seconds", "perflib_desired_gpus", "perflib_pool_gpus")
FLOOD = 300  # distinct GPU names, far over the cap


def queued(job_id: str, gpu_name: str, predicted: float = 20.0) -> dict:
    at = pd.Timestamp.now(tz="UTC").isoformat()
    return {"job_id": job_id, "pipeline_type": "image", "status": "queued",
            "resolution": "512x512", "steps": 20, "submitted_at": at, "gpu_name": gpu_name,
            "predicted_seconds": predicted}


def pool_series(client: TestClient) -> dict[str, dict[str, float]]:
    """{gauge: {gpu_name: value}} of the autoscaling gauges on /metrics."""
    found: dict[str, dict[str, float]] = {name: {} for name in POOL_GAUGES}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][sample.labels["gpu_name"]] = sample.value
    return found


@pytest.fixture
def client(sqlite_url, settings):
    with TestClient(base_url="http://127.0.0.1", app=create_app(sqlite_url, settings)) as client:
        yield client


def test_distinct_gpu_names_fold_into_other_beyond_the_cap(client):
    flood = [queued(f"flood-{n}", f"fake GPU {n}", predicted=10.0 + n) for n in range(FLOOD)]
    assert client.post(f"{API}/record-metrics", json=flood).status_code == 200
    series = pool_series(client)
    for gauge in POOL_GAUGES:
        assert len(series[gauge]) == POOL_LABEL_CAP + 1, gauge  # the cap, plus "other"
    backlog = series["perflib_backlog_predicted_seconds"]
    assert sum(backlog.values()) == pytest.approx(sum(job["predicted_seconds"] for job in flood))
    named = {name for name in backlog if name != OTHER}  # the most work keeps its name
    assert named == {f"fake GPU {n}" for n in range(FLOOD - POOL_LABEL_CAP, FLOOD)}
    assert series["perflib_desired_gpus"][OTHER] == FLOOD - POOL_LABEL_CAP  # one GPU each


def test_a_pool_with_no_live_work_any_more_leaves_metrics(client):
    flood = [queued(f"flood-{n}", f"fake GPU {n}") for n in range(FLOOD)]
    assert client.post(f"{API}/record-metrics", json=flood).status_code == 200
    assert pool_series(client)["perflib_desired_gpus"]
    cancelled = [{**job, "status": "cancelled", "total_seconds": 0.0,
                  "finished_at": job["submitted_at"]} for job in flood]  # never on a GPU
    assert client.post(f"{API}/record-metrics", json=cancelled).status_code == 200
    assert pool_series(client) == {name: {} for name in POOL_GAUGES}


def signal(gpu_name: str, backlog: float, gpus: int, pipeline: str = "image") -> PoolSignal:
    return PoolSignal(pipeline_type=pipeline, gpu_name=gpu_name, backlog_seconds=backlog,
                      desired_gpus=max(1, gpus), gpus=gpus)


def test_pools_with_gpus_keep_their_names_against_a_flood_of_bigger_backlogs():
    real = [signal("A100", 50.0, 4), signal("RTX 4090", 10.0, 1, pipeline="video")]
    flood = [signal(f"fake {n}", 1e6, 0) for n in range(5)]
    folded = fold_pools([*flood, *real], cap=3)
    assert [(s.pipeline_type, s.gpu_name) for s in folded] == [
        ("image", "A100"), ("image", "fake 0"), ("image", OTHER), ("video", "RTX 4090")]
    other = folded[2]
    assert (other.backlog_seconds, other.desired_gpus, other.gpus) == (4e6, 4, 0)


def test_pools_within_the_cap_are_left_as_they_are():
    pools = [signal("A100", 50.0, 4), signal("RTX 4090", 10.0, 1)]
    assert fold_pools(pools, cap=2) == sorted(pools, key=lambda s: s.gpu_name)
