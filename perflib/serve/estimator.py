"""Estimates with the queue ETA: concurrent requests share one pass through the model, and an
identical request is answered from memory for a few seconds.

- A model call costs about the same for one job as for dozens (its time is per call, not per
  row), so requests that arrive while a batch is being estimated wait and go together in the
  next one — dynamic batching, as model servers do. A request that finds the estimator idle
  goes at once.
- The predictor treats its inputs as fresh for a while anyway (it looks for a new model version
  every couple of seconds and caches recent drift for 30 s), so an identical request within
  ``ESTIMATE_TTL_SECONDS`` gets the same answer; a model saved by this service's own retrain
  clears that memory.
- The live queue (:class:`perflib.queue.snapshot.LiveQueue`, shared with the dashboard and
  ``/metrics``) is read at most once per ``QUEUE_TTL_SECONDS``, and at once after this service
  records jobs.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from perflib.cache import TtlCache
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.snapshot import LiveQueue, LiveSnapshot
from perflib.serve.schemas import EstimateResponse

MAX_BATCH = 64
ESTIMATE_TTL_SECONDS = 10.0
ESTIMATE_CACHE_SIZE = 4096
QUEUE_TTL_SECONDS = 1.0


class EstimateBatcher:
    """Runs ``predictor.estimate_many`` on batches of the requests waiting (one event loop)."""

    def __init__(self, predictor: PerformancePredictor, max_batch: int = MAX_BATCH):
        self.predictor = predictor
        self.max_batch = max_batch
        self._waiting: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._running = False

    async def estimate(self, params: dict[str, Any]) -> dict:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((params, answer))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                try:
                    answers = await run_in_threadpool(self.predictor.estimate_many,
                                                      [params for params, _ in batch])
                except Exception as exc:  # reaches each waiting request as its own error
                    answers = [exc] * len(batch)
                for (_, future), answer in zip(batch, answers):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._running = False


class QueueAwareEstimator:
    """``PerformancePredictor.estimate`` plus when the job would start behind the live queue."""

    def __init__(self, predictor: PerformancePredictor, live_queue: LiveQueue):
        self.predictor = predictor
        self.live_queue = live_queue
        self._batcher = EstimateBatcher(predictor)
        self._estimates = TtlCache(ESTIMATE_TTL_SECONDS, ESTIMATE_CACHE_SIZE)
        # The live queue is read by one thread at a time; requests meanwhile use the snapshot
        # they have, unless jobs were recorded since (a new generation), then they wait for it.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perflib-queue")
        self._lock = threading.Lock()
        self._generation = 0
        self._snapshot: LiveSnapshot | None = None
        self._reading: tuple[int, Future] | None = None

    async def estimate(self, params: dict[str, Any],
                       refine: Callable[[dict], dict] | None = None) -> EstimateResponse:
        """`refine`, where given, turns the job-level prediction into the answer (a ComfyUI
        prompt's per-node estimate), in a worker thread, before the queue ETA."""
        key = json.dumps(params, sort_keys=True, default=str)  # passes are lists: not hashable
        prediction = self._estimates.get(key)
        if prediction is None:
            prediction = await self._batcher.estimate(params)
            self._estimates.put(key, prediction)
        if refine is not None:
            prediction = await run_in_threadpool(refine, prediction)
        snapshot = await self._current_snapshot()
        return EstimateResponse(**prediction, queue=snapshot.eta(
            prediction["predicted_time_seconds"], pipeline_type=params.get("pipeline_type")))

    async def _current_snapshot(self) -> LiveSnapshot:
        with self._lock:
            snapshot = self._snapshot
            fresh = snapshot is not None and \
                time.monotonic() - snapshot.read_at <= QUEUE_TTL_SECONDS
            if fresh:
                return snapshot
            if self._reading is None or self._reading[0] != self._generation:
                self._reading = (self._generation,
                                 self._reader.submit(self._read_queue, self._generation))
            reading = self._reading[1]
        if snapshot is not None:
            return snapshot  # a second old at most, while the next one is read
        return await asyncio.wrap_future(reading)

    def _read_queue(self, generation: int) -> LiveSnapshot:
        snapshot = None
        try:
            snapshot = self.live_queue.snapshot()
            return snapshot
        finally:
            with self._lock:
                if snapshot is not None and generation == self._generation:
                    self._snapshot = snapshot
                if self._reading is not None and self._reading[0] == generation:
                    self._reading = None

    def forget_queue(self) -> None:
        """Jobs were recorded: read the queue (and the fleet) again before the next estimate."""
        with self._lock:
            self._generation += 1
            self._snapshot = None
        self.live_queue.jobs_recorded()

    def model_saved(self) -> None:
        """A new model version was saved here: use it from the next request on."""
        self.predictor.reload()
        self._estimates.clear()

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)
