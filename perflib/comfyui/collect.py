"""Collect every prompt ComfyUI servers run into the perflib store, by polling their HTTP API.

Per server and poll: ``GET /queue`` (running and pending prompts become live jobs, estimated by
their graphs, so ``estimate-time``'s queue ETA counts them), then ``GET /history?max_items=N``
(the newest finished prompts; N grows until it reaches one already stored), each finished prompt
stored once as ``comfyui-<prompt id>`` (idempotent across restarts: the job id is unique). Times
come from the server's own status messages (``execution_start`` → ``execution_success`` /
``execution_error`` / ``execution_interrupted``); the queue wait from ``extra_data.create_time``,
else from when the prompt was first seen in ``/queue``. A prompt whose every node was served
from ComfyUI's cache is stored as a cache hit (job type ``comfyui-cache-hit``), which training
leaves out. A live job that left the queue without finishing (deleted) is removed.

Several servers are polled at once, one thread each; a server that is down is retried with
exponential backoff and reported, and never stops the others.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import sqlalchemy as sa

from perflib.comfyui.graph import parse_prompt
from perflib.record import LIVE_STATUSES, RecordError, job_record, salvaged_record
from perflib.store import Store
from perflib.store.deletion import delete_jobs
from perflib.store.schema import generation_performance as jobs_table

log = logging.getLogger(__name__)

JOB_PREFIX = "comfyui-"
HISTORY_PAGE = 64  # newest history entries asked for first; grows ×4 until one is known
MAX_BACKOFF_SECONDS = 60.0
END_EVENTS = {"execution_success": "success", "execution_error": "failed",
              "execution_interrupted": "cancelled"}
DEFAULT_TIMEOUT_SECONDS = 10.0


class ServerDown(Exception):
    """The server did not answer, or answered something that is not its API."""


def job_id(prompt_id: str) -> str:
    """The perflib job id of a ComfyUI prompt (the custom node uses the same)."""
    return f"{JOB_PREFIX}{prompt_id}"


class ComfyClient:
    """GET requests to one ComfyUI server, answers decoded from JSON."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, **query: Any) -> Any:
        target = self.url + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(target, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad JSON
            raise ServerDown(f"GET {target}: {exc}") from None


@dataclass
class ServerStatus:
    """How polling one server goes, for the log and ``perflib comfyui collect``'s summary."""

    url: str
    hostname: str
    gpu_name: str | None = None
    up: bool = False
    failures: int = 0  # consecutive
    last_error: str | None = None
    next_try: float = 0.0  # time.monotonic()
    stored: int = 0  # finished prompts stored by this collector
    live: int = 0  # running and pending prompts in the last poll

    def summary(self) -> str:
        state = "up" if self.up else f"DOWN ({self.failures} failed polls: {self.last_error})"
        return (f"{self.url} [{self.gpu_name or 'device unknown'}]: {state}; {self.stored} "
                f"prompts stored, {self.live} running or queued")


# -- records ------------------------------------------------------------------------------------
def finished_record(entry: Mapping[str, Any], server: ServerStatus,
                    first_seen: float | None = None, queue_depth: int | None = None) -> dict:
    """The job record of one ``/history`` entry (a finished prompt)."""
    number, prompt_id, graph, extra_data, outputs = entry["prompt"][:5]
    events = {name: data for name, data in entry.get("status", {}).get("messages", [])}
    end_event = next((name for name in END_EVENTS if name in events), None)
    started = _stamp(events.get("execution_start", {}).get("timestamp"))
    finished = _stamp(events.get(end_event, {}).get("timestamp")) if end_event else None
    submitted = _stamp(extra_data.get("create_time")) or _instant(first_seen) or started
    record = _graph_record(prompt_id, graph, outputs, server)
    cached = [str(node) for node in events.get("execution_cached", {}).get("nodes", [])]
    comfy = record["extra_params"]["comfyui"]
    comfy.update(number=number, cached_nodes=cached)
    parsed = comfy.pop("parsed", None)
    status = END_EVENTS.get(end_event, "failed")
    if parsed is not None:
        parsed.mark_cache_use(graph, cached, status == "success", record, comfy)
    record.update(status=status, submitted_at=submitted, queued_at=submitted,
                  started_at=started, finished_at=finished, queue_depth=queue_depth,
                  **_durations(submitted, started, finished), **_error(end_event, events, comfy))
    return record


def live_record(item: list, status: str, server: ServerStatus, first_seen: float,
                running_since: float | None) -> dict:
    """The job record of a ``/queue`` item (running or pending)."""
    number, prompt_id, graph, extra_data, outputs = item[:5]
    submitted = _stamp(extra_data.get("create_time")) or _instant(first_seen)
    record = _graph_record(prompt_id, graph, outputs, server)
    record["extra_params"]["comfyui"].pop("parsed", None)
    record["extra_params"]["comfyui"]["number"] = number
    record.update(status=status, submitted_at=submitted, queued_at=submitted,
                  started_at=_instant(running_since) if status == "running" else None)
    return record


def _graph_record(prompt_id: str, graph: Any, outputs: Any, server: ServerStatus) -> dict:
    """The job's parameters from its graph; a graph that cannot be parsed is still a job."""
    try:
        parsed = parse_prompt(graph, [str(o) for o in outputs] if outputs else None)
    except ValueError as exc:
        params = {"pipeline_type": "image", "job_type": "comfyui", "passes": [],
                  "extra_params": {"comfyui": {"parse_error": str(exc)}}}
        parsed = None
    else:
        params = parsed.job_params()
    params["extra_params"]["comfyui"].update(server=server.url, parsed=parsed)
    return {"job_id": job_id(prompt_id), **params, "hostname": server.hostname,
            "gpu_name": server.gpu_name}


def _durations(submitted: datetime | None, started: datetime | None,
               finished: datetime | None) -> dict[str, float | None]:
    def seconds(a, b):
        return None if a is None or b is None else max(0.0, (b - a).total_seconds())
    return {"queue_seconds": seconds(submitted, started),
            "processing_seconds": seconds(started, finished),
            "total_seconds": seconds(submitted or started, finished)}


def _error(end_event: str | None, events: Mapping, comfy: dict) -> dict[str, str | None]:
    """error_type and error_message; the failing node goes into the extra params."""
    data = events.get(end_event, {})
    if end_event == "execution_error":
        comfy["error_node"] = {"id": data.get("node_id"), "type": data.get("node_type")}
        return {"error_type": data.get("exception_type"),
                "error_message": str(data.get("exception_message", "")).strip()}
    if end_event == "execution_interrupted":
        comfy["error_node"] = {"id": data.get("node_id"), "type": data.get("node_type")}
        return {"error_type": "interrupted",
                "error_message": f"interrupted at node {data.get('node_id')} "
                                 f"({data.get('node_type')})"}
    if end_event is None:
        return {"error_type": "unknown", "error_message": "history entry has no end event"}
    return {"error_type": None, "error_message": None}


def _stamp(milliseconds: Any) -> datetime | None:
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, (int, float)):
        return None
    return datetime.fromtimestamp(milliseconds / 1000.0, timezone.utc)


