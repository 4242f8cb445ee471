"""Video latent nodes say what the model is: their latent's temporal and spatial compression and
channels (as ComfyUI v0.8.0's own nodes build the latent) reach each pass and the work terms."""
from __future__ import annotations

import pytest

from perflib.comfyui.graph import parse_prompt
from perflib.prediction.work_terms import stored_terms
from perflib.prediction.workload import cost_terms
from tests.test_comfyui_graph import base_graph


def video_graph(class_type: str, width=768, height=512, length=97) -> dict:
    graph = base_graph()
    graph["5"] = {"class_type": class_type, "inputs": {"width": width, "height": height,
                                                      "length": length, "batch_size": 1}}
    return graph


@pytest.mark.parametrize("class_type, temporal, spatial, channels", [
    ("EmptyHunyuanLatentVideo", 4, 8, 16),  # Wan 2.1 and HunyuanVideo
    ("EmptyLTXVLatentVideo", 8, 32, 128),
    ("EmptyMochiLatentVideo", 6, 8, 12),
    ("EmptyCosmosLatentVideo", 8, 8, 16),
    ("WanImageToVideo", 4, 8, 16),
])
def test_a_video_latent_node_gives_its_pass_the_models_geometry(class_type, temporal, spatial,
                                                                 channels):
    (only,) = parse_prompt(video_graph(class_type)).job_params()["passes"]
    assert (only["vae_temporal_factor"], only["vae_spatial_factor"],
            only["latent_channels"]) == (temporal, spatial, channels)


def test_an_image_latent_states_no_video_geometry():
    (only,) = parse_prompt(base_graph()).job_params()["passes"]
    assert "vae_temporal_factor" not in only


@pytest.mark.parametrize("class_type, latent_frames, tokens", [
    ("EmptyHunyuanLatentVideo", (97 - 1) // 4 + 1, (768 // 8) * (512 // 8)),
    ("EmptyLTXVLatentVideo", (97 - 1) // 8 + 1, (768 // 32) * (512 // 32)),
    ("EmptyMochiLatentVideo", (97 - 1) // 6 + 1, (768 // 8) * (512 // 8)),
])
def test_work_terms_count_the_latent_the_node_builds(class_type, latent_frames, tokens):
    """Without a configured profile, the latent frames and tokens are those of the node's
    latent (an SD-style default would count 97 frames of 8× cells)."""
    job = parse_prompt(video_graph(class_type)).job_params()
    steps, cfg = 20, 2.0
    expected = tokens * latent_frames * steps * cfg
    (stored,) = stored_terms([job])
    assert stored["work_units"] == pytest.approx(expected)
    assert cost_terms({name: [value] for name, value in job.items()})["work_units"][0] == \
        pytest.approx(expected)


def test_an_upscaled_video_latent_keeps_its_geometry():
    graph = video_graph("EmptyLTXVLatentVideo")
    graph["10"] = {"class_type": "LatentUpscaleBy",
                   "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                              "scale_by": 1.5}}
    graph["11"] = {**graph["3"], "inputs": {**graph["3"]["inputs"], "latent_image": ["10", 0]}}
    graph["8"]["inputs"]["samples"] = ["11", 0]
    passes = parse_prompt(graph).job_params()["passes"]
    assert [p["vae_temporal_factor"] for p in passes] == [8, 8]


def test_a_video_graph_with_its_geometry_is_estimated_and_recorded():
    """The geometry fields are part of a pass as the service takes it (estimate and record)."""
    from perflib.comfyui.prompt_estimate import prompt_estimate
    from perflib.record import JobRecord

    params, job = prompt_estimate(video_graph("EmptyLTXVLatentVideo"))
    assert params["passes"][0]["vae_temporal_factor"] == 8
    record = JobRecord(job_id="v", status="queued", **{k: v for k, v in job.items()
                                                       if v is not None})
    assert record.passes[0].latent_channels == 128
