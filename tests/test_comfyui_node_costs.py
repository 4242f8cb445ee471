"""Per-node costs learned from the recorded per-node times, ComfyUI's cache anticipated, and a
prompt priced as the sum over the nodes that will run."""
from __future__ import annotations

import numpy as np
import pytest

from perflib.comfyui.cache_keys import cached_nodes
from perflib.comfyui.graph import conditioning_batches, parse_prompt
from perflib.comfyui.node_costs import NodeCosts, node_features, observations
from perflib.prediction.metrics import is_within
from tests.comfyui_server import RECORDINGS
from tests.test_comfyui_graph import base_graph
from tools.comfyui_replay import load_recording


def learned_and_held_out(run: str):
    """Node costs fitted on the first half of a recording's successes, and the second half."""
    done = [p for p in load_recording(RECORDINGS / run) if p.status == "success"
            and p.node_seconds]
    half = len(done) // 2
    parsed = {p.prompt_id: parse_prompt(p.graph, [str(o) for o in p.outputs]) for p in done}
    seen = [one for p in done[:half]
            for one in observations(p.graph, parsed[p.prompt_id], p.node_seconds)]
    return NodeCosts().fit(seen), done[half:], parsed


@pytest.mark.parametrize("run, class_type, share", [("sd15", "VAEDecode", 0.9),
                                                    ("sd15", "KSampler", 0.7)])
def test_node_class_costs_are_predicted_within_20_percent(run, class_type, share):
    """On prompts it never saw (the recordings hold VAEDecode; no tiled decode, encode or scale
    node ran in them)."""
    costs, held_out, parsed = learned_and_held_out(run)
    actual, predicted = [], []
    for prompt in held_out:
        for node_id, seconds in prompt.node_seconds.items():
            if prompt.graph[node_id]["class_type"] == class_type:
                actual.append(seconds)
                predicted.append(costs.seconds(class_type, node_features(
                    prompt.graph, parsed[prompt.prompt_id], node_id)))
    assert len(actual) >= 20
    assert np.mean(is_within(actual, predicted)) >= share


def test_the_nodes_sum_to_the_prompt_and_a_cached_node_costs_nothing():
    costs, held_out, parsed = learned_and_held_out("sd15")
    graph = base_graph(width=256, height=256, steps=10)
    mine = parse_prompt(graph)
    fresh = costs.price(graph, mine, cached_nodes(graph, None, mine.needed_nodes))
    assert [p.node_id for p in fresh] == ["3", "4", "5", "6", "7", "8", "9"]
    assert not any(p.cached for p in fresh) and all(p.seconds is not None for p in fresh)
    same = costs.price(graph, mine, cached_nodes(graph, graph, mine.needed_nodes))
    assert all(p.cached and p.seconds == 0.0 for p in same)  # an identical resubmit: 0 s
    new_text = base_graph(width=256, height=256, steps=10)
    new_text["6"]["inputs"]["text"] = "a dog"
    rerun = costs.price(new_text, parse_prompt(new_text),
                        cached_nodes(new_text, graph, mine.needed_nodes))
    assert {p.node_id for p in rerun if not p.cached} == {"6", "3", "8", "9"}
    assert {p.node_id for p in rerun if p.cached} == {"4", "5", "7"}  # the checkpoint: loaded


def test_the_recorded_cache_is_anticipated():
    """Every recorded prompt's served-from-cache nodes are those the prompt run just before
    left: what ComfyUI's classic cache does."""
    prompts = load_recording(RECORDINGS / "sd15")
    checked = 0
    for before, prompt in zip(prompts, prompts[1:]):
        if before.status != "success" or prompt.status != "success":
            continue
        needed = parse_prompt(prompt.graph, [str(o) for o in prompt.outputs]).needed_nodes
        assert cached_nodes(prompt.graph, before.graph, needed) == set(prompt.cached_nodes), \
            prompt.prompt_id
        checked += 1
    assert checked >= 100


def test_combined_conditioning_adds_a_unet_batch_per_step():
    graph = base_graph()
    assert conditioning_batches(graph, "3", guided=True) == 2
    assert conditioning_batches(graph, "3", guided=False) == 1
    graph["10"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["4", 1]}}
    graph["11"] = {"class_type": "ConditioningCombine",
                   "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["10", 0]}}
    graph["3"]["inputs"]["positive"] = ["11", 0]
    assert conditioning_batches(graph, "3", guided=True) == 3
    plain, combined = (node_features(g, parse_prompt(g), "3") for g in (base_graph(), graph))
    assert combined[0] == pytest.approx(plain[0] * 1.5)