def _instant(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)


def queue_depths(history: Mapping[str, Mapping]) -> dict[str, int]:
    """Per prompt id: how many prompts of the same server were queued or running when it was
    submitted (created before it, finished after it was created)."""
    spans = []
    for prompt_id, entry in history.items():
        created = entry["prompt"][3].get("create_time")
        messages = entry.get("status", {}).get("messages", [])
        ended = messages[-1][1].get("timestamp") if messages else None
        spans.append((prompt_id, created, ended))
    depths = {}
    for prompt_id, created, _ in spans:
        if created is not None:
            depths[prompt_id] = sum(1 for other, c, e in spans if other != prompt_id and
                                    c is not None and e is not None and c < created < e)
    return depths


# -- polling --------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What one server's poller remembers between polls."""

    finished: set[str] = field(default_factory=set)  # prompt ids stored as finished
    first_seen: dict[str, float] = field(default_factory=dict)  # in /queue, epoch seconds
    running_since: dict[str, float] = field(default_factory=dict)


class ServerPoller:
    """Polls one ComfyUI server into the store."""

    def __init__(self, url: str, store: Store, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 page: int = HISTORY_PAGE):
        self.client = ComfyClient(url, timeout)
        self.store = store
        self.page = page
        self.status = ServerStatus(url=self.client.url, hostname=_host_port(self.client.url))
        self._seen = _Seen()

    def poll(self) -> int:
        """One poll; returns how many finished prompts were newly stored. Raises ServerDown."""
        if self.status.gpu_name is None:
            self.status.gpu_name = _device_name(self.client.get("/system_stats"))
        queue = self.client.get("/queue")  # before history: a prompt in neither has gone
        page, new = self._new_history()
        stored = self._store_finished(page, new)
        self._store_live(queue, set(new))
        return stored

    def _new_history(self) -> tuple[dict[str, Mapping], list[str]]:
        """The newest /history entries, back to one already stored (or the whole history),
        and the ids among them not stored yet, oldest first."""
        page = self.page
        while True:
            history = self.client.get("/history", max_items=page)
            if not isinstance(history, dict):
                raise ServerDown(f"GET {self.client.url}/history: not a JSON object")
            known = self._known_finished(list(history))
            if len(history) < page or next(iter(history)) in known:
                break
            page *= 4
        self._seen.finished = known
        return history, [prompt_id for prompt_id in history if prompt_id not in known]

    def _known_finished(self, prompt_ids: list[str]) -> set[str]:
        unknown = [p for p in prompt_ids if p not in self._seen.finished]
        known = set(prompt_ids) - set(unknown)
        for start in range(0, len(unknown), 500):
            ids = [job_id(p) for p in unknown[start:start + 500]]
            stored = self.store.frame(sa.select(jobs_table.c.job_id).where(
                jobs_table.c.job_id.in_(ids), jobs_table.c.status.not_in(LIVE_STATUSES)))
            known |= {stored_id[len(JOB_PREFIX):] for stored_id in stored.job_id}
        return known

    def _store_finished(self, page: Mapping[str, Mapping], new: list[str]) -> int:
        if not new:
            return 0
        depths = queue_depths(page)
        records = []
        for prompt_id in new:
            values = finished_record(page[prompt_id], self.status,
                                     self._seen.first_seen.get(prompt_id), depths.get(prompt_id))
            try:  # a parameter the record refuses moves to extra_params, the job is kept
                records.append(salvaged_record(values))
            except RecordError as exc:
                log.warning("%s: prompt %s not stored: %s", self.status.url, prompt_id, exc)
        stored = self.store.write_jobs(records, replace_live=True)
        self._seen.finished |= set(new)
        for prompt_id in new:
            self._seen.first_seen.pop(prompt_id, None)
            self._seen.running_since.pop(prompt_id, None)
        self.status.stored += stored
        return stored

    def _store_live(self, queue: Any, just_finished: set[str]) -> None:
        """Running and pending prompts as live jobs; live rows of prompts gone from the queue
        without finishing (deleted) are removed."""
        if not isinstance(queue, dict):
            raise ServerDown(f"GET {self.client.url}/queue: not a JSON object")
        now = time.time()
        items = [(item, "running") for item in queue.get("queue_running", [])] + \
            [(item, "queued") for item in queue.get("queue_pending", [])]
        records = []
        for item, status in items:
            prompt_id = item[1]
            if prompt_id in just_finished or prompt_id in self._seen.finished:
                continue
            first = self._seen.first_seen.setdefault(prompt_id, now)
            since = self._seen.running_since.setdefault(prompt_id, now) \
                if status == "running" else None
            try:
                records.append(job_record(live_record(item, status, self.status, first, since)))
            except RecordError as exc:  # no size or steps to estimate it by
                log.debug("%s: live prompt %s not recorded: %s", self.status.url, prompt_id, exc)
        if records:
            self.store.write_jobs(records, replace_live=True)
        self.status.live = len(records)
        in_queue = {job_id(item[1]) for item, _ in items}
        gone = [j for j in self._stored_live_ids() if j not in in_queue]
        if gone:
            removed = self._forget_live(gone)
            log.info("%s: %d live prompts left the queue without finishing (deleted)",
                     self.status.url, removed)
        for prompt_id in set(self._seen.first_seen) - {item[1] for item, _ in items}:
            self._seen.first_seen.pop(prompt_id, None)
            self._seen.running_since.pop(prompt_id, None)

    def _forget_live(self, ids: list[str]) -> int:
        """Delete live rows of these jobs (finished rows are never touched)."""
        with self.store.engine.begin() as conn:
            return delete_jobs(conn, sa.and_(jobs_table.c.job_id.in_(ids),
                                             jobs_table.c.status.in_(LIVE_STATUSES)))

    def _stored_live_ids(self) -> list[str]:
        live = self.store.frame(sa.select(jobs_table.c.job_id).where(
            jobs_table.c.status.in_(LIVE_STATUSES),
            jobs_table.c.hostname == self.status.hostname,
            jobs_table.c.job_id.startswith(JOB_PREFIX)))
        return list(live.job_id)


