"""Collect every prompt ComfyUI servers run into the perflib store, by polling their HTTP API.

Per server and poll: ``GET /queue`` (running and pending prompts become live jobs, estimated by
their graphs, so ``estimate-time``'s queue ETA counts them), then ``GET /history?max_items=N``
(the newest N finished prompts). When the oldest of those is not stored yet, prompts may have
been missed since the last poll, and the whole history is read again oldest first, a page of N
at a time (``GET /history?max_items=N&offset=M``), so no answer is bigger than a page. Each
finished prompt is stored once as ``comfyui-<prompt id>`` (idempotent across restarts: the job
id is unique). Times come from the server's own status messages (``execution_start`` →
``execution_success`` / ``execution_error`` / ``execution_interrupted``); the queue wait from
``extra_data.create_time``, else from when the prompt was first seen in ``/queue``. Each entry is
judged alone (:mod:`perflib.comfyui.history`): one that does not hold together is logged once
with its id and the reason, and skipped. A prompt whose every node was served from ComfyUI's
cache is stored as a cache hit (job type ``comfyui-cache-hit``), which training leaves out. A
live job that left the queue without finishing (deleted) is removed.

Each server is polled in its own thread, each request with a total deadline and a size cap
(:mod:`perflib.comfyui.client`); a server that is down or slow is retried with exponential
backoff and reported, and never delays or stops the others.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

import sqlalchemy as sa

from perflib.comfyui.client import (DEFAULT_TIMEOUT_SECONDS, MAX_ANSWER_BYTES, ComfyClient,
                                    ServerDown)
from perflib.comfyui.graph import parse_prompt
from perflib.comfyui.history import (END_EVENTS, BadEntry, FinishedPrompt, PromptFields,
                                     judge_entry, prompt_fields, queue_depths)
from perflib.record import LIVE_STATUSES, RecordError, job_record, salvaged_record
from perflib.store import Store
from perflib.store.deletion import delete_jobs
from perflib.store.schema import generation_performance as jobs_table

log = logging.getLogger(__name__)

JOB_PREFIX = "comfyui-"
HISTORY_PAGE = 64  # history entries asked for at once
MAX_BACKOFF_SECONDS = 60.0


def job_id(prompt_id: str) -> str:
    """The perflib job id of a ComfyUI prompt (the custom node uses the same)."""
    return f"{JOB_PREFIX}{prompt_id}"


@dataclass
class ServerStatus:
    """How polling one server goes, for the log and ``perflib comfyui collect``'s summary."""

    url: str
    hostname: str
    gpu_name: str | None = None
    up: bool = False
    failures: int = 0  # consecutive
    last_error: str | None = None
    next_try: float = 0.0  # on the collector's clock (time.monotonic())
    stored: int = 0  # finished prompts stored by this collector
    live: int = 0  # running and pending prompts in the last poll

    def summary(self) -> str:
        state = "up" if self.up else f"DOWN ({self.failures} failed polls: {self.last_error})"
        return (f"{self.url} [{self.gpu_name or 'device unknown'}]: {state}; {self.stored} "
                f"prompts stored, {self.live} running or queued")


# -- records ------------------------------------------------------------------------------------
def finished_record(prompt: FinishedPrompt, server: ServerStatus,
                    first_seen: float | None = None, queue_depth: int | None = None) -> dict:
    """The job record of a judged ``/history`` entry (a finished prompt). Without create_time,
    the wait counts from when the collector first saw the prompt queued (never after it
    started: the two clocks may differ)."""
    fields, events = prompt.fields, prompt.events
    started = _instant(prompt.started_ms / 1000)
    finished = _instant(prompt.finished_ms / 1000)
    if fields.created_ms is not None:
        submitted = _instant(fields.created_ms / 1000)
    else:
        submitted = min(_instant(first_seen), started) if first_seen is not None else started
    record = _graph_record(fields, server)
    cached = [str(node) for node in events.get("execution_cached", {}).get("nodes", [])]
    comfy = record["extra_params"]["comfyui"]
    comfy.update(number=fields.number, cached_nodes=cached)
    parsed = comfy.pop("parsed", None)
    status = END_EVENTS[prompt.end_event]
    if parsed is not None:
        parsed.mark_cache_use(fields.graph, cached, status == "success", record, comfy)
    record.update(status=status, submitted_at=submitted, queued_at=submitted,
                  started_at=started, finished_at=finished, queue_depth=queue_depth,
                  queue_seconds=_seconds(submitted, started),
                  processing_seconds=_seconds(started, finished),
                  total_seconds=_seconds(submitted, finished),
                  **_error(prompt.end_event, events, comfy))
    return record


