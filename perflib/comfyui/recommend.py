"""What would make a ComfyUI prompt faster, as concrete edits of its graph: each candidate
(:mod:`perflib.comfyui.graph_edits`) is applied and the edited graph estimated by the same
estimator as the prompt itself, so ``seconds_saved`` is exactly estimate(prompt) − estimate(edited
prompt). Only edits that save time are kept, the largest saving first."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from perflib.comfyui.cache_keys import cached_nodes
from perflib.comfyui.graph_edits import GraphEdit, candidate_edits
from perflib.comfyui.node_estimate import LearnedNodes, refine
from perflib.comfyui.prompt_estimate import parsed_estimate
from perflib.record import RecordError

MAX_EDITS = 12  # candidate edits estimated per prompt, at most
MIN_SAVED_SECONDS = 0.001  # what the estimate's rounding can tell apart
JobEstimate = Callable[[dict[str, Any]], dict[str, Any]]  # params -> the job-level prediction


class GraphEstimator:
    """A ComfyUI graph's total estimate, as the service answers it: the job-level estimate of
    its parameters refined node by node, the previous prompt's cache anticipated."""

    def __init__(self, job_estimate: JobEstimate, learned: LearnedNodes,
                 previous: Mapping[str, Any] | None = None,
                 inputs: Mapping[str, Mapping[str, int]] | None = None, **given: Any):
        self.job_estimate, self.learned = job_estimate, learned
        self.previous, self.inputs, self.given = previous, inputs, given

    def answer(self, graph: Mapping[str, Any]) -> dict[str, Any]:
        """The per-node answer for `graph` (raises RecordError where it cannot be estimated)."""
        params, _, parsed = parsed_estimate(graph, self.inputs, **self.given)
        return self.refined(self.job_estimate(params), graph, parsed)

    def refined(self, prediction: Mapping[str, Any], graph: Mapping[str, Any], parsed: Any
                ) -> dict[str, Any]:
        cached = cached_nodes(graph, self.previous, parsed.needed_nodes)
        return refine(prediction, self.learned, graph, parsed, cached)

    def recommendations(self, graph: Mapping[str, Any], parsed: Any, seconds: float
                        ) -> list[dict[str, Any]]:
        """The edits of `graph` (estimated at `seconds`) that save time, largest first."""
        running = set(parsed.needed_nodes) - cached_nodes(graph, self.previous,
                                                          parsed.needed_nodes)
        found = []
        for edit in candidate_edits(graph, running)[:MAX_EDITS]:
            saved = self._saved(edit, graph, seconds)
            if saved is not None and saved >= MIN_SAVED_SECONDS:
                found.append(as_recommendation(edit, saved))
        return sorted(found, key=lambda one: -one["seconds_saved"])

    def _saved(self, edit: GraphEdit, graph: Mapping[str, Any], seconds: float
               ) -> float | None:
        try:
            edited = self.answer(edit.applied(graph))
        except (RecordError, ValueError):
            return None  # the edited graph says too little to estimate: no claim
        return round(seconds - float(edited["predicted_time_seconds"]), 3)


def as_recommendation(edit: GraphEdit, seconds_saved: float) -> dict[str, Any]:
    return {"node_id": edit.node_id, "class_type": edit.class_type, "input": edit.input,
            "old_value": edit.old_value, "new_value": edit.new_value,
            "seconds_saved": seconds_saved, "description": edit.description}
