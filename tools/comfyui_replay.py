"""Replay a ComfyUI recording (``../shared/data/comfyui/<run>``) as a live node sees it: each
executed prompt is estimated, at its start, with only what finished before it started, and the
estimate is compared with its measured execution time (history's ``execution_start`` → end).

    python -m tools.comfyui_replay [--data ../shared/data/comfyui] [--runs sd15 wan21]
        [--method job|service|nodes|all]

``job``: the service's job-level estimate (``prompt_estimate`` → ``PerformancePredictor``
``.estimate(as_of=start)``, no stored model: the heuristic fitted on the jobs finished before);
``service``: what the service answers, that estimate refined node by node
(:mod:`perflib.comfyui.node_estimate`: node costs learned from the stored phases of the prompts
finished before, the previous prompt's cache anticipated); ``nodes``: the per-node sum alone
(:mod:`perflib.comfyui.node_costs`), with no job-level fallback. Prompts the estimate refuses
count as misses. Fully cached prompts (0–1 ms) are reported apart.
"""
from __future__ import annotations

import argparse
import csv
import json
import pathlib
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from perflib.prediction.metrics import is_within

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "comfyui"
GPU_NAME = "cpu"  # what the recorded servers' /system_stats call their device
HOSTNAME = "replay:8188"


@dataclass
class RecordedPrompt:
    """One executed prompt of a recording, with its per-node seconds from the websocket."""

    prompt_id: str
    number: int
    graph: dict
    outputs: list
    extra_data: dict
    history: dict
    status: str
    started_ms: int
    finished_ms: int
    cached_nodes: list[str]
    node_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.finished_ms - self.started_ms) / 1000

    @property
    def fully_cached(self) -> bool:
        return not self.node_seconds and bool(self.cached_nodes)

    @property
    def started(self) -> datetime:
        return datetime.fromtimestamp(self.started_ms / 1000, timezone.utc)


def load_recording(folder: pathlib.Path) -> list[RecordedPrompt]:
    """The recording's history entries in the order they started."""
    history = json.loads((folder / "history.json").read_text())
    with open(folder / "derived-timings.csv", newline="") as handle:
        derived = {row["prompt_id"]: row for row in csv.DictReader(handle)}
    prompts = []
    for prompt_id, entry in history.items():
        row = derived[prompt_id]
        number, _, graph, extra_data, outputs = entry["prompt"][:5]
        node_seconds = json.loads(row["ws_node_s"]) if row["ws_node_s"] else {}
        prompts.append(RecordedPrompt(
            prompt_id, number, graph, outputs, extra_data, entry, row["status"],
            int(row["exec_start_ms"]), int(row["exec_end_ms"]), row["cached_nodes"].split(),
            {str(node): float(seconds) for node, seconds in node_seconds.items()}))
    return sorted(prompts, key=lambda p: (p.started_ms, p.number))


def finished_before(prompts: list[RecordedPrompt], prompt: RecordedPrompt
                    ) -> list[RecordedPrompt]:
    return [other for other in prompts if other.finished_ms <= prompt.started_ms
            and other is not prompt]


def job_model_estimates(prompts: list[RecordedPrompt]) -> dict[str, float | None]:
    """The service's job-level estimate alone (before per-node estimates), as of each start."""
    return _service_replay(prompts, per_node=False)


def service_estimates(prompts: list[RecordedPrompt]) -> dict[str, float | None]:
    """The service's answer as of each start: the job-level estimate refined node by node
    (:mod:`perflib.comfyui.node_estimate`), the previous prompt's cache anticipated."""
    return _service_replay(prompts, per_node=True)


def _service_replay(prompts: list[RecordedPrompt], per_node: bool) -> dict[str, float | None]:
    """Each executed prompt estimated by the service's code on a store holding what finished
    before it started (with the per-node phases the node records)."""
    from perflib.prediction.predictor import PerformancePredictor
    from perflib.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/replay.db")
        predictor = PerformancePredictor(store)
        stored: set[str] = set()
        answers: dict[str, float | None] = {}
        for position, prompt in enumerate(prompts):
            new = [p for p in finished_before(prompts, prompt) if p.prompt_id not in stored]
            if new:
                store.write_jobs([_stored_record(p) for p in new])
                stored.update(p.prompt_id for p in new)
            if prompt.status == "success":
                previous = prompts[position - 1].graph if position and per_node else None
                answers[prompt.prompt_id] = _service_answer(store, predictor, prompt, previous,
                                                            per_node)
    return answers