def live_record(fields: PromptFields, status: str, server: ServerStatus, first_seen: float,
                running_since: float | None) -> dict:
    """The job record of a ``/queue`` item (running or pending)."""
    submitted = _instant(first_seen if fields.created_ms is None else fields.created_ms / 1000)
    record = _graph_record(fields, server)
    record["extra_params"]["comfyui"].pop("parsed", None)
    record["extra_params"]["comfyui"]["number"] = fields.number
    record.update(status=status, submitted_at=submitted, queued_at=submitted,
                  started_at=_instant(running_since) if status == "running" else None)
    return record


def _graph_record(fields: PromptFields, server: ServerStatus) -> dict:
    """The job's parameters from its graph; a graph that cannot be parsed is still a job."""
    outputs = [str(o) for o in fields.outputs] if fields.outputs else None
    try:
        parsed = parse_prompt(fields.graph, outputs)
    except ValueError as exc:
        params = {"pipeline_type": "image", "job_type": "comfyui", "passes": [],
                  "extra_params": {"comfyui": {"parse_error": str(exc)}}}
        parsed = None
    else:
        params = parsed.job_params()
    params["extra_params"]["comfyui"].update(server=server.url, parsed=parsed)
    return {"job_id": job_id(fields.prompt_id), **params, "hostname": server.hostname,
            "gpu_name": server.gpu_name}


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _error(end_event: str, events: Mapping, comfy: dict) -> dict[str, str | None]:
    """error_type and error_message; the failing node goes into the extra params."""
    data = events[end_event]
    if end_event == "execution_error":
        comfy["error_node"] = {"id": data.get("node_id"), "type": data.get("node_type")}
        return {"error_type": data.get("exception_type"),
                "error_message": str(data.get("exception_message", "")).strip()}
    if end_event == "execution_interrupted":
        comfy["error_node"] = {"id": data.get("node_id"), "type": data.get("node_type")}
        return {"error_type": "interrupted",
                "error_message": f"interrupted at node {data.get('node_id')} "
                                 f"({data.get('node_type')})"}
    return {"error_type": None, "error_message": None}


def _instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


# -- polling --------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What one server's poller remembers between polls."""

    finished: set[str] = field(default_factory=set)  # prompt ids stored as finished
    refused: set[str] = field(default_factory=set)  # history entries judged bad (logged once)
    first_seen: dict[str, float] = field(default_factory=dict)  # in /queue, epoch seconds
    running_since: dict[str, float] = field(default_factory=dict)


