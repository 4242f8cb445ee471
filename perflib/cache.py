"""A small thread-safe LRU map with expiring entries, for values that stay fresh for a while
(recent drift, estimates, the fleet size)."""
from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from typing import Any


class TtlCache:
    """At most `size` entries, least recently used evicted first; each expires between `ttl`/2
    and `ttl` seconds after it was stored (spread, so entries stored together are not all
    recomputed together). One lock guards it."""

    def __init__(self, ttl: float, size: int):
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or time.monotonic() > item[0]:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        expires = time.monotonic() + self.ttl * random.uniform(0.5, 1.0)
        with self._lock:
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
