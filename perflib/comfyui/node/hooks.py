"""The perflib integration attached to a running ComfyUI ``PromptServer``.

- An on-prompt handler asks for an estimate of each submitted prompt (in a thread) and returns
  the prompt unchanged.
- ``send_sync`` is wrapped: every message still goes out through the original, untouched; a copy
  goes to a background thread that builds each executed prompt's job record; a queue change
  matches submissions to prompt ids; an ``execution_start`` first sends that prompt's estimate.
- ``GET /perflib/estimate/{prompt_id}`` answers the estimate with its queue ETA as of now.
- Finished records go to the service's ``record-metrics``; whenever it does not take them (down,
  hung, or answering anything but a JSON object) they are spooled and offered again after the
  next success or every minute. Each request ends by its own timeout, so a service dripping its
  answer holds the record thread no longer than that.

Everything perflib does here is logged and swallowed: ComfyUI runs as it would without it.
"""
from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from .client import ServiceClient, ServiceRejected, ServiceUnavailable
from .estimate_board import EstimateBoard
from .gpu import GpuMonitor
from .input_files import input_sizes
from .recorder import END_EVENTS, PromptRun, RunContext, job_record, salvaged
from .settings import Settings
from .spool import RecordSpool

logger = logging.getLogger("perflib_estimate")
ROUTE = "/perflib/estimate/{prompt_id}"
REMEMBERED = 10_000  # recorded prompt ids kept, so a late message never records one twice
FOLLOWED = {"execution_start", "execution_cached", "executing", "progress", "progress_state",
            "status", *END_EVENTS}