class ServerPoller:
    """Polls one ComfyUI server into the store."""

    def __init__(self, url: str, store: Store, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 page: int = HISTORY_PAGE, max_bytes: int = MAX_ANSWER_BYTES):
        self.client = ComfyClient(url, timeout, max_bytes)
        self.store = store
        self.page = page
        self.status = ServerStatus(url=self.client.url, hostname=_host_port(self.client.url))
        self._seen = _Seen()

    def poll(self) -> int:
        """One poll; returns how many finished prompts were newly stored. Raises ServerDown."""
        if self.status.gpu_name is None:
            self.status.gpu_name = _device_name(self.client.get("/system_stats"))
        queue = self.client.get("/queue")  # before history: a prompt in neither has gone
        if not isinstance(queue, dict):
            raise ServerDown(f"GET {self.client.url}/queue: not a JSON object")
        stored_before = self.status.stored
        ended = self._collect_history()
        self._store_live(queue, ended)
        return self.status.stored - stored_before

    def _collect_history(self) -> set[str]:
        """Store the finished prompts not stored yet: from the newest history page when its
        oldest entry is known (nothing was missed), else from every page, oldest first. The ids
        read; what the poller remembers shrinks to them (refused ids after a whole read)."""
        newest = self._history(max_items=self.page)
        oldest = next(iter(newest), None)
        if len(newest) < self.page or oldest in self._known([oldest]):
            pages: Iterable[dict[str, Any]] = [newest]
            whole = len(newest) < self.page
        else:
            pages, whole = self._every_page(), True
        ended: set[str] = set()
        context: list[tuple[str, float, float]] = []  # the previous page's spans
        for page in pages:
            context = self._store_page(page, context)
            ended |= set(page)
        self._seen.finished &= ended
        if whole:
            self._seen.refused &= ended
        return ended

    def _every_page(self) -> Iterator[dict[str, Any]]:
        """The whole history, oldest first, a page at a time."""
        read: set[str] = set()
        for offset in itertools.count(0, self.page):
            page = self._history(max_items=self.page, offset=offset)
            if read.issuperset(page):  # the end, or a server that ignores the offset
                return
            read |= set(page)
            yield page
            if len(page) < self.page:
                return

    def _history(self, **query: int) -> dict[str, Any]:
        page = self.client.get("/history", **query)
        if not isinstance(page, dict):
            raise ServerDown(f"GET {self.client.url}/history: not a JSON object")
        return page

    def _known(self, prompt_ids: list[str]) -> set[str]:
        """Those of the ids stored as finished (remembered, else asked of the store) or refused."""
        unknown = [p for p in prompt_ids
                   if p not in self._seen.finished and p not in self._seen.refused]
        known = set(prompt_ids) - set(unknown)
        for start in range(0, len(unknown), 500):
            ids = [job_id(p) for p in unknown[start:start + 500]]
            stored = self.store.frame(sa.select(jobs_table.c.job_id).where(
                jobs_table.c.job_id.in_(ids), jobs_table.c.status.not_in(LIVE_STATUSES)))
            found = {stored_id[len(JOB_PREFIX):] for stored_id in stored.job_id}
            self._seen.finished |= found
            known |= found
        return known

    def _store_page(self, page: Mapping[str, Any], context: list[tuple[str, float, float]]
                    ) -> list[tuple[str, float, float]]:
        """Store the page's new entries; the page's spans (the next page's context for queue
        depths)."""
        known = self._known(list(page))
        judged: dict[str, FinishedPrompt] = {}
        for prompt_id, entry in page.items():
            try:
                judged[prompt_id] = judge_entry(prompt_id, entry)
            except BadEntry as exc:
                if prompt_id not in known:
                    self._refuse(prompt_id, str(exc))
        spans = [(p, e.fields.created_ms, e.finished_ms) for p, e in judged.items()
                 if e.fields.created_ms is not None]
        depths = queue_depths(context + spans)
        records = []
        for prompt_id, prompt in judged.items():
            if prompt_id in known:
                continue
            values = finished_record(prompt, self.status, self._seen.first_seen.get(prompt_id),
                                     depths.get(prompt_id))
            try:  # a parameter the record refuses moves to extra_params, the job is kept
                records.append(salvaged_record(values))
            except RecordError as exc:
                self._refuse(prompt_id, str(exc))
        if records:
            self.status.stored += self.store.write_jobs(records, replace_live=True)
            self._seen.finished |= {record["job_id"][len(JOB_PREFIX):] for record in records}
        return spans

    def _refuse(self, prompt_id: str, reason: str) -> None:
        """Skip a history entry for good, logged once."""
        self._seen.refused.add(prompt_id)
        log.warning("%s: history entry %.80r not stored: %s", self.status.url, prompt_id, reason)

    def _store_live(self, queue: Mapping[str, Any], ended: set[str]) -> None:
        """Running and pending prompts as live jobs; live rows of prompts gone from the queue
        without finishing (deleted) are removed."""
        now = time.time()
        items = self._queue_items(queue)
        records = []
        for fields, status in items:
            prompt_id = fields.prompt_id
            if prompt_id in ended or prompt_id in self._seen.finished:
                continue
            first = self._seen.first_seen.setdefault(prompt_id, now)
            since = self._seen.running_since.setdefault(prompt_id, now) \
                if status == "running" else None
            try:
                records.append(job_record(live_record(fields, status, self.status, first,
                                                      since)))
            except RecordError as exc:  # no size or steps to estimate it by
                log.debug("%s: live prompt %s not recorded: %s", self.status.url, prompt_id, exc)
        if records:
            self.store.write_jobs(records, replace_live=True)
        self.status.live = len(records)
        in_queue = {fields.prompt_id for fields, _ in items}
        gone = [j for j in self._stored_live_ids() if j[len(JOB_PREFIX):] not in in_queue]
        if gone:
            removed = self._forget_live(gone)
            log.info("%s: %d live prompts left the queue without finishing (deleted)",
                     self.status.url, removed)
        for prompt_id in set(self._seen.first_seen) - in_queue:
            self._seen.first_seen.pop(prompt_id, None)
            self._seen.running_since.pop(prompt_id, None)

    def _queue_items(self, queue: Mapping[str, Any]) -> list[tuple[PromptFields, str]]:
        """The running and pending prompts that can be read (others are logged and skipped)."""
        items = []
        for key, status in (("queue_running", "running"), ("queue_pending", "queued")):
            listed = queue.get(key, [])
            for item in listed if isinstance(listed, list) else []:
                try:
                    items.append((prompt_fields(item), status))
                except BadEntry as exc:
                    log.debug("%s: a %s queue item skipped: %s", self.status.url, status, exc)
        return items

    def _forget_live(self, ids: list[str]) -> int:
        """Delete live rows of these jobs (finished rows are never touched)."""
        with self.store.writable_engine().begin() as conn:
            return delete_jobs(conn, sa.and_(jobs_table.c.job_id.in_(ids),
                                             jobs_table.c.status.in_(LIVE_STATUSES)))

    def _stored_live_ids(self) -> list[str]:
        live = self.store.frame(sa.select(jobs_table.c.job_id).where(
            jobs_table.c.status.in_(LIVE_STATUSES),
            jobs_table.c.hostname == self.status.hostname,
            jobs_table.c.job_id.startswith(JOB_PREFIX)))
        return list(live.job_id)


