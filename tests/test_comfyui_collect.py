"""The ComfyUI collector against a real HTTP server that answers with the recorded bytes of a
ComfyUI v0.8.0 run: every executed prompt stored exactly once, live queues, down servers."""
from __future__ import annotations

import copy
import csv
import json
import logging
import time
from datetime import datetime, timezone

import pytest

from perflib.cli import main as cli_main
from perflib.comfyui.collect import Collector, ServerPoller, job_id
from perflib.prediction.predictor import PerformancePredictor
from tests.comfyui_server import RECORDINGS, FakeComfyUI, Recording


def derived(recording: Recording) -> dict[str, dict]:
    """derived-timings.csv (the recording's own per-prompt figures), by prompt id."""
    with open(recording.folder / "derived-timings.csv", newline="") as handle:
        return {row["prompt_id"]: row for row in csv.DictReader(handle)}


def replay(recording: Recording, fake: FakeComfyUI, collector: Collector) -> list[int]:
    """Poll once at every recorded queue snapshot, then once more after the run; the live
    jobs seen after each snapshot's poll."""
    live = []
    for snapshot in recording.snapshots:
        fake.at(snapshot)
        collector.poll_once()
        live.append(len(collector.store.live_jobs()))
    fake.history, fake.queue = None, {"queue_running": [], "queue_pending": []}
    collector.poll_once()
    return live


def test_replayed_run_stores_every_executed_prompt_exactly_once(sd15, store):
    with FakeComfyUI(sd15) as fake:
        collector = Collector([fake.url], store)
        live = replay(sd15, fake, collector)
        again = Collector([fake.url], store).poll_once()  # a restarted collector
    jobs = store.jobs_frame().set_index("job_id")
    assert sorted(jobs.index) == sorted(job_id(p) for p in sd15.history)  # 137, once each
    assert again == 0 and store.count() == len(sd15.history)
    assert max(live) >= 8 and live[-1] == 0 and store.live_jobs().empty
    assert jobs.status.value_counts().to_dict() == {"success": 130, "failed": 4, "cancelled": 3}
    # the prompts the server refused (400) got no id and the deleted one never ran: neither is
    # in the store, though the deleted one was seen queued
    deleted = "ab5ad069-d74a-4466-9078-f1757b0e7af9"
    assert job_id(deleted) not in jobs.index
    assert any(item[1] == deleted for s in sd15.snapshots for item in s["queue"]["queue_pending"])
    figures = derived(sd15)
    for prompt_id, row in figures.items():
        job = jobs.loc[job_id(prompt_id)]
        assert job.processing_seconds == pytest.approx(int(row["exec_ms"]) / 1000, abs=1e-6)
        assert job.queue_seconds == pytest.approx(int(row["queue_wait_ms"]) / 1000, abs=1e-6)
        assert (job.hostname, job.gpu_name) == (fake.url.removeprefix("http://"), "cpu")
        comfy = job.extra_params["comfyui"]
        assert comfy["cached_nodes"] == (row["cached_nodes"].split() if row["cached_nodes"]
                                         else [])
        every_node_cached = len(comfy["cached_nodes"]) == 7
        assert comfy["cache_hit"] is every_node_cached
        assert (job.job_type == "comfyui-cache-hit") is every_node_cached
        if row["status"] == "success" and not every_node_cached:
            assert (job.width, job.height, job.steps) == (int(row["width"]), int(row["height"]),
                                                          int(row["steps"]))
    assert (jobs.job_type == "comfyui-cache-hit").sum() == 12
    assert jobs.queue_depth.max() == 8


def test_errors_and_interrupts_are_marked_with_their_node(sd15, sqlite_store):
    with FakeComfyUI(sd15) as fake:
        Collector([fake.url], sqlite_store).poll_once()
    jobs = sqlite_store.jobs_frame().set_index("job_id")
    failed = jobs[jobs.status == "failed"]
    errors = sorted((e["comfyui"]["error_node"]["type"], error_type)
                    for e, error_type in zip(failed.extra_params, failed.error_type))
    assert errors == [("EmptyLatentImage", "RuntimeError"), ("EmptyLatentImage", "RuntimeError"),
                      ("KSampler", "RuntimeError"), ("SaveImage", "Exception")]
    assert failed.error_message.str.contains("outside the output folder").sum() == 1
    alloc = failed[failed.error_message.str.contains("can't allocate memory")]
    assert len(alloc) == 2
    # the graph asked for 16384² × 4096: refused as a parameter, kept with the reason
    invalid = alloc.iloc[0].extra_params["invalid_fields"]
    assert invalid["width"]["value"] == 16384
    cancelled = jobs[jobs.status == "cancelled"]
    assert set(cancelled.error_type) == {"interrupted"}
    assert sorted(e["comfyui"]["error_node"]["type"] for e in cancelled.extra_params) == \
        ["KSampler", "KSampler", "VAEDecode"]