class Integration:
    def __init__(self, server: Any, settings: Settings, web: Any = None,
                 clock: Callable[[], float] = time.time):
        self.server = server
        self.settings = settings
        self.web = web  # aiohttp.web as ComfyUI's server module imported it
        self.clock = clock  # epoch seconds; the server's message timestamps use the same clock
        self.client = ServiceClient(settings.service_url, settings.api_token,
                                    settings.retry_after_s)
        self.spool = RecordSpool(settings.spool_path)
        self._original_send_sync = server.send_sync
        self.board = EstimateBoard(self._ask, self._original_send_sync, self._read_queue,
                                   settings.estimate_timeout_s, clock)
        self.gpu = GpuMonitor.open() if not _cpu_only() else None
        self._runs: dict[str, PromptRun] = {}
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self._events: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._follow, daemon=True, name="perflib-record")

    def attach(self) -> Integration:
        """Hook into the server; the route only where the server has its route table."""
        self.server.add_on_prompt_handler(self.on_prompt)
        self.server.send_sync = self.send_sync
        routes = getattr(self.server, "routes", None)
        if routes is not None and self.web is not None:
            routes.get(ROUTE)(self.get_estimate)
        self._worker.start()
        logger.info("perflib: estimates and job records through %r", self.settings)
        return self

    # -- ComfyUI calls these ------------------------------------------------------------------
    def on_prompt(self, json_data: Any) -> Any:
        """The on-prompt handler: starts an estimate, returns the prompt as it came."""
        try:
            if isinstance(json_data, dict):
                self.board.submitted(json_data)
        except Exception:
            logger.exception("perflib: estimating a submitted prompt failed")
        return json_data

    def send_sync(self, event, data, sid=None):
        """ComfyUI's ``send_sync``, watched: the original always sends the message."""
        try:
            self._watch(event, data)
        except Exception:
            logger.exception("perflib: watching %r failed", event)
        return self._original_send_sync(event, data, sid)

    async def get_estimate(self, request):
        prompt_id = request.match_info.get("prompt_id", "")
        try:
            view = self.board.view(prompt_id)
        except Exception:
            logger.exception("perflib: reading the estimate of %s failed", prompt_id)
            view = None
        if view is None:
            return self.web.json_response({"error": f"no estimate for prompt {prompt_id}"},
                                          status=404)
        return self.web.json_response(view)

    # -- inside -------------------------------------------------------------------------------
    def _watch(self, event, data) -> None:
        if not isinstance(event, str) or event not in FOLLOWED or not isinstance(data, dict):
            return
        now = self.clock()
        try:
            if event == "status":
                self.board.queue_changed()
            elif event == "execution_start" and data.get("prompt_id") is not None:
                self.board.started(str(data["prompt_id"]))
        finally:  # the record is built whatever became of the estimate
            self._events.put((event, data, now))

    def _follow(self) -> None:
        """The record thread: messages in, job records out, spool offered again meanwhile."""
        while True:
            try:
                event, data, now = self._events.get(timeout=self.settings.resend_every_s)
            except queue.Empty:
                self._resend()
                continue
            try:
                self._take(event, data, now)
            except Exception:
                logger.exception("perflib: recording %r failed", event)

    def _take(self, event: str, data: dict, now: float) -> None:
        if event == "status":
            self._finish_from_history(now)
            return
        prompt_id = data.get("prompt_id")
        if prompt_id is None or str(prompt_id) in self._recorded:
            return
        run = self._runs.get(str(prompt_id))
        if run is None:
            run = self._runs[str(prompt_id)] = PromptRun(str(prompt_id), now)
            if self.gpu is not None:
                self.gpu.start()
        run.observe(event, data, now)
        if run.ended:
            self._finish(run, self._history_entry(run.prompt_id))

    def _finish_from_history(self, now: float) -> None:
        """Prompts that ended without telling a client (no client_id) end in history."""
        for run in list(self._runs.values()):
            entry = self._history_entry(run.prompt_id)
            if entry:
                run.observe_history(entry, now)
                if run.ended:
                    self._finish(run, entry)

    def _finish(self, run: PromptRun, entry: dict | None) -> None:
        self._runs.pop(run.prompt_id, None)
        self._recorded[run.prompt_id] = None
        while len(self._recorded) > REMEMBERED:
            self._recorded.popitem(last=False)
        item = self._queue_item(run.prompt_id, entry)
        context = RunContext(
            graph=item[2] if item else None,
            extra_data=item[3] if item and isinstance(item[3], dict) else {},
            outputs=item[4] if item and len(item) > 4 else None,
            number=item[0] if item else None, hostname=self._hostname(),
            gpu_name=self._gpu_name(), predicted_seconds=self.board.prediction(run.prompt_id),
            gpu_stats=self.gpu.stop() if self.gpu is not None and not self._runs else {})
        self._send_records([job_record(run, context)])

    def _send_records(self, records: list[dict]) -> None:
        try:
            self._post(records)
        except ServiceRejected as exc:
            logger.warning("perflib: the service refused a job record (kept in %s): %s",
                           self.spool.rejected_path, exc)
            self.spool.set_aside(records)
            return
        except Exception as exc:  # down, hung, misbehaving: the record waits in the spool
            logger.info("perflib: spooling a job record (%s)", exc)
            self.spool.append(records)
            return
        self._resend()

    def _post(self, records: list[dict]) -> None:
        """``record-metrics``; a single record refused for some of its parameters is sent
        again without them (they go to its extra params), so the measured job is kept."""
        try:
            self.client.record(records, self.settings.record_timeout_s)
        except ServiceRejected as exc:
            fixed = salvaged(records[0], exc.fields) if len(records) == 1 else None
            if fixed is None:
                raise
            self.client.record([fixed], self.settings.record_timeout_s)

    def _resend(self) -> None:
        if self.client.resting:
            return
        try:
            sent = self.spool.resend(self._post)
            if sent:
                logger.info("perflib: sent %d spooled job records", sent)
        except ServiceUnavailable as exc:
            logger.info("perflib: spooled records wait (%s)", exc)

    def _ask(self, graph: dict, previous: dict | None = None) -> dict:
        return self.client.estimate(graph, self._gpu_name(), self._hostname(),
                                    self.settings.estimate_timeout_s, input_sizes(graph),
                                    previous)

    def _read_queue(self) -> tuple[list, list]:
        running, pending = self.server.prompt_queue.get_current_queue_volatile()
        return list(running), list(pending)

    def _history_entry(self, prompt_id: str) -> dict | None:
        try:
            return self.server.prompt_queue.get_history(prompt_id=prompt_id).get(prompt_id)
        except Exception:
            logger.exception("perflib: reading the history of %s failed", prompt_id)
            return None

    def _queue_item(self, prompt_id: str, entry: dict | None) -> list | None:
        """The prompt's queue entry ``[number, id, graph, extra_data, outputs]``: from its
        history entry, else from the queue (it ended but ComfyUI has not filed it yet)."""
        if entry and entry.get("prompt"):
            return list(entry["prompt"])
        running, pending = self._read_queue()
        return next((list(item) for item in running + pending if item[1] == prompt_id), None)

    def _hostname(self) -> str:
        """As the collector names a server: its address and port (configurable)."""
        if self.settings.hostname:
            return self.settings.hostname
        address, port = getattr(self.server, "address", None), getattr(self.server, "port", None)
        return f"{address}:{port}" if address and port else socket.gethostname()

    def _gpu_name(self) -> str | None:
        """The device as ComfyUI's ``/system_stats`` names it, as the collector records it."""
        management = sys.modules.get("comfy.model_management")
        try:
            if management is not None:
                return str(management.get_torch_device_name(management.get_torch_device()))
        except Exception:
            logger.debug("perflib: ComfyUI did not name its device", exc_info=True)
        return self.gpu.name if self.gpu is not None else None


def _cpu_only() -> bool:
    """True when ComfyUI was started with ``--cpu`` (then no GPU readings are taken)."""
    arguments = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    return bool(getattr(arguments, "cpu", False))
