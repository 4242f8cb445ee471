"""One live state, three faces: estimate-time's queue ETA, the live dashboard's timeline and the
autoscaling gauges on /metrics come from the same snapshot (perflib.queue.snapshot), so they
agree on the jobs ahead, the GPUs, each job's predicted seconds (those posted without an
estimate priced once, alike) and what the running jobs have left."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from perflib.queue.autoscale import desired_gpus
from perflib.queue.fifo import queue_starts
from perflib.serve import create_app
from tests.test_autoscale import TestClient, scrape

API = "/api/anime/performance"
A100 = "NVIDIA A100-SXM4-80GB"
HOST = "render-01"
POOL = ("image", A100)
DRIFT = 1.0  # seconds the running jobs may run on between the three reads


def job(job_id: str, status: str, predicted: float | None, seconds_ago: float = 0.0,
        gpu_index: int | None = None) -> dict:
    """An image job on the A100 host as a pipeline posts it (`predicted` None: no estimate)."""
    at = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    record = {"job_id": job_id, "pipeline_type": "image", "status": status,
              "resolution": "512x512", "steps": 20, "submitted_at": at.isoformat()}
    if status != "queued":
        record.update(hostname=HOST, gpu_name=A100, gpu_index=gpu_index,
                      started_at=at.isoformat())
    if status == "success":
        record.update(total_seconds=30.0, finished_at=(at + timedelta(seconds=30)).isoformat())
    if predicted is not None:
        record["predicted_seconds"] = predicted
    return record


def live_state() -> list[dict]:
    """Three GPUs that ran jobs lately; two running jobs (one without an estimate) and four
    queued (one without an estimate), none naming its GPU yet."""
    history = [job(f"done-{n}", "success", 30.0, seconds_ago=600, gpu_index=n) for n in range(3)]
    running = [job("run-0", "running", 100.0, seconds_ago=30, gpu_index=0),
               job("run-1", "running", None, seconds_ago=5, gpu_index=1)]
    queued = [job("q-0", "queued", 50.0), job("q-1", "queued", None),
              job("q-2", "queued", 200.0), job("q-3", "queued", 40.0)]
    return [*history, *running, *queued]


def three_faces(client) -> tuple[dict, dict, dict]:
    """The live state posted, then the dashboard, estimate-time's queue and the gauges."""
    assert client.post(f"{API}/record-metrics", json=live_state()).status_code == 200
    # A card that reports readings but ran no job lately is shown, not counted in the queue.
    beat = {"hostname": HOST, "gpu_index": 3, "gpu_name": A100, "gpu_util_pct": 0.0}
    assert client.post(f"{API}/heartbeat", json=beat).status_code == 200
    board = client.get(f"{API}/dashboard/live").json()
    eta = client.post(f"{API}/estimate-time", json={
        "pipeline_type": "image", "resolution": "512x512", "steps": 20}).json()["queue"]
    return board, eta, scrape(client)


def test_eta_dashboard_and_metrics_come_from_the_same_numbers(db_url, settings):
    with TestClient(base_url="http://127.0.0.1", app=create_app(db_url, settings)) as client:
        board, eta, metrics = three_faces(client)
    running = [run for lane in board["gpus"] for run in lane["running"]]
    left = [max(0.0, run["predicted_seconds"] - run["elapsed_seconds"]) for run in running]
    queued = [queued["predicted_seconds"] for queued in board["queue"]]
    assert len(running) == 2 and len(queued) == 4 and all(s > 0 for s in queued)
    assert len(board["gpus"]) == 4  # the heartbeat's lane is drawn

    # The same jobs and GPUs: 3 GPUs ran jobs lately (the one fleet rule, for every face).
    assert eta["jobs_ahead"] == len(running) + len(queued) == 6
    assert eta["gpus"] == board["queue_gpus"] == metrics["perflib_pool_gpus"][POOL] == 3
    # The dashboard's timeline and estimate-time's ETA: one FIFO over the same seconds.
    starts = queue_starts(left, queued, board["queue_gpus"])
    assert [q["expected_start_seconds"] for q in board["queue"]] == pytest.approx(
        starts[:-1], abs=0.2)
    assert eta["expected_start_seconds"] == pytest.approx(starts[-1], abs=DRIFT)
    # /metrics' backlog and desired GPUs: the same seconds, the queued jobs in the A100 pool.
    assert metrics["perflib_backlog_predicted_seconds"][POOL] == pytest.approx(
        sum(left) + sum(queued), abs=2 * DRIFT)
    assert metrics["perflib_desired_gpus"][POOL] == desired_gpus(
        left, queued, settings.thresholds.queue_seconds)


def test_a_live_job_nothing_can_estimate_counts_its_pipelines_median_not_zero(sqlite_url,
                                                                              settings):
    """A row written without its parameters (not through the API): the model cannot price it,
    so it counts the median of its pipeline's recent successful jobs, and estimate-time says
    that price (the ComfyUI node prices its own unestimated prompts with it)."""
    from perflib.prediction.predictor import PerformancePredictor
    from perflib.queue.snapshot import LiveQueue
    from perflib.store import Store

    store = Store(sqlite_url, settings)
    now = datetime.now(timezone.utc)
    done = [{"job_id": f"done-{n}", "pipeline_type": "image", "status": "success",
             "started_at": now - timedelta(seconds=600), "processing_seconds": seconds,
             "finished_at": now - timedelta(seconds=600 - seconds)}
            for n, seconds in enumerate((30.0, 40.0, 50.0))]
    done.append({**done[0], "job_id": "video-0", "pipeline_type": "video",
                 "processing_seconds": 500.0})
    bare = {"job_id": "bare", "pipeline_type": "image", "status": "queued",
            "submitted_at": now}
    store.write_jobs([*done, bare])
    snapshot = LiveQueue(store, PerformancePredictor(store)).snapshot()
    assert [job.job_id for job in snapshot.jobs] == ["bare"]
    assert snapshot.seconds == (40.0,)
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as client:
        eta = client.post(f"{API}/estimate-time", json={
            "pipeline_type": "image", "resolution": "512x512", "steps": 20}).json()["queue"]
    assert eta["unestimated_seconds_each"] == 40.0
    assert eta["expected_start_seconds"] == pytest.approx(40.0)