def test_cache_hits_never_train_a_model(sd15, sqlite_store):
    with FakeComfyUI(sd15) as fake:
        Collector([fake.url], sqlite_store).poll_once()
    training = PerformancePredictor(sqlite_store).training_data()
    assert len(training) == 118  # the computed successes
    assert not training.job_type.eq("comfyui-cache-hit").any()
    assert not any(e["comfyui"]["cache_hit"] for e in training.extra_params)


def test_the_first_prompt_pays_the_model_load_and_says_so(sd15, sqlite_store):
    with FakeComfyUI(sd15) as fake:
        Collector([fake.url], sqlite_store).poll_once()
    jobs = sqlite_store.jobs_frame()
    loaded = [e["comfyui"]["model_loaded"] for e in jobs.extra_params]
    assert loaded[0] is False and all(loaded[1:])


def test_running_and_pending_prompts_are_live_jobs_estimated_by_their_graphs(sd15, store):
    busiest = max(sd15.snapshots, key=lambda s: len(s["queue"]["queue_pending"]))
    with FakeComfyUI(sd15) as fake:
        fake.at(busiest)
        Collector([fake.url], store).poll_once()
    live = store.live_jobs().set_index("job_id")
    queue = busiest["queue"]
    assert sorted(live.index) == sorted(job_id(item[1]) for item in
                                        queue["queue_running"] + queue["queue_pending"])
    running = live[live.status == "running"]
    assert list(running.index) == [job_id(item[1]) for item in queue["queue_running"]]
    for item in queue["queue_pending"]:
        job = live.loc[job_id(item[1])]
        latent = item[2]["5"]["inputs"]
        assert (job.status, job.width, job.height, job.batch_size) == \
            ("queued", latent["width"], latent["height"], latent["batch_size"])
        assert job.steps == item[2]["3"]["inputs"]["steps"]
        assert job.submitted_at == datetime.fromtimestamp(item[3]["create_time"] / 1000,
                                                          timezone.utc)
    # what the service's queue ETA reads: an estimate for each, from its parameters
    predicted = PerformancePredictor(store).estimate_batch(live.reset_index(), "image")
    assert (predicted.predicted_time_seconds > 0).all()


def test_queue_wait_falls_back_to_when_the_prompt_was_first_seen(sd15, sqlite_store):
    """A server that does not send create_time: the wait counts from the first /queue poll
    that saw the prompt."""
    prompt_id, entry = next(iter(sd15.history.items()))
    entry = copy.deepcopy(entry)
    del entry["prompt"][3]["create_time"]
    with FakeComfyUI(sd15) as fake:
        fake.history = {}
        fake.queue = {"queue_running": [], "queue_pending": [entry["prompt"][:5]]}
        poller = ServerPoller(fake.url, sqlite_store)
        poller.poll()
        seen = time.time()
        start = int((seen + 1.5) * 1000)  # it starts 1.5 s after it was first seen
        shift = start - entry["status"]["messages"][0][1]["timestamp"]
        for _, data in entry["status"]["messages"]:
            data["timestamp"] += shift
        fake.history, fake.queue = {prompt_id: entry}, {"queue_running": [],
                                                        "queue_pending": []}
        assert poller.poll() == 1
    job = sqlite_store.jobs_frame().iloc[0]
    assert job.queue_seconds == pytest.approx(1.5, abs=0.3)
    assert job.processing_seconds == pytest.approx(3.599)


def test_history_is_read_incrementally_and_in_pages(sd15, sqlite_store):
    with FakeComfyUI(sd15) as fake:
        poller = ServerPoller(fake.url, sqlite_store, page=16)
        poller.poll()  # the newest 16 are all new: the whole history is read, 16 at a time
        first = [r for r in fake.requests if r.startswith("/history")]
        fake.requests.clear()
        poller.poll()
        second = [r for r in fake.requests if r.startswith("/history")]
    assert first == ["/history?max_items=16"] + [f"/history?max_items=16&offset={offset}"
                                                 for offset in range(0, 137, 16)]
    assert second == ["/history?max_items=16"]
    assert sqlite_store.count() == len(sd15.history)


