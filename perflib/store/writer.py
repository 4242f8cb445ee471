"""Background batch writer: the pipeline's thread only enqueues; this thread writes.

Items on the queue are either finished job records (dicts) or objects with an ``as_record()``
method (the tracker's job contexts), so even building the record happens off the hot path. A
batch the database cannot take (down, locked, read-only) goes to the spool, which drains after
the next batch that lands or by itself with backoff (:mod:`perflib.store.drain`); a record the
database refuses for what it holds goes to the dead-letter file and the rest of its batch lands
(:mod:`perflib.store.deadletter`). Records still queued at interpreter exit — or at the end of a
multiprocessing child, which skips atexit — are flushed, or spooled if that fails.
"""
from __future__ import annotations

import atexit
import logging
import threading
from multiprocessing import util as multiprocessing_util
from queue import Empty, SimpleQueue
from typing import Any, Mapping

from perflib.config import safe_url
from perflib.store.database import Store
from perflib.record import RecordError
from perflib.store.deadletter import DeadLetter, write_or_dead_letter
from perflib.store.drain import SpoolDrain
from perflib.store.spool import Spool
from perflib.threads import PerProcess

log = logging.getLogger(__name__)

MAX_BATCH = 2000
EXIT_FLUSH_TIMEOUT_S = 30.0


class _FlushMarker:
    def __init__(self):
        self.done = threading.Event()


class BatchWriter:
    """Drains a queue of job records into a store, in batches, on one daemon thread."""

    def __init__(self, store: Store, spool: Spool, max_batch: int = MAX_BATCH):
        self.store = store
        self.spool = spool
        self.dead_letter = DeadLetter(spool.directory)
        self.drain = SpoolDrain(spool, self._write_spooled, store.config.spool_retry_seconds)
        self.max_batch = max_batch
        self._queue: SimpleQueue = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._warned = False
        self.written = 0
        self.spooled = 0

    def submit(self, item: Any) -> None:
        """Queue a record (or an object with ``as_record()``); never blocks, never raises."""
        self._queue.put(item)
        if self._thread is None:
            self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written or spooled."""
        marker = _FlushMarker()
        self.submit(marker)
        return marker.done.wait(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="perflib-writer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except Empty:
                    break
            self._process(batch)

    def _process(self, batch: list) -> None:
        markers = [item for item in batch if isinstance(item, _FlushMarker)]
        records = [record for item in batch if not isinstance(item, _FlushMarker)
                   if (record := self._as_record(item)) is not None]
        try:
            self.write(records)
        finally:
            for marker in markers:
                marker.done.set()

    def _as_record(self, item: Any) -> dict | None:
        """The record of a queued item; a job the record refuses outright (its id or pipeline
        type at fault) goes to the dead-letter file, a tracker bug is logged."""
        try:
            return item.as_record() if hasattr(item, "as_record") else dict(item)
        except RecordError as exc:
            self.dead_letter.append(exc.values or {"item": repr(item)[:200]}, exc)
        except Exception:  # a tracker bug must not take the writer thread down
            log.exception("perflib could not build a job record; skipped")
        return None

    def write(self, records: list[Mapping[str, Any]]) -> None:
        """Write records now — those the database refuses into the dead-letter file — or, while
        the database is unavailable, into the spool. Never raises."""
        if not records:
            return
        try:
            landed = write_or_dead_letter(self.store.write_jobs, records, self.dead_letter)
        except Exception as exc:  # the database is down, locked for too long, or read-only
            self._spool(records, exc)
            return
        self.written += len(records) - landed.dead_lettered
        self._warned = False
        self.drain.landed()

    def _write_spooled(self, records: list[Mapping[str, Any]]) -> None:
        write_or_dead_letter(self.store.write_jobs, records, self.dead_letter)

    def _spool(self, records: list[Mapping[str, Any]], exc: Exception) -> None:
        try:
            self.spooled += self.spool.append(records)
        except Exception:  # noqa: BLE001 — last resort: say exactly what could not be kept
            log.exception("perflib could not spool %d job records", len(records))
            return
        self.drain.spooled()
        if not self._warned:
            self._warned = True
            log.warning("perflib database %s unavailable (%s); spooling job records to %s",
                        safe_url(self.store.url), type(exc).__name__, self.spool.directory)

    def close(self, timeout: float = EXIT_FLUSH_TIMEOUT_S) -> None:
        """Flush at exit; whatever could not be written in time is spooled from this thread."""
        if self._thread is None or not self._thread.is_alive():
            self._drain_into_spool()
            return
        if not self.flush(timeout):
            self._drain_into_spool()

    def _drain_into_spool(self) -> None:
        records = []
        while True:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if isinstance(item, _FlushMarker):
                item.done.set()
            elif (record := self._as_record(item)) is not None:
                records.append(record)
        if records:
            self.spool.append(records)


_writers: PerProcess[BatchWriter] = PerProcess()


def writer_for(store: Store) -> BatchWriter:
    """The process-wide writer for `store`'s database (one thread per database)."""
    settings = store.config
    key = (store.url.render_as_string(hide_password=False), settings.db_schema,
           str(settings.spool_dir))
    return _writers.get(key, lambda: BatchWriter(store, Spool(settings.spool_dir)))


def flush_all(timeout: float | None = None) -> None:
    """Wait for every writer in this process to write what it was given."""
    for writer in _writers.values():
        writer.flush(timeout)


@atexit.register
def _close_all() -> None:
    for writer in _writers.values():
        writer.close()


class _MultiprocessingChild:
    """A multiprocessing child leaves through ``os._exit``, skipping atexit, but runs its
    finalizers first: one of them flushes what the child's writers still hold."""

    def __call__(self, _self) -> None:
        multiprocessing_util.Finalize(None, _close_all, exitpriority=100)


_child_hook = _MultiprocessingChild()
multiprocessing_util.register_after_fork(_child_hook, _child_hook)