class Collector:
    """Polls several ComfyUI servers into one store, each in its own thread; `clock` (seconds,
    monotonic) times the backoffs."""

    def __init__(self, urls: Iterable[str], store: Store | None = None,
                 interval: float = 2.0, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.urls = list(urls)
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self._pollers: list[ServerPoller] | None = None
        self._reporting = threading.Lock()

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
        due = [p for p in self.pollers if p.status.next_try <= self.clock()]
        if not due:
            return 0
        with ThreadPoolExecutor(max_workers=len(due), thread_name_prefix="perflib-comfyui") \
                as pool:
            return sum(pool.map(self._poll_safely, due))

    def run(self, stop: threading.Event | None = None,
            on_change: Callable[[ServerStatus], None] | None = None) -> None:
        """Poll each server every `interval` seconds (or after its backoff), in its own thread,
        until `stop` is set; `on_change` hears of each server whose summary changed (came up,
        went down, stored prompts)."""
        stop = stop or threading.Event()
        threads = [threading.Thread(target=self._follow, args=(poller, stop, on_change),
                                    name=f"perflib-comfyui-{n}", daemon=True)
                   for n, poller in enumerate(self.pollers)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            stop.set()

    def _follow(self, poller: ServerPoller, stop: threading.Event,
                on_change: Callable[[ServerStatus], None] | None) -> None:
        """One server's polling loop."""
        shown = None
        while not stop.is_set():
            self._poll_safely(poller)
            if on_change is not None and shown != poller.status.summary():
                shown = poller.status.summary()
                with self._reporting:
                    on_change(poller.status)
            stop.wait(max(self.interval, poller.status.next_try - self.clock()))

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
            status.next_try = self.clock() + backoff
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
