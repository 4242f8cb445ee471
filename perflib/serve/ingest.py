"""Job records posted to the service: written to the store, or spooled while it is down."""
from __future__ import annotations

import logging
from functools import partial
from typing import Any, Sequence

from perflib.serve.errors import SpoolUnavailable
from perflib.serve.metrics import ServiceMetrics
from perflib.serve.schemas import RecordResult
from perflib.store import Spool, Store
from perflib.store.deadletter import DeadLetter, Landed, write_or_dead_letter
from perflib.store.drain import SpoolDrain

log = logging.getLogger(__name__)


class JobIngest:
    """Writes records idempotently (live jobs are replaced by their newer report). While the
    database is unavailable they go to the spool, which drains after the next write that lands
    or by itself with backoff; a record the database refuses goes to the dead-letter file."""

    def __init__(self, store: Store, spool: Spool, metrics: ServiceMetrics):
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.dead_letter = DeadLetter(spool.directory)
        # Replayed like a fresh post: a spooled final record replaces the job's live report.
        self.drain = SpoolDrain(spool, partial(self._land, replace_live=True),
                                store.config.spool_retry_seconds)

    def write(self, records: Sequence[dict[str, Any]]) -> RecordResult:
        try:
            landed = self._land(records, replace_live=True)
        except Exception as exc:  # the database is unavailable: keep the records
            self._spool(records, exc)
            self.metrics.records.labels("spooled").inc(len(records))
            return RecordResult(received=len(records), stored=0, already_stored=0,
                                spooled=len(records))
        already = len(records) - landed.stored - landed.dead_lettered
        self.metrics.records.labels("stored").inc(landed.stored)
        self.metrics.records.labels("already_stored").inc(already)
        return RecordResult(received=len(records), stored=landed.stored,
                            already_stored=already, spooled=0)

    def replay_spool(self) -> None:
        """After a write landed: replay what the spool holds (it stays there if the database
        refuses it again)."""
        self.drain.landed()

    def _land(self, records: Sequence[dict[str, Any]], replace_live: bool) -> Landed:
        landed = write_or_dead_letter(partial(self.store.write_jobs, replace_live=replace_live),
                                      records, self.dead_letter)
        self.metrics.dead_letters.inc(landed.dead_lettered)
        return landed

    def _spool(self, records: Sequence[dict[str, Any]], exc: Exception) -> None:
        log.warning("database unavailable (%s); spooling %d job records to %s",
                    type(exc).__name__, len(records), self.spool.directory)
        try:
            self.spool.append(records)
        except OSError as error:
            raise SpoolUnavailable(f"the database is unavailable and the spool "
                                   f"{self.spool.directory} cannot be written "
                                   f"({type(error).__name__})") from None
        self.drain.spooled()
