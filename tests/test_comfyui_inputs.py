"""Img2img and inpaint graphs (an input file → VAEEncode / VAEEncodeForInpaint /
SetLatentNoiseMask, no scale node) are estimated: from ``comfyui_inputs`` where the caller gives
the file's size, else at an assumed size the answer states; never refused."""
from __future__ import annotations

import warnings

import pytest

from perflib.comfyui.prompt_estimate import prompt_estimate
from perflib.serve import create_app
from perflib.store import Store
from tests.test_comfyui_graph import base_graph, img2img_graph

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ESTIMATE = "/api/anime/performance/estimate-time"


def inpaint_graph(encoder: str) -> dict:
    """LoadImage (+ LoadImageMask) → an inpaint encoder → KSampler at denoise 1."""
    graph = base_graph(steps=20)
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "room.png"}}
    graph["13"] = {"class_type": "LoadImageMask",
                   "inputs": {"image": "room-mask.png", "channel": "alpha"}}
    if encoder == "VAEEncodeForInpaint":
        graph["12"] = {"class_type": "VAEEncodeForInpaint",
                       "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["13", 0],
                                  "grow_mask_by": 6}}
    else:  # encode, then mask the latent
        graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0],
                                                             "vae": ["4", 2]}}
        graph["12"] = {"class_type": "SetLatentNoiseMask",
                       "inputs": {"samples": ["11", 0], "mask": ["13", 0]}}
    graph["3"]["inputs"]["latent_image"] = ["12", 0]
    return graph


@pytest.fixture
def client(sqlite_url, settings):
    with TestClient(base_url="http://127.0.0.1",
                    app=create_app(Store(sqlite_url, settings))) as client:
        yield client


@pytest.mark.parametrize("graph, name, encoder", [
    (img2img_graph(with_scale=False), "photo.png", "12"),
    (inpaint_graph("VAEEncodeForInpaint"), "room.png", "12"),
    (inpaint_graph("SetLatentNoiseMask"), "room.png", "11"),
])
def test_the_input_files_size_sizes_the_pass(graph, name, encoder):
    params, job = prompt_estimate(graph, {name: {"width": 768, "height": 1024}})
    (only,) = job["passes"]
    assert (only["width"], only["height"], only["batch_size"]) == (768, 1024, 1)
    assert "assumed_input_sizes" not in job["extra_params"]["comfyui"]
    assert job["extra_params"]["comfyui"]["node_pixels"][encoder] == 768 * 1024


@pytest.mark.parametrize("graph, name", [
    (img2img_graph(with_scale=False), "photo.png"),
    (inpaint_graph("VAEEncodeForInpaint"), "room.png"),
])
def test_without_the_size_it_is_assumed_and_said(client, graph, name):
    answer = client.post(ESTIMATE, json={"comfyui_prompt": graph})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predicted_time_seconds"] > 0
    assert body["parsed_job"]["extra_params"]["comfyui"]["assumed_input_sizes"] == {
        name: {"width": 512, "height": 512}}
    assert body["parsed_job"]["width"] == 512


def test_the_given_size_changes_the_estimate(client):
    graph = img2img_graph(with_scale=False)
    small, large = (client.post(ESTIMATE, json={
        "comfyui_prompt": graph, "comfyui_inputs": {"photo.png": {"width": side,
                                                                  "height": side}}}).json()
        for side in (256, 1024))
    assert large["parsed_job"]["width"] == 1024
    assert large["predicted_time_seconds"] > small["predicted_time_seconds"]


@pytest.mark.parametrize("inputs, where", [
    ({"photo.png": {"width": 0, "height": 512}}, ["photo.png", "width"]),
    ({"photo.png": {"width": 512, "height": 10**6}}, ["photo.png", "height"]),
    ({"photo.png": {"width": 512}}, ["photo.png", "height"]),
    ({"photo.png": {"width": 512, "height": 512, "depth": 3}}, ["photo.png", "depth"]),
    ({"photo.png": [512, 512]}, ["photo.png"]),
    ({"": {"width": 512, "height": 512}}, [""]),
    ({f"f{i}.png": {"width": 8, "height": 8} for i in range(300)}, []),
    ("photo.png", []),
])
def test_a_bad_input_size_is_422_naming_the_field(client, inputs, where):
    answer = client.post(ESTIMATE, json={"comfyui_prompt": img2img_graph(with_scale=False),
                                         "comfyui_inputs": inputs})
    assert answer.status_code == 422, answer.text
    locations = [error["loc"] for error in answer.json()["detail"]]
    assert any("comfyui_inputs" in loc and [str(part) for part in
                                            loc[loc.index("comfyui_inputs") + 1:]][:len(where)]
               == where for loc in locations), locations
