"""The job tracker: ``track_generation_job`` (context manager) and ``track_performance`` (decorator).

The hot path only reads ``time.perf_counter`` and enqueues the finished job on the store's
background writer; turning it into a record, and writing it, happen on the writer's thread. The
tracker never breaks the pipeline it measures: its own failures are logged, never raised, and the
user's exceptions pass through unchanged after the job is recorded as failed.
"""
from __future__ import annotations

import functools
import inspect
import logging
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from perflib.config import Settings
from perflib.record import salvaged_record
from perflib.store import Store, writer_for
from perflib.store.writer import BatchWriter
from perflib.threads import PerProcess
from perflib.tracking.heartbeat import heartbeat_for
from perflib.tracking.sampler import JobResources, gpu_indices_for, process_sampler

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 2000
HOSTNAME = socket.gethostname()

# Parameter names a pipeline may use, mapped to the job table's columns.
_PARAM_ALIASES = {
    "width": "width", "height": "height", "frame_count": "frame_count", "frames": "frame_count",
    "num_frames": "frame_count", "steps": "steps", "num_inference_steps": "steps",
    "guidance_scale": "guidance_scale", "cfg_scale": "guidance_scale", "cfg": "guidance_scale",
    "batch_size": "batch_size", "sampler": "sampler", "sampler_name": "sampler",
    "scheduler": "sampler", "model_name": "model_name", "model": "model_name",
    "checkpoint": "model_name", "gpu_name": "gpu_name", "job_type": "job_type",
    "hostname": "hostname", "predicted_seconds": "predicted_seconds",
    "queue_depth": "queue_depth", "user_rating": "user_rating",
}


class _Binding:
    """Where tracked jobs go: a store's writer and the process sampler (whose readings also go
    to the store as GPU heartbeats)."""

    def __init__(self, store: Store):
        self.store = store
        self.settings: Settings = store.config
        self.writer: BatchWriter = writer_for(store)
        self.sampler = process_sampler(self.settings.sample_interval)
        heartbeat_for(store, self.sampler)  # live GPU readings, on their own thread


# Keyed by URL text, or by the Store object itself; None for jobs that name no database.
_bindings: PerProcess[_Binding] = PerProcess()


def configure(db: Any = None, settings: Settings | None = None) -> None:
    """Point tracked jobs that name no database at `db` (default: the configured database)."""
    _bindings.set(None, _Binding(Store(db, settings)))


def _binding_for(db: Any) -> _Binding:
    """The binding for a job's `db` — made once per database, not once per job."""
    if db is None:
        return _bindings.get(None, lambda: _Binding(Store()))
    if isinstance(db, Store):
        return _bindings.get(id(db), lambda: _Binding(db),
                             stale=lambda binding: binding.store is not db)
    return _bindings.get(repr(db), lambda: _Binding(Store(db)))


class Phase:
    """A named stretch of a job; also a context manager that ends itself."""

    __slots__ = ("tracker", "name", "description", "start", "end", "scoped")

    def __init__(self, tracker: "JobTracker", name: str, description: str | None):
        self.tracker = tracker
        self.name = name
        self.description = description
        self.start = time.perf_counter()
        self.end: float | None = None
        self.scoped = False

    def __enter__(self) -> "Phase":
        self.scoped = True
        return self

    def __exit__(self, *exc_info) -> bool:
        if self.end is None:
            self.end = time.perf_counter()
        return False


