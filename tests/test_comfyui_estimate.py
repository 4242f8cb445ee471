"""Estimating a ComfyUI prompt from its graph: estimate-time with ``comfyui_prompt``,
``perflib estimate --comfyui-prompt``, and the acceptance check on the recorded SD1.5 run."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from perflib.cli import main as cli_main
from perflib.comfyui.collect import Collector
from perflib.comfyui.graph import parse_prompt
from perflib.prediction.predictor import PerformancePredictor
from perflib.serve import create_app
from perflib.store import Store
from tests.comfyui_server import FakeComfyUI
from tests.test_comfyui_graph import base_graph, hires_fix_graph

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

ESTIMATE = "/api/anime/performance/estimate-time"
ESTIMATE_KEYS = {"predicted_time_seconds", "confidence", "prediction_method", "model_used",
                 "uncertainty_range", "recommendations", "queue", "speed_source",
                 "geometry_source"}
HIRES = {"class_type": "LatentUpscaleBy",
         "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}}


@pytest.fixture
def store(sqlite_url, settings) -> Store:
    return Store(sqlite_url, settings)


@pytest.fixture
def client(store):
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as client:
        yield client


# -- the service ------------------------------------------------------------------------------
def test_estimate_time_takes_a_comfyui_prompt_and_says_what_it_understood(client):
    graph = hires_fix_graph(HIRES)
    response = client.post(ESTIMATE, json={"comfyui_prompt": graph, "gpu_name": "cpu",
                                           "hostname": "render-01:8188"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ESTIMATE_KEYS | {"parsed_job", "nodes", "total_from"}
    assert body["parsed_job"] == parse_prompt(graph).job_params()
    assert [(p["width"], p["steps"]) for p in body["parsed_job"]["passes"]] == [(512, 20),
                                                                               (768, 12)]
    plain = client.post(ESTIMATE, json={"pipeline_type": "image", "resolution": "512x512",
                                        "steps": 20})
    assert plain.status_code == 200 and set(plain.json()) == ESTIMATE_KEYS


def test_every_pass_counts_in_the_estimate(client):
    """A hires fix adds its second pass's work: its sampling must cost more than the base
    pass alone (the rest, a checkpoint load among it, is the same)."""
    base = client.post(ESTIMATE, json={"comfyui_prompt": base_graph()}).json()
    hires = client.post(ESTIMATE, json={"comfyui_prompt": hires_fix_graph(HIRES)}).json()
    sampling = [sum(n["seconds"] for n in answer["nodes"] if n["class_type"] == "KSampler")
                for answer in (base, hires)]
    assert sampling[1] > 1.5 * sampling[0]
    assert hires["predicted_time_seconds"] > base["predicted_time_seconds"] + sampling[0] / 2


def test_identical_comfyui_estimates_are_answered_again(client):
    """Passes are lists: the estimate memory keys them without failing."""
    body = {"comfyui_prompt": hires_fix_graph(HIRES)}
    first, second = (client.post(ESTIMATE, json=body) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert first.json()["predicted_time_seconds"] == second.json()["predicted_time_seconds"]


@pytest.mark.parametrize("body, words", [
    ({"comfyui_prompt": {"8": {"class_type": "VAEDecode", "inputs": {"samples": ["99", 0]}}}},
     ["comfyui_prompt", "node 8 input 'samples'", "'99'"]),
    ({"comfyui_prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
                         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}},
     ["comfyui_prompt", "no sampling pass"]),
    ({"comfyui_prompt": {**base_graph(), "5": {"class_type": "LoadLatent",
                                               "inputs": {"latent": "saved.latent"}}}},
     ["comfyui_prompt", "node 5", "says nothing"]),  # an input image is assumed, not a latent
    ({"comfyui_prompt": base_graph(), "steps": 30}, ["steps"]),
    ({"comfyui_prompt": {"nodes": [], "links": []}}, ["comfyui_prompt", "class_type"]),
    ({"comfyui_prompt": base_graph(width=20000)}, ["width"]),
])
def test_unusable_comfyui_prompts_are_422_naming_the_field(client, body, words):
    response = client.post(ESTIMATE, json=body)
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.text


def test_queue_eta_counts_the_prompts_a_collector_saw_queued(sd15, store, client):
    busiest = max(sd15.snapshots, key=lambda s: len(s["queue"]["queue_pending"]))
    waiting = len(busiest["queue"]["queue_running"]) + len(busiest["queue"]["queue_pending"])
    with FakeComfyUI(sd15) as fake:
        fake.at(busiest)
        Collector([fake.url], store).poll_once()
    graph = busiest["queue"]["queue_pending"][0][2]
    queue = client.post(ESTIMATE, json={"comfyui_prompt": graph}).json()["queue"]
    assert queue["jobs_ahead"] == waiting
    assert queue["expected_start_seconds"] > 0


# -- the command line -------------------------------------------------------------------------
def test_cli_estimates_a_prompt_file_or_a_prompt_body(tmp_path, sqlite_url, capsys):
    graph = hires_fix_graph(HIRES)
    for document in (graph, {"prompt": graph, "client_id": "me"}):
        path = tmp_path / "prompt.json"
        path.write_text(json.dumps(document))
        assert cli_main(["--database-url", sqlite_url, "estimate", "--comfyui-prompt",
                         str(path), "--gpu-name", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["predicted_time_seconds"] > 0
        assert len(result["parsed_job"]["passes"]) == 2


@pytest.mark.parametrize("document, extra, message", [
    ({"nodes": [{"id": 1}], "links": []}, [], "UI workflow, not the API format"),
    (base_graph(), ["--steps", "5"], "--steps cannot be given with --comfyui-prompt"),
    ({"8": {"class_type": "VAEDecode", "inputs": {"samples": ["99", 0]}}}, [],
     "comfyui_prompt: node 8 input 'samples'"),
])
def test_cli_refuses_what_it_cannot_estimate(tmp_path, sqlite_url, capsys, document, extra,
                                             message):
    path = tmp_path / "prompt.json"
    path.write_text(json.dumps(document))
    assert cli_main(["--database-url", sqlite_url, "estimate", "--comfyui-prompt", str(path),
                     *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_without_a_prompt_still_needs_the_job_options(sqlite_url, capsys):
    assert cli_main(["--database-url", sqlite_url, "estimate", "--steps", "5"]) == 2
    assert "--pipeline-type, --resolution are required (or give --comfyui-prompt)" in \
        capsys.readouterr().err


# -- acceptance -------------------------------------------------------------------------------
def _timeline(entry: dict) -> tuple[int, int, int, str]:
    """(start ms, end ms, nodes cached, status) of a history entry."""
    events = dict(entry["status"]["messages"])
    return (events["execution_start"]["timestamp"], entry["status"]["messages"][-1][1]
            ["timestamp"], len(events["execution_cached"]["nodes"]), entry["status"]
            ["status_str"])


@pytest.mark.slow
def test_trained_on_the_first_70_percent_the_rest_are_estimated_within_20_percent(sd15, store,
                                                                                  client):
    """The issue's acceptance: collect the recorded SD1.5 run up to the moment 70% of its
    computed prompts had started (a real HTTP server answering as ComfyUI did then), train, then
    estimate each later computed prompt from its graph through estimate-time."""
    computed = sorted(((pid, e) for pid, e in sd15.history.items()
                       if _timeline(e)[3] == "success" and _timeline(e)[2] < len(e["prompt"][2])),
                      key=lambda item: _timeline(item[1])[0])
    cut = int(round(0.7 * len(computed)))
    cut_ms = _timeline(computed[cut][1])[0]
    with FakeComfyUI(sd15) as fake:
        fake.history = {pid: e for pid, e in sd15.history.items() if _timeline(e)[1] < cut_ms}
        Collector([fake.url], store).poll_once()
    predictor = PerformancePredictor(store)
    trained = predictor.train_model("image", "auto")
    predictor.save_model_to_db("image", trained["model_type"])
    assert trained["n_train"] + trained["n_test"] == cut == 83

    errors = []
    for prompt_id, entry in computed[cut:]:
        start, end, _, _ = _timeline(entry)
        answer = client.post(ESTIMATE, json={"comfyui_prompt": entry["prompt"][2],
                                              "gpu_name": "cpu"}).json()
        assert answer["prediction_method"] == "ml_model"
        actual = (end - start) / 1000
        errors.append(abs(answer["predicted_time_seconds"] - actual) / actual)
    within = float(np.mean(np.array(errors) <= 0.2))
    assert len(errors) == 35
    assert within >= 0.85, f"{within:.2f} within 20%, MAPE {np.mean(errors):.3f}"
