"""Recommendations for a ComfyUI prompt are edits of its graph, each estimated by the same
estimator: seconds_saved is the estimate of the prompt less that of the edited prompt."""
from __future__ import annotations

import pytest

import tests.test_comfyui_node_estimates as node_estimates
from perflib.comfyui.graph_edits import CLASS_INPUT, candidate_edits
from tests.test_comfyui_graph import base_graph
from tests.test_comfyui_node_estimates import RECORD, estimate, posted

store, client, recorded = node_estimates.store, node_estimates.client, node_estimates.recorded


def hires_graph():
    """Two passes: heun at cfg 7, then a tiled decode."""
    graph = base_graph(steps=24, sampler="heun")
    graph["8"]["class_type"] = "VAEDecodeTiled"
    graph["8"]["inputs"].update(tile_size=512, overlap=64, temporal_size=64,
                                temporal_overlap=8)
    return graph


def test_the_candidates_are_concrete_edits_of_the_nodes_that_run():
    graph = hires_graph()
    edits = {(e.node_id, e.input): e.new_value for e in candidate_edits(graph, {"3", "8"})}
    assert edits == {("3", "steps"): 18, ("3", "cfg"): 1.0, ("3", "sampler_name"): "euler",
                     ("8", CLASS_INPUT): "VAEDecode"}
    assert candidate_edits(graph, {"8"}) and not any(
        e.node_id == "3" for e in candidate_edits(graph, {"8"}))  # a cached sampler: no edit
    assert candidate_edits(base_graph(steps=6, cfg=1.0), {"3"}) == []


@pytest.mark.parametrize("learned", [False, True])
def test_each_recommendation_saves_what_the_edited_graph_is_estimated_to_save(
        client, recorded, learned):
    if learned:
        client.post(RECORD, json=posted(recorded[:30]))
    graph = hires_graph()
    answer = estimate(client, graph)
    found = answer["recommendations"]
    assert found, answer
    assert [r["seconds_saved"] for r in found] == sorted(
        (r["seconds_saved"] for r in found), reverse=True)
    for one in found:
        edited = {**graph, one["node_id"]: {**graph[one["node_id"]]}}
        if one["input"] == CLASS_INPUT:
            edited[one["node_id"]]["class_type"] = one["new_value"]
        else:
            edited[one["node_id"]]["inputs"] = {**graph[one["node_id"]]["inputs"],
                                                one["input"]: one["new_value"]}
        assert one["seconds_saved"] > 0
        assert one["seconds_saved"] == pytest.approx(
            answer["predicted_time_seconds"] - estimate(client, edited)[
                "predicted_time_seconds"], abs=2e-3)
        shown = one["new_value"]
        assert (f"{shown:g}" if isinstance(shown, float) else str(shown)) in one["description"]
    assert {r["input"] for r in found} >= {"steps", "sampler_name", "cfg"}
    if not learned:  # the prior knows a tiled decode is slower; the recording has none
        assert CLASS_INPUT in {r["input"] for r in found}


def test_a_graph_with_nothing_to_save_gets_no_recommendation(client):
    graph = base_graph(steps=6, cfg=1.0)
    assert estimate(client, graph)["recommendations"] == []
    assert estimate(client, graph, previous_prompt=graph)["recommendations"] == []
