"""Per-node estimates of ComfyUI prompts in the service: node costs learned per GPU and server
from the stored node phases (:mod:`perflib.comfyui.node_estimate`), kept like the service's other
models — reused until jobs are recorded or ``FIT_TTL_SECONDS`` pass — and fitted in a worker
thread, never on the event loop."""
from __future__ import annotations

import threading
from typing import Any, Callable

from perflib.cache import TtlCache
from perflib.comfyui.cache_keys import cached_nodes
from perflib.comfyui.node_estimate import LearnedNodes, learn_nodes, refine
from perflib.store import Store

FIT_TTL_SECONDS = 60.0
FITS_KEPT = 64  # GPU and server pairs


class NodeCostBook:
    """Learned node costs per (gpu_name, hostname); refitted after jobs were recorded."""

    def __init__(self, store: Store):
        self.store = store
        self._fits = TtlCache(FIT_TTL_SECONDS, FITS_KEPT)
        self._generation = 0
        self._lock = threading.Lock()

    def learned(self, gpu_name: str | None, hostname: str | None) -> LearnedNodes:
        """The current fit (blocking: call it from a worker thread)."""
        key = (gpu_name, hostname)
        kept = self._fits.get(key)
        if kept is not None and kept[0] == self._generation:
            return kept[1]
        with self._lock:  # one fit at a time; a request waiting for it then reuses it
            kept = self._fits.get(key)
            if kept is not None and kept[0] == self._generation:
                return kept[1]
            generation = self._generation
            fitted = learn_nodes(self.store, gpu_name, hostname)
            self._fits.put(key, (generation, fitted))
            return fitted

    def jobs_recorded(self) -> None:
        """New records may hold node phases: the next estimate refits."""
        self._generation += 1

    def refiner(self, graph: dict[str, Any], parsed: Any, previous: dict[str, Any] | None,
                gpu_name: str | None, hostname: str | None
                ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """What turns the job-level prediction of this prompt into its per-node answer (run
        it in a worker thread)."""
        def refined(prediction: dict[str, Any]) -> dict[str, Any]:
            cached = cached_nodes(graph, previous, parsed.needed_nodes)
            return refine(prediction, self.learned(gpu_name, hostname), graph, parsed, cached)
        return refined
