"""One executed prompt as a perflib job record, built from the server's own messages.

A node's phase runs from when ComfyUI reports it running (``progress_state``, sent whether or not
the prompt has a client; ``executing`` where only that is sent) to when it reports it finished;
its name is ``"<node id>:<class_type>"``. Sampler speed comes from the ``progress`` messages: the
steps between the first and the last one over the time between them. Start, end and outcome come
from ``execution_start`` and ``execution_success`` / ``execution_error`` /
``execution_interrupted`` (their server timestamps), or from the prompt's history entry, which
holds the same messages, when the server sent them to no client.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .graph import parse_prompt

logger = logging.getLogger("perflib_estimate")

END_EVENTS = {"execution_success": "success", "execution_error": "failed",
              "execution_interrupted": "cancelled"}
PHASE_NAME_LENGTH = 100  # the longest phase name the store keeps
IDENTITY_FIELDS = {"job_id", "pipeline_type", "status", "submitted_at", "started_at",
                   "finished_at", "total_seconds"}


@dataclass
class NodeTiming:
    started: float  # epoch seconds
    seconds: float | None = None  # None while running


@dataclass
class StepProgress:
    first_time: float
    first_value: float
    last_time: float
    last_value: float

    def rate(self) -> float | None:
        """Steps per second between the first and the last progress message."""
        elapsed = self.last_time - self.first_time
        done = self.last_value - self.first_value
        return done / elapsed if elapsed > 0 and done > 0 else None


@dataclass
class PromptRun:
    """What the server said about one prompt while it ran."""

    prompt_id: str
    first_seen: float
    started_ms: int | None = None
    ended_ms: int | None = None
    end_event: str | None = None
    end_data: dict = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    nodes: dict[str, NodeTiming] = field(default_factory=dict)  # in the order they started
    progress: dict[str, StepProgress] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.end_event is not None

    def observe(self, event: str, data: dict, now: float) -> None:
        """Take one message about this prompt, received (or sent) at `now`."""
        if event == "execution_start":
            self.started_ms = _millis(data, now)
        elif event == "execution_cached":
            self.cached_nodes = [str(node) for node in data.get("nodes") or ()]
        elif event == "progress_state":
            self._node_states(data.get("nodes") or {}, now)
        elif event == "executing":
            self._executing(data.get("node"), now)
        elif event == "progress":
            self._progress(data, now)
        elif event in END_EVENTS:
            self.ended_ms = _millis(data, now)
            self.end_event, self.end_data = event, data
            self._close_all(self.ended_ms / 1000)  # the server's time, even from history

    def observe_history(self, entry: dict, now: float) -> None:
        """Take the status messages of the prompt's history entry (they carry timestamps)."""
        for event, data in (entry.get("status") or {}).get("messages") or ():
            if event in ("execution_start", "execution_cached") or event in END_EVENTS:
                if event != "execution_start" or self.started_ms is None:
                    self.observe(event, data if isinstance(data, dict) else {}, now)

    def _node_states(self, states: dict, now: float) -> None:
        for node_id, state in states.items():
            state = state.get("state") if isinstance(state, dict) else None
            if state == "running" and str(node_id) not in self.nodes:
                self.nodes[str(node_id)] = NodeTiming(now)
            elif state in ("finished", "error"):
                self._close(str(node_id), now)

    def _executing(self, node_id: Any, now: float) -> None:
        for other in [n for n in self.nodes if n != str(node_id)]:
            self._close(other, now)
        if node_id is not None and str(node_id) not in self.nodes:
            self.nodes[str(node_id)] = NodeTiming(now)

    def _progress(self, data: dict, now: float) -> None:
        node_id, value = str(data.get("node")), data.get("value")
        if not isinstance(value, (int, float)):
            return
        seen = self.progress.get(node_id)
        if seen is None:
            self.progress[node_id] = StepProgress(now, value, now, value)
        else:
            seen.last_time, seen.last_value = now, value

    def _close(self, node_id: str, now: float) -> None:
        timing = self.nodes.get(node_id)
        if timing is not None and timing.seconds is None:
            timing.seconds = max(0.0, now - timing.started)

    def _close_all(self, now: float) -> None:
        for node_id in self.nodes:
            self._close(node_id, now)


@dataclass(frozen=True)
class RunContext:
    """What the record says about where and how the prompt ran, besides its messages: the
    prompt's queue entry (graph, extra data, outputs to execute), the server and the estimate."""

    graph: dict | None
    extra_data: dict = field(default_factory=dict)
    outputs: list | None = None
    number: float | None = None
    hostname: str | None = None
    gpu_name: str | None = None
    predicted_seconds: float | None = None
    gpu_stats: dict = field(default_factory=dict)