def test_several_servers_one_down_is_retried_with_backoff_and_reported(sd15, sqlite_store,
                                                                       caplog):
    caplog.set_level(logging.WARNING, "perflib.comfyui.collect")
    with FakeComfyUI(sd15) as up, FakeComfyUI(sd15) as flaky:
        flaky.failing = True
        closed = "http://127.0.0.1:9"  # nothing listens on the discard port
        collector = Collector([up.url, flaky.url, closed], sqlite_store, interval=0.5)
        assert collector.poll_once() == len(sd15.history)
        statuses = {s.url: s for s in collector.statuses()}
        assert statuses[up.url].up and statuses[up.url].stored == len(sd15.history)
        for url in (flaky.url, closed):
            assert not statuses[url].up and statuses[url].failures == 1
            assert "DOWN" in statuses[url].summary()
        assert sum("poll failed" in r.message for r in caplog.records) == 2
        collector.poll_once()  # within the backoff: the down servers are not asked again
        assert statuses[flaky.url].failures == 1
        flaky.requests.clear()
        flaky.failing = False
        time.sleep(1.1)  # the first backoff (2 × interval) has run out
        collector.poll_once()
        assert statuses[flaky.url].up and statuses[flaky.url].failures == 0
        assert statuses[closed].failures == 2
        assert flaky.requests  # it was asked again, and its prompts are already stored
    assert sqlite_store.count() == len(sd15.history)
    assert any("reachable again" in r.message for r in caplog.records)


def test_cli_collect_once_stores_and_reports(sd15, sqlite_url, capsys):
    with FakeComfyUI(sd15) as fake:
        code = cli_main(["--database-url", sqlite_url, "comfyui", "collect", "--url", fake.url,
                         "--once"])
        out = capsys.readouterr().out
        assert code == 0 and f"{len(sd15.history)} new prompts stored" in out
        assert "[cpu]: up" in out
        code = cli_main(["--database-url", sqlite_url, "comfyui", "collect", "--url", fake.url,
                         "--url", "http://127.0.0.1:9", "--once"])
        out = capsys.readouterr().out
    assert code == 1 and "0 new prompts stored" in out and "DOWN" in out


def test_cli_refuses_a_bad_interval(capsys):
    with pytest.raises(SystemExit):
        cli_main(["comfyui", "collect", "--url", "http://x", "--interval", "0"])
    assert "not a number of seconds > 0" in capsys.readouterr().err


def test_a_malformed_history_entry_never_stops_the_collector(sd15, sqlite_store):
    history = dict(list(sd15.history.items())[:3])
    broken = copy.deepcopy(history)
    first = next(iter(broken))
    broken[first]["prompt"][2] = {"1": {"class_type": "VAEDecode",
                                        "inputs": {"samples": ["404", 0]}}}
    with FakeComfyUI(sd15) as fake:
        fake.history = broken
        assert Collector([fake.url], sqlite_store).poll_once() == 3
    job = sqlite_store.jobs_frame().set_index("job_id").loc[job_id(first)]
    assert "links to node '404'" in job.extra_params["comfyui"]["parse_error"]
    assert job.status == "success"


def test_history_recorded_bytes_are_served_as_recorded(sd15):
    """The stand-in answers /history with the recording's own bytes."""
    import urllib.request

    with FakeComfyUI(sd15) as fake:
        with urllib.request.urlopen(fake.url + "/history") as response:
            assert response.read() == sd15.history_bytes
    assert json.loads(sd15.history_bytes) == sd15.history


def test_the_wan_video_run_is_collected_as_video_jobs_with_frames(sqlite_store):
    if not (RECORDINGS / "wan21" / "history.json").exists():
        pytest.skip(f"ComfyUI recordings not found in {RECORDINGS}")
    wan = Recording.load(RECORDINGS / "wan21")
    with FakeComfyUI(wan) as fake:
        assert Collector([fake.url], sqlite_store).poll_once() == len(wan.history)
    jobs = sqlite_store.jobs_frame().set_index("job_id")
    assert len(jobs) == len(wan.history)
    for prompt_id, row in derived(wan).items():
        job = jobs.loc[job_id(prompt_id)]
        if row["status"] != "success" or job.job_type == "comfyui-cache-hit":
            continue
        frames = int(row["length"])
        assert (job.frame_count, job.pipeline_type) == (frames, "video" if frames > 1
                                                        else "image")
        assert job.model_name == "tiny_wan21_t2v_random.safetensors"
    assert (jobs.job_type == "comfyui-cache-hit").sum() == 4
