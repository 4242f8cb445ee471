"""Job records posted to the service: written to the store, or spooled while it is down."""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from perflib.serve.errors import SpoolUnavailable
from perflib.serve.metrics import ServiceMetrics
from perflib.serve.schemas import RecordResult
from perflib.store import Spool, Store

log = logging.getLogger(__name__)


class JobIngest:
    """Writes records idempotently (live jobs are replaced by their newer report); when the
    database refuses them they go to the spool, replayed after the next write that lands."""

    def __init__(self, store: Store, spool: Spool, metrics: ServiceMetrics):
        self.store = store
        self.spool = spool
        self.metrics = metrics
        # Appending and replaying never overlap, so a replay cannot delete a file that an
        # append is still writing to.
        self._spool_lock = threading.Lock()

    def write(self, records: Sequence[dict[str, Any]]) -> RecordResult:
        try:
            stored = self.store.write_jobs(records, replace_live=True)
        except Exception as exc:  # the database is down, or refused the batch: keep it
            self._spool(records, exc)
            self.metrics.records.labels("spooled").inc(len(records))
            return RecordResult(received=len(records), stored=0, already_stored=0,
                                spooled=len(records))
        self.metrics.records.labels("stored").inc(stored)
        self.metrics.records.labels("already_stored").inc(len(records) - stored)
        return RecordResult(received=len(records), stored=stored,
                            already_stored=len(records) - stored, spooled=0)

    def replay_spool(self) -> int:
        """Write what the spool holds; it stays there if the database refuses it again."""
        with self._spool_lock:
            try:
                return self.spool.replay(self.store.write_jobs) if self.spool.has_pending() \
                    else 0
            except Exception as exc:  # retried after the next write that lands
                log.info("spool replay deferred: %s", type(exc).__name__)
                return 0

    def _spool(self, records: Sequence[dict[str, Any]], exc: Exception) -> None:
        log.warning("database unavailable (%s); spooling %d job records to %s",
                    type(exc).__name__, len(records), self.spool.directory)
        try:
            with self._spool_lock:
                self.spool.append(records)
        except OSError as error:
            raise SpoolUnavailable(f"the database is unavailable and the spool "
                                   f"{self.spool.directory} cannot be written "
                                   f"({type(error).__name__})") from None
