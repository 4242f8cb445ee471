"""Estimates with the queue ETA, cached briefly so the hot endpoint stays cheap.

The predictor already treats its inputs as fresh for a few seconds (it checks for a new model
version every couple of seconds and caches recent drift for 30 s), so an identical request within
``ESTIMATE_TTL_SECONDS`` gets the same answer from memory. The live queue is read at most once per
``QUEUE_TTL_SECONDS``, and at once after this service records jobs.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from starlette.concurrency import run_in_threadpool

from perflib.predictor import PerformancePredictor
from perflib.serve.queue import QueueSnapshot, fleet_size, take_snapshot
from perflib.serve.schemas import EstimateResponse
from perflib.store import Store

ESTIMATE_TTL_SECONDS = 5.0
ESTIMATE_CACHE_SIZE = 4096
QUEUE_TTL_SECONDS = 1.0
FLEET_TTL_SECONDS = 60.0


class TtlCache:
    """A small LRU map whose entries expire `ttl` seconds after they were stored."""

    def __init__(self, ttl: float, size: int):
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or time.monotonic() - item[0] > self.ttl:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class QueueAwareEstimator:
    """``PerformancePredictor.estimate`` plus when the job would start behind the live queue."""

    def __init__(self, store: Store, predictor: PerformancePredictor):
        self.store = store
        self.predictor = predictor
        self._estimates = TtlCache(ESTIMATE_TTL_SECONDS, ESTIMATE_CACHE_SIZE)
        self._fleet = TtlCache(FLEET_TTL_SECONDS, 1)
        self._queue = TtlCache(QUEUE_TTL_SECONDS, 1)

    async def estimate(self, params: dict[str, Any]) -> EstimateResponse:
        key = tuple(sorted(params.items()))
        prediction = self._estimates.get(key)
        if prediction is None:
            prediction = await run_in_threadpool(self.predictor.estimate, params)
            self._estimates.put(key, prediction)
        snapshot = self._queue.get("live") or await run_in_threadpool(self.queue_snapshot)
        return EstimateResponse(**prediction,
                                queue=snapshot.eta(prediction["predicted_time_seconds"]))

    def queue_snapshot(self) -> QueueSnapshot:
        """The live queue, read from the store now."""
        gpus = self._fleet.get("gpus")
        if gpus is None:
            gpus = fleet_size(self.store)
            self._fleet.put("gpus", gpus)
        snapshot = take_snapshot(self.store, self.predictor, gpus)
        self._queue.put("live", snapshot)
        return snapshot

    def forget_queue(self) -> None:
        """Jobs were recorded: read the queue (and the fleet) again on the next estimate."""
        self._queue.clear()
        self._fleet.clear()

    def forget_estimates(self) -> None:
        """A new model was saved here: estimate afresh."""
        self._estimates.clear()
