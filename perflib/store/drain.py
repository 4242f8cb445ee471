"""Drains a spool back into the database once it takes writes again, without waiting for one.

Writers say when they had to spool (:meth:`SpoolDrain.spooled`) and when a write landed
(:meth:`SpoolDrain.landed`, which replays at once, on the caller's thread, if records wait). A
daemon thread also retries on its own while records wait — first after the configured
``spool_retry_seconds``, then doubling up to a minute — so the spool empties even when no new
write ever comes.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence

from perflib.store.spool import Spool

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 60.0


class SpoolDrain:
    """Replays one spool with `write` (which must be idempotent) until it is empty."""

    def __init__(self, spool: Spool, write: Callable[[Sequence[dict]], Any],
                 first_retry_s: float):
        self.spool = spool
        self.write = write
        self.first_retry_s = min(first_retry_s, MAX_RETRY_SECONDS)
        self._pending = False  # records known to wait
        self._state_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Retry in the background any records an earlier run left in the spool."""
        if self.spool.has_pending():
            self.spooled()

    def spooled(self) -> None:
        """Records were just spooled: retry them in the background."""
        with self._state_lock:
            self._pending = True
        self._start()

    def landed(self) -> None:
        """A write just landed: replay now, on this thread, what waits in the spool (ours, or
        left by a process that has ended)."""
        if self._pending or self.spool.has_pending():
            with self._state_lock:
                self._pending = True
            if not self.replay():
                self._start()

    def replay(self) -> bool:
        """Replay the spool now; True when nothing waits any more."""
        with self._replay_lock:
            if not self._pending:
                return True  # another thread has just drained it
            try:
                self.spool.replay(self.write)
            except Exception as exc:  # the database is still unavailable: the records wait
                log.info("spool replay deferred: %s", type(exc).__name__)
                return False
            with self._state_lock:  # records spooled meanwhile keep it pending
                self._pending = self.spool.has_pending()
                return not self._pending

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background retries (records still waiting stay in the spool)."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(target=self._run, name="perflib-spool-drain",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        delay = self.first_retry_s
        while not self._closing.is_set():
            if not self._pending:
                self._wake.wait()  # idle until something is spooled
                self._wake.clear()
                delay = self.first_retry_s
                continue
            if self._closing.wait(delay):
                return
            delay = self.first_retry_s if self.replay() else min(2 * delay,
                                                                   MAX_RETRY_SECONDS)
