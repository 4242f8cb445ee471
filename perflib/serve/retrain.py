"""Retraining in the background: one training at a time, each a task whose status can be read.

A finished training saves a new active model version; estimates pick it up without a restart
(the predictor reloads the active version).
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

from perflib.predictor import PerformancePredictor
from perflib.serve.errors import describe_error
from perflib.serve.schemas import RetrainTaskView
from perflib.store import Store

KEEP_TASKS = 100

log = logging.getLogger(__name__)


class RetrainTasks:
    """Runs ``train_model`` then ``save_model_to_db`` on a worker thread, task by task."""

    def __init__(self, store: Store, on_saved: Callable[[], None]):
        self.store = store
        self.on_saved = on_saved
        self._tasks: OrderedDict[str, RetrainTaskView] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perflib-retrain")

    def submit(self, pipeline_type: str | None, model_type: str) -> RetrainTaskView:
        task = RetrainTaskView(task_id=uuid.uuid4().hex, status="queued",
                               pipeline_type=pipeline_type, model_type=model_type,
                               submitted_at=_now())
        self._update(task)
        self._executor.submit(self._run, task)
        return task

    def get(self, task_id: str) -> RetrainTaskView | None:
        with self._lock:
            return self._tasks.get(task_id)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, task: RetrainTaskView) -> None:
        task = self._update(task.model_copy(update={"status": "running", "started_at": _now()}))
        try:
            predictor = PerformancePredictor(self.store)
            result = predictor.train_model(task.pipeline_type, task.model_type)
            version = predictor.save_model_to_db(task.pipeline_type, result["model_type"])
        except Exception as exc:  # reported on the task; the service keeps serving
            if not isinstance(exc, ValueError):
                log.exception("retrain task %s failed", task.task_id)
            self._update(task.model_copy(update={
                "status": "failed", "finished_at": _now(),
                "error": describe_error(exc, self.store.url)}))
            return
        self.on_saved()
        self._update(task.model_copy(update={
            "status": "succeeded", "finished_at": _now(),
            "result": {**result, "version": version}}))

    def _update(self, task: RetrainTaskView) -> RetrainTaskView:
        with self._lock:
            self._tasks[task.task_id] = task
            self._tasks.move_to_end(task.task_id)
            while len(self._tasks) > KEEP_TASKS:
                self._tasks.popitem(last=False)
        return task


def _now() -> datetime:
    return datetime.now(timezone.utc)
