"""The service's per-node estimate of a ComfyUI prompt: ``nodes`` sum to the total, learned from
the stored node phases (node sum once enough prompts have them, else the job-level estimate
shared out), refitted after records arrive."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from perflib.comfyui.graph import parse_prompt
from tests.comfyui_server import RECORDINGS
from tests.test_comfyui_estimate import client, store  # noqa: F401 (fixtures)
from tests.test_comfyui_graph import base_graph
from tools.comfyui_replay import HOSTNAME, _stored_record, load_recording

ESTIMATE = "/api/anime/performance/estimate-time"
RECORD = "/api/anime/performance/record-metrics"


@pytest.fixture(scope="module")
def recorded():
    """The vendored SD1.5 prompts that ran, with their per-node seconds."""
    return [p for p in load_recording(RECORDINGS / "sd15")
            if p.status == "success" and p.node_seconds]




def posted(prompts, **changed) -> list[dict]:
    """The records the node would send for these prompts, as JSON."""
    return json.loads(json.dumps([{**_stored_record(p), **changed} for p in prompts],
                                 default=datetime.isoformat))


def estimate(client, graph, **beside) -> dict:
    response = client.post(ESTIMATE, json={"comfyui_prompt": graph, "gpu_name": "cpu",
                                           "hostname": HOSTNAME, **beside})
    assert response.status_code == 200, response.text
    return response.json()


def test_without_node_times_the_physics_prior_prices_each_node(client):
    graph = base_graph()
    answer = estimate(client, graph)
    assert answer["total_from"] == "prior"
    assert [n["id"] for n in answer["nodes"]] == ["3", "4", "5", "6", "7", "8", "9"]
    assert sum(n["seconds"] for n in answer["nodes"]) == pytest.approx(
        answer["predicted_time_seconds"], abs=1e-3)
    sampler = next(n for n in answer["nodes"] if n["id"] == "3")
    assert sampler["class_type"] == "KSampler" and sampler["seconds"] > 0
    assert not any(n["cached"] for n in answer["nodes"])


def test_stored_node_times_price_each_node_and_the_nodes_sum_to_the_total(client, recorded):
    assert client.post(RECORD, json=posted(recorded[:30])).status_code \
        == 200
    prompt = recorded[40]
    answer = estimate(client, prompt.graph)
    assert answer["total_from"] == "node_sum"
    nodes = {n["id"]: n for n in answer["nodes"]}
    assert set(nodes) == parse_prompt(prompt.graph).needed_nodes
    assert sum(n["seconds"] for n in nodes.values()) == pytest.approx(
        answer["predicted_time_seconds"], abs=1e-3)
    low, high = answer["uncertainty_range"]
    assert low <= answer["predicted_time_seconds"] <= high
    for node_id, seconds in prompt.node_seconds.items():  # the sampler dominates, as it ran
        if nodes[node_id]["class_type"] == "KSampler":
            assert nodes[node_id]["seconds"] == pytest.approx(seconds, rel=0.5)


def test_records_that_arrive_refit_the_node_costs(client, recorded):
    graph = recorded[40].graph
    assert estimate(client, graph)["total_from"] == "prior"
    client.post(RECORD, json=posted(recorded[:10]))
    assert estimate(client, graph)["total_from"] == "node_sum"


def test_another_gpus_node_times_do_not_price_this_one(client, recorded):
    client.post(RECORD, json=posted(recorded[:10], gpu_name="NVIDIA H100"))
    assert estimate(client, recorded[40].graph)["total_from"] == "prior"


def test_an_identical_resubmit_is_estimated_under_a_second(client, recorded):
    client.post(RECORD, json=posted(recorded[:30]))
    graph = recorded[40].graph
    fresh = estimate(client, graph)
    again = estimate(client, graph, previous_prompt=graph)
    assert fresh["predicted_time_seconds"] > 1.0
    assert again["predicted_time_seconds"] < 1.0
    assert all(n["cached"] and n["seconds"] == 0 for n in again["nodes"])
    assert again["uncertainty_range"][1] < 1.0


@pytest.mark.parametrize("learned", [True, False])
def test_a_loaded_checkpoint_costs_nothing_and_only_what_changed_runs(client, recorded,
                                                                      learned):
    """With and without learned node costs (then the physics prior prices the nodes)."""
    if learned:
        client.post(RECORD, json=posted(recorded[:30]))
    before = base_graph(width=256, height=256, steps=10)
    graph = base_graph(width=256, height=256, steps=10)
    graph["6"]["inputs"]["text"] = "a dog"
    cold, warm = estimate(client, graph), estimate(client, graph, previous_prompt=before)
    cached = {n["id"] for n in warm["nodes"] if n["cached"]}
    assert cached == {"4", "5", "7"}  # the checkpoint loader among them
    assert next(n for n in warm["nodes"] if n["id"] == "4")["seconds"] == 0
    assert warm["predicted_time_seconds"] <= cold["predicted_time_seconds"]
    assert sum(n["seconds"] for n in warm["nodes"]) == pytest.approx(
        warm["predicted_time_seconds"], abs=1e-3)


@pytest.mark.parametrize("previous, words", [
    ({str(i): {"class_type": "Note", "inputs": {}} for i in range(10_001)}, "at most 10000"),
    ({"1": "not a node"}, "JSON object"),
    ([1, 2], "dictionary")])
def test_a_previous_prompt_is_bounded_like_the_prompt(client, previous, words):
    response = client.post(ESTIMATE, json={"comfyui_prompt": base_graph(),
                                           "previous_prompt": previous})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any("previous_prompt" in error["loc"] and words in error["msg"] for error in detail)


def test_a_new_servers_loaded_checkpoint_saves_its_prior_load_time(client):
    """No node times yet: the prior is spread over the nodes, so the resubmit that finds the
    checkpoint loaded (and the text encoded) is cheaper by exactly those nodes."""
    first = base_graph()
    second = json.loads(json.dumps(first))
    second["3"]["inputs"]["seed"] += 1
    cold, warm = estimate(client, second), estimate(client, second, previous_prompt=first)
    loader = next(n for n in cold["nodes"] if n["class_type"] == "CheckpointLoaderSimple")
    cached = {n["id"] for n in warm["nodes"] if n["cached"]}
    assert loader["id"] in cached and loader["seconds"] >= 1.0
    saved = sum(n["seconds"] for n in cold["nodes"] if n["id"] in cached)
    assert warm["predicted_time_seconds"] == pytest.approx(
        cold["predicted_time_seconds"] - saved, abs=2e-3)