class Collector:
    """Polls several ComfyUI servers into one store, each in its own thread."""

    def __init__(self, urls: Iterable[str], store: Store | None = None,
                 interval: float = 2.0, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.urls = list(urls)
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self._pollers: list[ServerPoller] | None = None

    @property
    def pollers(self) -> list[ServerPoller]:
        if self._pollers is None:
            store = self.store or Store()
            self._pollers = [ServerPoller(url, store, self.timeout) for url in self.urls]
        return self._pollers

    def statuses(self) -> list[ServerStatus]:
        return [poller.status for poller in self.pollers]

    def poll_once(self) -> int:
        """Poll every server whose backoff has run out, all at once; newly stored prompts."""
        due = [p for p in self.pollers if p.status.next_try <= time.monotonic()]
        if not due:
            return 0
        with ThreadPoolExecutor(max_workers=len(due), thread_name_prefix="perflib-comfyui") \
                as pool:
            return sum(pool.map(self._poll_safely, due))

    def run(self, stop: threading.Event | None = None,
            on_change: Callable[[ServerStatus], None] | None = None) -> None:
        """Poll every `interval` seconds until `stop` is set; `on_change` hears of each server
        whose summary changed (came up, went down, stored prompts)."""
        stop = stop or threading.Event()
        shown: dict[str, str] = {}
        while not stop.is_set():
            self.poll_once()
            for status in self.statuses():
                if on_change is not None and shown.get(status.url) != status.summary():
                    shown[status.url] = status.summary()
                    on_change(status)
            stop.wait(self.interval)

    def _poll_safely(self, poller: ServerPoller) -> int:
        """One poll of one server; any failure is logged, backed off from, and counted."""
        status = poller.status
        try:
            stored = poller.poll()
        except Exception as exc:  # a server or store failure never stops the collector
            status.failures += 1
            status.up = False
            status.last_error = str(exc) if isinstance(exc, ServerDown) else repr(exc)
            backoff = min(self.interval * 2 ** status.failures, MAX_BACKOFF_SECONDS)
            status.next_try = time.monotonic() + backoff
            log.warning("%s: poll failed (%d in a row), retrying in %.1f s: %s", status.url,
                        status.failures, backoff, status.last_error)
            return 0
        if not status.up and status.failures:
            log.warning("%s: reachable again after %d failed polls", status.url,
                        status.failures)
        status.up, status.failures, status.last_error, status.next_try = True, 0, None, 0.0
        return stored


def _device_name(stats: Any) -> str | None:
    try:
        return str(stats["devices"][0]["name"])
    except (KeyError, IndexError, TypeError):
        return None


def _host_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
