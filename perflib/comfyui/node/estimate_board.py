"""Estimates of this server's prompts: asked for when a prompt is submitted, sent to the browser
(a ``perflib.estimate`` websocket message) once its prompt id is known, and kept for
``GET /perflib/estimate/{prompt_id}``.

ComfyUI assigns a prompt id after the on-prompt handlers have run (unless the client sent one),
so a submission is matched to its queue entry when ComfyUI announces the queue change: the
queued graph is the very object the handler saw. The estimate is always sent before the prompt's
``execution_start``: if it is still being computed then, the start waits for it, at most the
estimate request's own timeout (and not at all while the service is known to be down).

Queue ETA: ComfyUI runs one prompt at a time, so a prompt starts when the prompts ahead of it in
this server's queue have finished: the running one's remaining estimate plus each pending one's
estimate; a prompt ahead that has no estimate (the service refused or was down) counts as the
service's price of an unestimated job (the median of the pipeline's recent jobs, which its answers
carry), else the median estimate of this server's other prompts, not as 0 s. The service's fleet-wide queue is passed on as ``fleet_queue``.
"""
from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger("perflib_estimate")

EVENT = "perflib.estimate"
KEEP = 1000  # estimates kept for the route and for the queue ETA of later prompts
UNMATCHED_TTL_S = 60.0  # a submission never queued (refused by validation) is forgotten
QueueItems = tuple[list, list]  # (running, pending) items of ComfyUI's prompt queue