def job_record(run: PromptRun, context: RunContext) -> dict[str, Any]:
    """The finished prompt as a job record for the service's ``record-metrics``, with the same
    fields ``perflib comfyui collect`` writes for it, plus phases and sampler speed."""
    graph = context.graph or {}
    record, comfy, parsed = _job_params(graph, context.outputs)
    started = _started(run)
    finished = max(started, run.ended_ms / 1000 if run.ended_ms is not None else started)
    created_ms = context.extra_data.get("create_time")
    submitted = started
    if isinstance(created_ms, (int, float)) and not isinstance(created_ms, bool):
        submitted = min(created_ms / 1000, started)
    record.update(job_id=f"comfyui-{run.prompt_id}", status=END_EVENTS[run.end_event],
                  submitted_at=_iso(submitted), queued_at=_iso(submitted),
                  started_at=_iso(started), finished_at=_iso(finished),
                  queue_seconds=round(started - submitted, 6),
                  processing_seconds=round(finished - started, 6),
                  total_seconds=round(finished - submitted, 6),
                  hostname=context.hostname, gpu_name=context.gpu_name,
                  predicted_seconds=context.predicted_seconds, phases=_phases(run, graph),
                  **context.gpu_stats)
    comfy.update(number=context.number, recorded_by="perflib_estimate node",
                 cached_nodes=run.cached_nodes, executed_nodes=list(run.nodes),
                 sampler_its={node: round(rate, 4) for node, p in run.progress.items()
                              if (rate := p.rate()) is not None})
    if parsed is not None:
        parsed.mark_cache_use(graph, run.cached_nodes, run.end_event == "execution_success",
                              record, comfy)
    record.update(_error(run))
    if run.end_event != "execution_success":
        comfy["error_node"] = {"id": run.end_data.get("node_id"),
                               "type": run.end_data.get("node_type")}
    return {name: value for name, value in record.items() if value is not None}


def _job_params(graph: dict, outputs: list | None) -> tuple[dict, dict, Any]:
    """The graph's job parameters, as the collector derives them (same parser, same outputs)."""
    try:
        parsed = parse_prompt(graph, [str(o) for o in outputs] if outputs else None)
        params = parsed.job_params()
    except Exception as exc:  # a graph the parser cannot read (or a parser bug): still a job
        logger.warning("perflib: could not parse the prompt graph: %r", exc)
        parsed = None
        params = {"pipeline_type": "image", "job_type": "comfyui", "passes": [],
                  "extra_params": {"comfyui": {"parse_error": str(exc)}}}
    extra = params.pop("extra_params", None) or {}
    comfy = dict(extra.get("comfyui") or {})
    params["extra_params"] = {**extra, "comfyui": comfy}
    return params, comfy, parsed


def _error(run: PromptRun) -> dict[str, str | None]:
    """error_type and error_message, worded as the collector words them."""
    data = run.end_data
    if run.end_event == "execution_error":
        return {"error_type": data.get("exception_type"),
                "error_message": str(data.get("exception_message", "")).strip()}
    if run.end_event == "execution_interrupted":
        return {"error_type": "interrupted",
                "error_message": f"interrupted at node {data.get('node_id')} "
                                 f"({data.get('node_type')})"}
    return {}


def _phases(run: PromptRun, graph: dict) -> list[dict]:
    phases = []
    for seq, (node_id, timing) in enumerate(run.nodes.items()):
        class_type = (graph.get(node_id) or {}).get("class_type") or "unknown"
        phases.append({"name": f"{node_id}:{class_type}"[:PHASE_NAME_LENGTH], "seq": seq,
                       "started_at": _iso(timing.started),
                       "seconds": round(timing.seconds or 0.0, 6)})
    return phases


def _started(run: PromptRun) -> float:
    if run.started_ms is not None:
        return run.started_ms / 1000
    firsts = [timing.started for timing in run.nodes.values()]
    return min(firsts) if firsts else run.first_seen


def _millis(data: dict, now: float) -> int:
    stamp = data.get("timestamp")
    valid = isinstance(stamp, (int, float)) and not isinstance(stamp, bool)
    return int(stamp) if valid else int(now * 1000)


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).isoformat()


def salvaged(record: dict, refused: dict[str, str]) -> dict | None:
    """The record with the parameters the service refused moved to
    ``extra_params["invalid_fields"]`` (as the collector keeps them), so the measured job is
    still stored; None when an identifying field was refused or nothing can be moved."""
    if not refused or any(name in IDENTITY_FIELDS or name not in record for name in refused):
        return None
    kept = {name: value for name, value in record.items() if name not in refused}
    extra = dict(kept.get("extra_params") or {})
    invalid = dict(extra.get("invalid_fields") or {})
    invalid.update({name: {"value": record[name], "error": reason}
                    for name, reason in refused.items()})
    kept["extra_params"] = {**extra, "invalid_fields": invalid}
    return kept