def _stored_record(prompt: RecordedPrompt) -> dict:
    """The job record the node sends for a finished prompt: the collector's fields and a
    phase per executed node."""
    from perflib.comfyui.collect import ServerStatus, finished_record
    from perflib.comfyui.history import judge_entry

    server = ServerStatus(url=f"http://{HOSTNAME}", hostname=HOSTNAME, gpu_name=GPU_NAME)
    record = finished_record(judge_entry(prompt.prompt_id, prompt.history), server)
    record["phases"] = [{"seq": seq, "seconds": seconds, "name": f"{node_id}:"
                         f"{(prompt.graph.get(node_id) or {}).get('class_type', 'unknown')}"}
                        for seq, (node_id, seconds) in enumerate(prompt.node_seconds.items())]
    return record


def _service_answer(store, predictor, prompt: RecordedPrompt, previous: dict | None,
                    per_node: bool) -> float | None:
    from perflib.comfyui.cache_keys import cached_nodes
    from perflib.comfyui.node_estimate import learn_nodes, refine
    from perflib.comfyui.prompt_estimate import parsed_estimate
    from perflib.record import RecordError

    try:
        params, _, parsed = parsed_estimate(prompt.graph, gpu_name=GPU_NAME, hostname=HOSTNAME)
    except RecordError:
        return None
    prediction = predictor.estimate(params, as_of=prompt.started)
    if per_node:
        learned = learn_nodes(store, GPU_NAME, HOSTNAME, as_of=prompt.started)
        prediction = refine(prediction, learned, prompt.graph, parsed,
                            cached_nodes(prompt.graph, previous, parsed.needed_nodes))
    return prediction["predicted_time_seconds"]


def node_estimates(prompts: list[RecordedPrompt]) -> dict[str, float | None]:
    """The per-node estimate of each executed prompt: node costs learned from the prompts that
    succeeded before it started, ComfyUI's cache as the prompt run just before it left it."""
    from perflib.comfyui.cache_keys import cached_nodes
    from perflib.comfyui.graph import parse_prompt
    from perflib.comfyui.node_costs import NodeCosts, observations

    parsed = {p.prompt_id: parse_prompt(p.graph, [str(o) for o in p.outputs]) for p in prompts}
    answers: dict[str, float | None] = {}
    for position, prompt in enumerate(prompts):
        if prompt.status != "success":
            continue
        seen = [one for other in finished_before(prompts, prompt) if other.status == "success"
                for one in observations(other.graph, parsed[other.prompt_id],
                                        other.node_seconds)]
        previous = prompts[position - 1].graph if position else None
        mine = parsed[prompt.prompt_id]
        prices = NodeCosts().fit(seen).price(
            prompt.graph, mine, cached_nodes(prompt.graph, previous, mine.needed_nodes))
        unknown = any(price.seconds is None for price in prices)
        answers[prompt.prompt_id] = None if unknown else sum(p.seconds for p in prices)
    return answers


def summary(prompts: list[RecordedPrompt], answers: dict[str, float | None]) -> dict[str, Any]:
    """Within-20% shares: of the computed prompts (refusals as misses), of those estimated,
    and the fully cached prompts' largest estimate."""
    computed = [p for p in prompts if p.status == "success" and not p.fully_cached]
    estimated = [p for p in computed if answers.get(p.prompt_id) is not None]
    hits = [bool(is_within(p.seconds, answers[p.prompt_id])) for p in estimated]
    cached = [answers.get(p.prompt_id) for p in prompts if p.status == "success"
              and p.fully_cached]
    return {"computed": len(computed), "estimated": len(estimated),
            "within_20_of_computed": round(sum(hits) / len(computed), 3),
            "within_20_of_estimated": round(sum(hits) / max(len(estimated), 1), 3),
            "fully_cached": len(cached),
            "largest_cached_estimate_s": max((c for c in cached if c is not None),
                                             default=None)}


METHODS: dict[str, Callable] = {"job": job_model_estimates, "service": service_estimates,
                                "nodes": node_estimates}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", nargs="+", default=["sd15", "wan21"])
    parser.add_argument("--method", choices=[*METHODS, "all"], default="all")
    options = parser.parse_args(argv)
    methods = list(METHODS) if options.method == "all" else [options.method]
    for run in options.runs:
        prompts = load_recording(options.data / run)
        for method in methods:
            print(run, method, json.dumps(summary(prompts, METHODS[method](prompts))))


if __name__ == "__main__":
    main()