@dataclass(eq=False)
class Submission:
    graph: dict
    client_id: str | None
    submitted: float
    previous: dict | None = None  # the prompt submitted just before: it runs just before
    prompt_id: str | None = None
    number: float | None = None
    estimate: dict | None = None
    started: float | None = None  # epoch seconds, when ComfyUI started running it
    sent: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class EstimateBoard:
    def __init__(self, ask: Callable[[dict, dict | None], dict], send: Callable[[str, dict, Any], None],
                 read_queue: Callable[[], QueueItems], start_wait_s: float,
                 clock: Callable[[], float] = time.time):
        # (graph, the graph queued before it) → the service's estimate; raises when it cannot
        self.ask = ask
        self.send = send  # the server's own send_sync
        self.read_queue = read_queue
        self.start_wait_s = start_wait_s
        self.clock = clock
        self._unmatched: list[Submission] = []
        self._last_graph: dict | None = None
        self._by_id: OrderedDict[str, Submission] = OrderedDict()
        # Lock order: ComfyUI's queue lock may be held when this one is taken, never the reverse.
        self._lock = threading.Lock()
        self._asker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perflib-estimate")

    # -- called by the integration ------------------------------------------------------------
    def submitted(self, json_data: dict) -> None:
        """A prompt was posted: estimate it in the background."""
        graph = json_data.get("prompt")
        if not isinstance(graph, dict):
            return
        client_id = json_data.get("client_id")
        submission = Submission(graph, client_id if isinstance(client_id, str) else None,
                                self.clock())
        with self._lock:
            submission.previous, self._last_graph = self._last_graph, graph
            if json_data.get("prompt_id") is not None:
                self._remember(str(json_data["prompt_id"]), submission)
            else:
                self._unmatched.append(submission)
        self._asker.submit(self._estimate, submission)

    def queue_changed(self) -> None:
        """ComfyUI announced a queue change (with its queue lock held, when it queued a prompt):
        match new queue entries to their submissions."""
        with self._lock:
            if not self._unmatched and all(s.number is not None for s in self._by_id.values()):
                return
        queue = self.read_queue()
        ready = []
        with self._lock:
            for number, prompt_id, graph, *_ in queue[1]:
                submission = self._by_id.get(prompt_id) or self._match(graph)
                if submission is not None and submission.number is None:
                    submission.number = number
                    self._remember(prompt_id, submission)
                    ready.append(submission)
            cutoff = self.clock() - UNMATCHED_TTL_S
            self._unmatched = [s for s in self._unmatched if s.submitted > cutoff]
        for submission in ready:
            self._send(submission, queue)

    def started(self, prompt_id: str) -> None:
        """The prompt is about to start (its ``execution_start``): send its estimate first."""
        submission = self._by_id.get(prompt_id)
        if submission is None:
            return
        submission.started = self.clock()
        submission.done.wait(self.start_wait_s)
        self._send(submission, None)

    def view(self, prompt_id: str) -> dict | None:
        """The prompt's estimate with its queue ETA as of now, or None."""
        submission = self._by_id.get(prompt_id)
        if submission is None or submission.estimate is None:
            return None
        return self._payload(submission, self.read_queue())

    def prediction(self, prompt_id: str) -> float | None:
        submission = self._by_id.get(prompt_id)
        estimate = submission.estimate if submission else None
        return estimate.get("predicted_time_seconds") if estimate else None

    def close(self) -> None:
        self._asker.shutdown(wait=False, cancel_futures=True)

    # -- inside -------------------------------------------------------------------------------
    def _estimate(self, submission: Submission) -> None:
        try:
            submission.estimate = _usable(self.ask(submission.graph, submission.previous))
        except Exception as exc:
            logger.info("perflib: no estimate for a prompt: %s", exc)
        finally:
            submission.done.set()
        if submission.prompt_id is not None and submission.number is not None:
            self._send(submission, None)

    def _send(self, submission: Submission, queue: QueueItems | None) -> None:
        if submission.estimate is None or submission.sent:
            return
        payload = self._payload(submission, queue if queue is not None else self.read_queue())
        with self._lock:
            if submission.sent:
                return
            submission.sent = True
            self.send(EVENT, payload, submission.client_id)

    def _payload(self, submission: Submission, queue: QueueItems) -> dict[str, Any]:
        estimate = submission.estimate or {}
        names = ("predicted_time_seconds", "uncertainty_range", "confidence",
                 "prediction_method", "model_used", "parsed_job", "nodes", "total_from")
        return {"prompt_id": submission.prompt_id, "number": submission.number,
                **{name: estimate.get(name) for name in names},
                "queue": self._queue_eta(submission, queue, self.clock()),
                "fleet_queue": estimate.get("queue"), "estimated_at": self.clock()}

    def _queue_eta(self, submission: Submission, queue: QueueItems, now: float) -> dict:
        running, pending = queue
        own = submission.estimate["predicted_time_seconds"]
        if any(item[1] == submission.prompt_id for item in running):
            left = self._left(submission.prompt_id, own, now)
            return {"state": "running", "jobs_ahead": 0, "unestimated_ahead": 0,
                    "expected_start_seconds": 0.0, "expected_finish_seconds": round(left, 3)}
        if submission.started is not None:
            return {"state": "finished", "jobs_ahead": 0, "unestimated_ahead": 0,
                    "expected_start_seconds": 0.0, "expected_finish_seconds": 0.0}
        ahead = [item for item in pending if item[1] != submission.prompt_id
                 and (submission.number is None or item[0] < submission.number)]
        fallback = self.fallback_seconds()
        unestimated = sum(self.prediction(item[1]) is None for item in running + ahead)
        seconds = [self._left(item[1], None, now, fallback) for item in running]
        seconds += [self.prediction(item[1]) or fallback for item in ahead]
        start = sum(seconds)
        return {"state": "queued", "jobs_ahead": len(seconds),
                "unestimated_ahead": unestimated,
                "unestimated_seconds_each": round(fallback, 3),
                "expected_start_seconds": round(start, 3),
                "expected_finish_seconds": round(start + own, 3)}

    def fallback_seconds(self) -> float:
        """What a prompt without an estimate counts in the queue ETA: the service's one price
        of an unestimated job (``queue.unestimated_seconds_each`` of its latest answer: the
        median of the pipeline's recent jobs); before the service said one, the median estimate
        of this server's other prompts; 0 before any was estimated."""
        with self._lock:
            known = [s.estimate for s in self._by_id.values() if s.estimate is not None]
        for estimate in reversed(known):
            queue = estimate.get("queue")
            price = queue.get("unestimated_seconds_each") if isinstance(queue, dict) else None
            if isinstance(price, (int, float)) and not isinstance(price, bool) \
                    and math.isfinite(price) and price > 0:
                return float(price)
        seconds = [estimate["predicted_time_seconds"] for estimate in known]
        return float(statistics.median(seconds)) if seconds else 0.0

    def _left(self, prompt_id: str, predicted: float | None, now: float,
              fallback: float = 0.0) -> float:
        """Seconds a running prompt still needs, by its estimate, else `fallback` (0 once it
        overruns)."""
        predicted = predicted if predicted is not None else self.prediction(prompt_id)
        predicted = fallback if predicted is None else predicted
        submission = self._by_id.get(prompt_id)
        if submission is None:
            return predicted
        return max(0.0, predicted - (now - (submission.started or now)))

    def _match(self, graph: Any) -> Submission | None:
        """The oldest unmatched submission of this graph: the same object, else an equal one
        (another on-prompt handler may have copied the prompt)."""
        for same in (lambda s: s.graph is graph, lambda s: s.graph == graph):
            for submission in self._unmatched:
                if same(submission):
                    self._unmatched.remove(submission)
                    return submission
        return None

    def _remember(self, prompt_id: str, submission: Submission) -> None:
        submission.prompt_id = prompt_id
        self._by_id[prompt_id] = submission
        self._by_id.move_to_end(prompt_id)
        while len(self._by_id) > KEEP:
            self._by_id.popitem(last=False)


def _usable(answer: Any) -> dict:
    """The service's answer when it is an estimate (a number of seconds); ValueError if not."""
    seconds = answer.get("predicted_time_seconds") if isinstance(answer, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"the service's answer is not an estimate: {str(answer)[:200]}")
    return answer
