"""Two thread helpers every layer shares: a periodic daemon thread, and per-process registries.

:class:`PeriodicThread` runs one callable every few seconds until stopped (the sampler, the
heartbeat). :class:`PerProcess` holds a process's shared objects (engines, writers, bindings,
publishers, the sampler) under one lock and empties itself in a forked child, whose copy of the
parent's threads and connections must never be used.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PeriodicThread:
    """Calls `tick` every `interval` seconds on a daemon thread named `name`, until :meth:`stop`.

    `first_wait` is the pause before the first call (0: at once). With `keep_rate` the pause
    after a call is shortened by the call's own duration, so calls start `interval` apart;
    otherwise each pause is the whole `interval`. An exception in `tick` is logged and the
    next call goes ahead."""

    def __init__(self, tick: Callable[[], object], interval: float, name: str, *,
                 first_wait: float = 0.0, keep_rate: bool = False):
        self.tick = tick
        self.interval = interval
        self.name = name
        self.first_wait = first_wait
        self.keep_rate = keep_rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread (nothing happens when it already runs)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait up to `timeout` seconds for a call in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        wait = self.first_wait
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # one failed call must not end the thread
                log.exception("%s failed", self.name)
            spent = time.monotonic() - started if self.keep_rate else 0.0
            wait = max(0.0, self.interval - spent)


class PerProcess(Generic[T]):
    """Objects shared by the threads of one process, by key, made once each; a forked child
    starts with none (the parent's lock may be held by a thread that does not exist there)."""

    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_in_child)

    def get(self, key: Hashable, make: Callable[[], T],
            stale: Callable[[T], bool] | None = None) -> T:
        """The object for `key`, made by `make` on first use (or when `stale` says the one
        held can no longer serve)."""
        item = self._items.get(key)
        if item is not None and (stale is None or not stale(item)):
            return item
        with self._lock:
            held = self._items.get(key)
            if held is None or held is item:  # none yet, or the stale one: replace it
                held = self._items[key] = make()
            return held

    def set(self, key: Hashable, item: T) -> T:
        """Hold `item` for `key`, replacing any other."""
        with self._lock:
            self._items[key] = item
        return item

    def values(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def clear(self) -> list[T]:
        """Forget every object; returns them (for the caller to close)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        return items

    def _forget_in_child(self) -> None:
        self._lock = threading.Lock()
        self._items.clear()
