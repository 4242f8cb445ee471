"""A new server's prior: per-node physics (sampler work, decode, encode, load) at the GPU's
speed, refitted on the first node times it records."""
from __future__ import annotations

import numpy as np
import pytest

from perflib.comfyui.graph import parse_prompt
from perflib.comfyui.node_costs import NodeCosts, NodeObservation, observations
from perflib.comfyui.node_prior import CALL_SECONDS, NodePrior, node_kind
from perflib.config import GpuProfile
from tests.comfyui_server import RECORDINGS
from tools.comfyui_replay import load_recording


def test_node_kinds():
    assert node_kind("KSampler", (20.0, 1e5)) == "sampler"
    assert node_kind("VAEDecodeTiled", (1e6,)) == "decode"
    assert node_kind("VAEEncodeForInpaint", (1e6,)) == "encode"
    assert node_kind("SaveImage", (1e6,)) == "pixels"
    assert node_kind("CheckpointLoaderSimple", ()) == "load"
    assert node_kind("CLIPTextEncode", ()) == "other"


def test_the_prior_grows_with_the_work_and_a_faster_gpu_halves_it():
    slow, fast = NodePrior(GpuProfile(peak_tflops=50)), NodePrior(GpuProfile(peak_tflops=100))
    small, large = slow.seconds("KSampler", (40.0, 4e5)), slow.seconds("KSampler", (80.0, 8e5))
    assert large == pytest.approx(2 * small)
    assert slow.seconds("VAEDecode", (1e6,)) == pytest.approx(
        2 * fast.seconds("VAEDecode", (1e6,)))
    assert slow.seconds("VAEDecode", (2e6,)) > slow.seconds("VAEEncode", (2e6,)) > 0
    assert NodePrior().seconds("CheckpointLoaderSimple", ()) > slow.seconds("VAEDecode", (1e6,))


def test_first_node_times_rescale_each_kind_and_the_unseen_kinds_by_all():
    prior = NodePrior()
    decode = prior.physics("VAEDecode", (1e6,))
    prior.fit([NodeObservation("VAEDecode", (1e6,), 30 * decode)])
    assert prior.seconds("VAEDecode", (2e6,)) == pytest.approx(60 * decode)
    assert prior.seconds("CheckpointLoaderSimple", ()) == pytest.approx(
        30 * prior.physics("CheckpointLoaderSimple", ()))


def test_two_sampler_shapes_separate_the_overhead_of_a_call_from_its_work():
    """A small model on a CPU: 0.08 s a call whatever its size, 2.5e-4 s per latent cell."""
    def took(calls, work):
        return 0.08 * calls + 2.5e-4 * work
    prior = NodePrior().fit([NodeObservation("KSampler", (16.0, 3072.0), took(16, 3072)),
                             NodeObservation("KSampler", (20.0, 1280.0), took(20, 1280))])
    assert prior.seconds("KSampler", (50.0, 28800.0)) == pytest.approx(took(50, 28800))
    one_shape = NodePrior().fit([NodeObservation("KSampler", (16.0, 3072.0), 1.0)])
    assert one_shape.sampler_scales is None
    assert one_shape.seconds("KSampler", (16.0, 3072.0)) == pytest.approx(1.0)
    assert CALL_SECONDS > 0


def test_after_two_prompts_the_prior_prices_the_next_samplers_better_than_their_ratio():
    """On the recorded SD1.5 server: fitted on its first two prompts, the next 20 samplers."""
    done = [p for p in load_recording(RECORDINGS / "sd15") if p.status == "success"
            and p.node_seconds]
    seen = [one for p in done[:2] for one in observations(
        p.graph, parse_prompt(p.graph, [str(o) for o in p.outputs]), p.node_seconds)]
    prior, ratio = NodePrior().fit(seen), NodeCosts().fit(seen)
    errors = {"prior": [], "ratio": []}
    for p in done[2:22]:
        for one in observations(p.graph, parse_prompt(p.graph, [str(o) for o in p.outputs]),
                                p.node_seconds):
            if one.class_type == "KSampler":
                for name, model in (("prior", prior), ("ratio", ratio)):
                    guess = model.seconds(one.class_type, one.features)
                    errors[name].append(abs(guess - one.seconds) / one.seconds)
    assert len(errors["prior"]) == 20
    assert np.mean(errors["prior"]) < 0.3 < np.mean(errors["ratio"])
