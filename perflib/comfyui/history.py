"""Judging what ComfyUI's ``/history`` and ``/queue`` say about a prompt, one entry at a time.

A history entry is ``{"prompt": [number, prompt_id, graph, extra_data, outputs, ...], "status":
{"messages": [[event, data], ...]}, ...}`` under its prompt id. An entry whose shape or times do
not hold together raises :class:`BadEntry` with the reason, so that the collector skips it alone:
its prompt id must be its history key; timestamps (milliseconds) must be numbers between 2000
and 2100; ``create_time`` ≤ ``execution_start`` ≤ the end event.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from perflib.record import EARLIEST, LATEST

END_EVENTS = {"execution_success": "success", "execution_error": "failed",
              "execution_interrupted": "cancelled"}
_EARLIEST_MS = EARLIEST.timestamp() * 1000
_LATEST_MS = LATEST.timestamp() * 1000


class BadEntry(ValueError):
    """A history entry or queue item that cannot be read as a prompt; the message says why."""


@dataclass(frozen=True)
class PromptFields:
    """The ``prompt`` list of a history entry or queue item."""

    number: int | float
    prompt_id: str
    graph: Any
    extra_data: Mapping[str, Any]
    outputs: list | None
    created_ms: float | None  # extra_data.create_time


@dataclass(frozen=True)
class FinishedPrompt:
    """A history entry that holds together."""

    fields: PromptFields
    events: Mapping[str, Mapping[str, Any]]  # status messages by event name
    end_event: str
    started_ms: float
    finished_ms: float


def prompt_fields(prompt: Any) -> PromptFields:
    """The fields of a ``prompt`` list; raises BadEntry."""
    if not isinstance(prompt, list) or len(prompt) < 5:
        raise BadEntry("'prompt' is not a list of at least 5 items")
    number, prompt_id, graph, extra_data, outputs = prompt[:5]
    if not isinstance(prompt_id, str) or not prompt_id:
        raise BadEntry(f"prompt id {_shown(prompt_id)} is not text")
    if isinstance(number, bool) or not isinstance(number, (int, float)) \
            or not math.isfinite(number):
        raise BadEntry(f"queue number {_shown(number)} is not a number")
    if not isinstance(extra_data, dict):
        raise BadEntry("extra_data is not a JSON object")
    if outputs is not None and not isinstance(outputs, list):
        raise BadEntry("the outputs to execute are not a list")
    created = extra_data.get("create_time")
    return PromptFields(number, prompt_id, graph, extra_data, outputs,
                        None if created is None else milliseconds(created, "create_time"))


def judge_entry(key: str, entry: Any) -> FinishedPrompt:
    """The history entry under `key` as a finished prompt; raises BadEntry naming the fault."""
    if not isinstance(entry, dict):
        raise BadEntry("not a JSON object")
    fields = prompt_fields(entry.get("prompt"))
    if fields.prompt_id != key:
        raise BadEntry(f"its prompt id {_shown(fields.prompt_id)} is not its history key")
    events = _events(entry.get("status"))
    end_event = next((name for name in END_EVENTS if name in events), None)
    if end_event is None:
        raise BadEntry(f"no end event ({', '.join(END_EVENTS)})")
    if "execution_start" not in events:
        raise BadEntry("no execution_start event")
    started = milliseconds(events["execution_start"].get("timestamp"),
                           "execution_start timestamp")
    finished = milliseconds(events[end_event].get("timestamp"), f"{end_event} timestamp")
    if fields.created_ms is not None and fields.created_ms > started:
        raise BadEntry("create_time is after execution_start")
    if started > finished:
        raise BadEntry(f"{end_event} is before execution_start")
    if not isinstance(events.get("execution_cached", {}).get("nodes", []), list):
        raise BadEntry("execution_cached nodes are not a list")
    return FinishedPrompt(fields, events, end_event, started, finished)


def milliseconds(value: Any, name: str) -> float:
    """A ComfyUI timestamp (milliseconds since the epoch) between 2000 and 2100."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEntry(f"{name} {_shown(value)} is not a number")
    if not _EARLIEST_MS <= value < _LATEST_MS:  # also refuses NaN
        raise BadEntry(f"{name} {_shown(value)} is not a time between "
                       f"{EARLIEST.year} and {LATEST.year}")
    return float(value)


def _events(status: Any) -> dict[str, Mapping[str, Any]]:
    if status is None:
        return {}
    messages = status.get("messages", []) if isinstance(status, dict) else None
    if not isinstance(messages, list):
        raise BadEntry("status messages are not a list")
    events = {}
    for message in messages:
        if not (isinstance(message, list) and len(message) == 2 and
                isinstance(message[0], str) and isinstance(message[1], dict)):
            raise BadEntry("a status message is not [event name, payload object]")
        events[message[0]] = message[1]
    return events


def queue_depths(spans: Iterable[tuple[str, float, float]]) -> dict[str, int]:
    """Per prompt id, from (prompt id, created, ended) spans of one server: how many other
    prompts were queued or running when it was created (created before it, ended after it was
    created). Sorted once, then one binary search per prompt: O(n log n)."""
    spans = list(spans)
    created = sorted(span[1] for span in spans)
    ended = sorted(span[2] for span in spans)
    instant = Counter(span[1] for span in spans if span[1] == span[2])
    # #(created < c < ended) = #(created < c) - #(ended <= c) + #(created = ended = c),
    # as created <= ended in every span
    return {prompt_id: bisect.bisect_left(created, c) - bisect.bisect_right(ended, c) + instant[c]
            for prompt_id, c, _ in spans}


def _shown(value: Any) -> str:
    return repr(value)[:80]
