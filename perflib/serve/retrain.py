"""Retraining in the background: one training at a time, each a task whose status can be read.

A finished training saves a new active model version; estimates pick it up without a restart
(the predictor reloads the active version). Training costs tens of CPU seconds, so a pipeline
has at most one task queued or running (asking again returns it), and at most `limit` tasks
start per `window_seconds`. On a schedule the service owns (:func:`check_periodically`), the
retraining rule (:mod:`perflib.ops.auto_retrain`) runs on the same worker, so a scheduled
retraining and a requested one never run at once.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

from perflib.ops.auto_retrain import retrain_due
from perflib.prediction.predictor import PerformancePredictor
from perflib.serve.errors import describe_error
from perflib.serve.schemas import RetrainTaskView
from perflib.store import Store

KEEP_TASKS = 100

log = logging.getLogger(__name__)


class RetrainLimited(RuntimeError):
    """More retrainings were asked for than the configured rate allows."""

    def __init__(self, limit: int, window_seconds: float, retry_after_seconds: int):
        super().__init__(f"at most {limit} retrainings start per {window_seconds:g} s; "
                         f"try again in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class RetrainTasks:
    """Runs `train` (``train_model`` then ``save_model_to_db``) on a worker thread, task by
    task."""

    def __init__(self, store: Store, on_saved: Callable[[], None], limit: int = 6,
                 window_seconds: float = 3600.0,
                 train: Callable[[str | None, str], dict] | None = None):
        self.store = store
        self.on_saved = on_saved
        self.limit = limit
        self.window_seconds = window_seconds
        self.train = train or self._train_and_save
        self._tasks: OrderedDict[str, RetrainTaskView] = OrderedDict()
        self._started: deque[float] = deque()  # monotonic times of the window's new tasks
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perflib-retrain")

    def submit(self, pipeline_type: str | None, model_type: str) -> tuple[RetrainTaskView, bool]:
        """The pipeline's task already queued or running (and False), else a new task (and
        True); raises :class:`RetrainLimited` when the window's new tasks are used up."""
        with self._lock:
            for task in self._tasks.values():
                if task.pipeline_type == pipeline_type and task.status in ("queued", "running"):
                    return task, False
            self._admit()
            task = RetrainTaskView(task_id=uuid.uuid4().hex, status="queued",
                                   pipeline_type=pipeline_type, model_type=model_type,
                                   submitted_at=_now())
            self._keep(task)
        self._executor.submit(self._run, task)
        return task, True

    def get(self, task_id: str) -> RetrainTaskView | None:
        with self._lock:
            return self._tasks.get(task_id)

    def check_rule(self) -> Future:
        """Run the retraining rule on the training worker, after any training queued before
        it; each outcome is logged, and new active versions are picked up."""
        return self._executor.submit(self._check_rule)

    def _check_rule(self) -> None:
        try:
            outcomes = retrain_due(self.store)
        except Exception:  # logged; the next check tries again, the service keeps serving
            log.exception("scheduled retraining check failed")
            return
        for outcome in outcomes:
            log.info("scheduled retraining check: %s", outcome.describe())
        if any(outcome.kept for outcome in outcomes):
            self.on_saved()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _admit(self) -> None:
        """Count a new task against the window, or refuse it (the lock is held)."""
        now = time.monotonic()
        while self._started and now - self._started[0] >= self.window_seconds:
            self._started.popleft()
        if len(self._started) >= self.limit:
            wait = self.window_seconds - (now - self._started[0]) if self._started \
                else self.window_seconds
            raise RetrainLimited(self.limit, self.window_seconds, max(1, math.ceil(wait)))
        self._started.append(now)

    def _train_and_save(self, pipeline_type: str | None, model_type: str) -> dict:
        predictor = PerformancePredictor(self.store)
        result = predictor.train_model(pipeline_type, model_type)
        return {**result, "version": predictor.save_model_to_db(pipeline_type,
                                                                result["model_type"])}

    def _run(self, task: RetrainTaskView) -> None:
        task = self._update(task.model_copy(update={"status": "running", "started_at": _now()}))
        try:
            result = self.train(task.pipeline_type, task.model_type)
        except Exception as exc:  # reported on the task; the service keeps serving
            if not isinstance(exc, ValueError):
                log.exception("retrain task %s failed", task.task_id)
            self._update(task.model_copy(update={
                "status": "failed", "finished_at": _now(),
                "error": describe_error(exc, self.store.url)}))
            return
        self.on_saved()
        self._update(task.model_copy(update={
            "status": "succeeded", "finished_at": _now(), "result": result}))

    def _update(self, task: RetrainTaskView) -> RetrainTaskView:
        with self._lock:
            self._keep(task)
        return task

    def _keep(self, task: RetrainTaskView) -> None:
        """Store the task's latest view, forgetting the oldest beyond KEEP_TASKS (lock held)."""
        self._tasks[task.task_id] = task
        self._tasks.move_to_end(task.task_id)
        while len(self._tasks) > KEEP_TASKS:
            self._tasks.popitem(last=False)


async def check_periodically(tasks: RetrainTasks, seconds: float) -> None:
    """Every `seconds`, run the retraining rule and wait for it: one check at a time (the
    app's lifespan starts this task and cancels it on shutdown)."""
    while True:
        await asyncio.sleep(seconds)
        await asyncio.wrap_future(tasks.check_rule())


def _now() -> datetime:
    return datetime.now(timezone.utc)