class JobTracker:
    """One job's timeline. Created by :func:`track_generation_job` or the decorator."""

    def __init__(self, job_id: str | None, pipeline_type: str,
                 params: Mapping[str, Any] | None = None, db: Any = None,
                 predicted_seconds: float | None = None, queue_depth: int | None = None,
                 tags: Mapping[str, str] | None = None):
        self.job_id = job_id
        self.pipeline_type = pipeline_type
        self.params = params
        self.db = db
        self.tags = tags
        self.predicted_seconds = predicted_seconds
        self.queue_depth = queue_depth
        self.status: str | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.phases: list[Phase] = []
        self._bound_call: tuple | None = None  # (signature, args, kwargs) bound lazily
        self._binding: _Binding | None = None
        self._resources: JobResources | None = None
        self._wall0 = self._t0 = self._queued = self._started = None
        self._initialized = self._finished = None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "JobTracker":
        try:
            binding = _binding_for(self.db)
            self._resources = JobResources(keep_samples=binding.settings.keep_resource_samples)
            binding.sampler.attach(self._resources)
            self._binding = binding
        except Exception:
            log.exception("perflib tracker could not start job %s; it will not be recorded",
                          self.job_id)
        self._t0 = time.perf_counter()
        self._wall0 = time.time()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._finished = time.perf_counter()
        if exc is not None:
            self.mark_failure(exc)
        binding = self._binding
        if binding is not None:
            try:
                binding.sampler.detach(self._resources)
                binding.writer.submit(self)
            except Exception:
                log.exception("perflib tracker could not queue job %s", self.job_id)
        return False  # the user's exception, if any, propagates unchanged

    # -- the seed's marks --------------------------------------------------------------------
    def mark_queued(self) -> None:
        self._queued = time.perf_counter()

    def mark_processing_start(self) -> None:
        self._started = time.perf_counter()

    def mark_initialized(self) -> None:
        self._initialized = time.perf_counter()

    def mark_phase(self, name: str, description: str | None = None) -> Phase:
        """Start a phase; it ends at the next ``mark_phase``, ``mark_phase_end(name)``, the end of
        its ``with`` block, or the end of the job."""
        now = time.perf_counter()
        for phase in self.phases:
            if phase.end is None and not phase.scoped:
                phase.end = now
        phase = Phase(self, name, description)
        self.phases.append(phase)
        return phase

    def mark_phase_end(self, name: str) -> None:
        now = time.perf_counter()
        for phase in reversed(self.phases):
            if phase.name == name and phase.end is None:
                phase.end = now
                return
        log.debug("perflib: no open phase named %r in job %s", name, self.job_id)

    def mark_success(self) -> None:
        self.status = "success"

    def mark_failure(self, error: BaseException | str) -> None:
        self.status = "failed"
        if isinstance(error, BaseException):
            self.error_type = type(error).__name__
            self.error_message = str(error)[:MAX_ERROR_MESSAGE]
        else:
            self.error_type = self.error_type or "Error"
            self.error_message = str(error)[:MAX_ERROR_MESSAGE]

    # -- record (built on the writer thread) --------------------------------------------------
    def as_record(self) -> dict[str, Any]:
        """The job as a store record: timeline, parameters, phases and resource aggregates."""
        finished = self._finished if self._finished is not None else time.perf_counter()
        queued = self._queued if self._queued is not None else self._t0
        started = self._started if self._started is not None else queued
        params = self._collect_params()
        record: dict[str, Any] = {
            "job_id": str(params.pop("job_id", None) or self.job_id or uuid.uuid4().hex),
            "pipeline_type": self.pipeline_type,
            "status": self.status or "success",
            "error_type": self.error_type,
            "error_message": self.error_message,
            "hostname": HOSTNAME,
            "submitted_at": self._wall(self._t0),
            "queued_at": self._wall(queued) if self._queued is not None else None,
            "started_at": self._wall(started),
            "finished_at": self._wall(finished),
            "queue_seconds": max(0.0, started - queued),
            "init_seconds": (max(0.0, self._initialized - started)
                             if self._initialized is not None else None),
            "processing_seconds": max(0.0, finished - started),
            "total_seconds": max(0.0, finished - self._t0),
            "predicted_seconds": self.predicted_seconds,
            "queue_depth": self.queue_depth,
            "tags": self.tags,  # checked by the record: bad tags move to invalid_fields
        }
        columns, extra = _split_params(params)
        record.update({k: v for k, v in columns.items() if v is not None})
        if extra:
            record["extra_params"] = extra
        record["phases"] = [
            {"seq": seq, "name": p.name, "description": p.description,
             "started_at": self._wall(p.start),
             "seconds": max(0.0, (p.end if p.end is not None else finished) - p.start)}
            for seq, p in enumerate(self.phases)
        ]
        resources = self._resources
        if resources is not None:
            binding = self._binding
            resources.gpu_indices = gpu_indices_for(params, binding.settings.cuda_visible_devices)
            record.update(resources.aggregates())
            record.setdefault("gpu_name", resources.gpu_name)
            if resources.keep_samples:
                record["samples"] = resources.sample_rows()
        return salvaged_record(record)

    def _wall(self, perf: float) -> datetime:
        return datetime.fromtimestamp(self._wall0 + (perf - self._t0), timezone.utc)

    def _collect_params(self) -> dict[str, Any]:
        params = dict(self.params or {})
        if self._bound_call is not None:
            signature, args, kwargs = self._bound_call
            try:
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
            except TypeError:
                arguments = dict(kwargs)
            for name, value in arguments.items():
                kind = signature.parameters.get(name)
                if kind is not None and kind.kind is inspect.Parameter.VAR_KEYWORD:
                    params.update(value)
                elif kind is None or kind.kind is not inspect.Parameter.VAR_POSITIONAL:
                    params.setdefault(name, value)
        return params


def _split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """Job columns from known parameter names; JSON-safe leftovers go to extra_params. Values
    are checked later, by the job record (:func:`perflib.record.salvaged_record`)."""
    columns: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        column = "resolution" if name == "resolution" else _PARAM_ALIASES.get(name)
        if column is not None:
            columns[column] = value
        elif isinstance(value, (str, int, float, bool)):
            extra[name] = value
        else:
            extra[name] = repr(value)[:200]
    return columns, extra


def track_generation_job(job_id: str | None, pipeline_type: str,
                         params: Mapping[str, Any] | None = None, *, db: Any = None,
                         predicted_seconds: float | None = None,
                         queue_depth: int | None = None,
                         tags: Mapping[str, str] | None = None) -> JobTracker:
    """Track one generation job: ``with track_generation_job(id, 'video', params) as t: ...``.
    `tags` label it for comparisons, e.g. its experiment arm ``{"ab": "dpmpp"}``."""
    return JobTracker(job_id, pipeline_type, params, db=db,
                      predicted_seconds=predicted_seconds, queue_depth=queue_depth, tags=tags)


def track_performance(pipeline_type: str, job_type: str | None = None, *, db: Any = None,
                      tags: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: every call of the function is recorded as a job of `pipeline_type`.

    The function's arguments (``resolution``, ``steps``, ``frame_count``, ...) are captured from
    its signature. Works on plain and ``async def`` functions, across threads and reentrantly:
    each call gets its own tracker. `tags` label every call's job (``{"ab": "dpmpp"}``).
    """
    base_params = {"job_type": job_type} if job_type else None

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        def new_job(args, kwargs) -> JobTracker:
            tracker = JobTracker(None, pipeline_type, base_params, db=db, tags=tags)
            tracker._bound_call = (signature, args, kwargs)
            return tracker

        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(*args, **kwargs):
                with new_job(args, kwargs):
                    return await function(*args, **kwargs)
            return async_wrapper

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with new_job(args, kwargs):
                return function(*args, **kwargs)
        return wrapper

    return decorate
