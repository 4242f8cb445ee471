"""The model table's one registry: saving a version, the one pruning rule, the reads of
maintenance, purge and retraining, and which stored versions may answer for a pipeline type, in
order of preference, each loaded and checked once.

A version that cannot be loaded or fails its checks is refused — logged once with its reason,
remembered, not retried on every request — and the next one answers. A version that answers but
prices some job at a value that cannot be returned has that counted with the reason. Preference:
the active versions first, then the others newest first; the pipeline type's own before pooled
(``all``) ones. The list is re-read at most every `check_seconds`, so a newly saved version is
picked up without a restart.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from perflib.store import Store
from perflib.store.schema import performance_prediction_models as models_table

log = logging.getLogger(__name__)

POOLED = "all"
KEEP_VERSIONS = 3  # per pipeline and family, the newest kept (and the active one, however old)


def save_version(store: Store, pipeline_type: str, family: str, blob: bytes, activate: bool,
                 **columns: Any) -> int:
    """Store `blob` as the next version of (pipeline_type, family), the active one of its
    pipeline if `activate`, with the other `columns` (metrics, features, train_start,
    train_end, n_rows); prune the versions past the newest KEEP_VERSIONS. Its version number."""
    t = models_table
    with store.writable_engine().begin() as conn:
        latest = conn.execute(sa.select(sa.func.max(t.c.version)).where(
            t.c.pipeline_type == pipeline_type, t.c.family == family)).scalar() or 0
        if activate:
            conn.execute(sa.update(t).where(t.c.pipeline_type == pipeline_type)
                         .values(is_active=False))
        conn.execute(sa.insert(t).values(
            pipeline_type=pipeline_type, family=family, version=latest + 1,
            is_active=activate, blob=blob, created_at=datetime.now(timezone.utc), **columns))
        delete_versions(conn, stale_versions(conn))
    return latest + 1


def stale_versions(conn: sa.Connection) -> list[int]:
    """The one pruning rule: ids of the inactive versions past the newest KEEP_VERSIONS of
    their pipeline and family."""
    t = models_table
    rank = sa.func.row_number().over(partition_by=[t.c.pipeline_type, t.c.family],
                                     order_by=t.c.version.desc()).label("rank")
    ranked = sa.select(t.c.id, t.c.is_active, rank).subquery()
    return list(conn.execute(sa.select(ranked.c.id).where(
        ranked.c.rank > KEEP_VERSIONS, ranked.c.is_active.is_(False))).scalars())


def delete_versions(conn: sa.Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(sa.delete(models_table).where(models_table.c.id.in_(ids)))


def version_dates(store: Store) -> list:
    """Every version's (pipeline_type, is_active, created_at, train_end)."""
    t = models_table
    with store.engine.connect() as conn:
        return conn.execute(sa.select(t.c.pipeline_type, t.c.is_active, t.c.created_at,
                                      t.c.train_end)).all()


def active_blob(store: Store, pipeline_type: str) -> bytes | None:
    """The stored blob of `pipeline_type`'s active version (None without one)."""
    t = models_table
    with store.engine.connect() as conn:
        return conn.execute(sa.select(t.c.blob).where(t.c.pipeline_type == pipeline_type,
                                                      t.c.is_active.is_(True))).scalar()


def versions_trained_between(conn: sa.Connection, first, after) -> list:
    """(id, pipeline_type, is_active, created_at) of the versions whose training period
    overlaps [first, after) (bounds as the store compares them)."""
    t = models_table
    return conn.execute(sa.select(t.c.id, t.c.pipeline_type, t.c.is_active, t.c.created_at)
                        .where(t.c.train_end >= first, t.c.train_start < after)).all()


@dataclass(frozen=True)
class StoredVersion:
    """One row of ``performance_prediction_models``, without its blob."""

    id: int
    pipeline_type: str
    family: str
    version: int
    is_active: bool
    created_at: datetime | None
    n_rows: int | None
    metrics: dict | None

    @property
    def label(self) -> str:
        return f"{self.family} v{self.version} ({self.pipeline_type})"

    def identity(self) -> dict:
        return {"model_pipeline_type": self.pipeline_type, "family": self.family,
                "version": self.version}


class StoredModels:
    """The stored versions and what became of each: loaded, refused, or falling back on some
    jobs. `load(blob, version)` returns the model or raises; `store` gives the store."""

    def __init__(self, store: Callable[[], Store], load: Callable[[bytes, StoredVersion], Any],
                 check_seconds: float):
        self.store = store
        self.load = load
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._versions: tuple[StoredVersion, ...] = ()
        self._loaded: dict[int, Any] = {}
        self._refused: dict[int, str] = {}
        self._fallbacks: dict[int, tuple[int, str]] = {}  # count and latest reason

    def versions(self, pipeline_type: str) -> list[StoredVersion]:
        """The versions that may answer for `pipeline_type`, most preferred first."""
        self._refresh()
        mine = [v for v in self._versions if v.pipeline_type in (pipeline_type, POOLED)]
        return sorted(mine, key=lambda v: (not v.is_active, v.pipeline_type == POOLED, -v.id))

    def usable(self, pipeline_type: str) -> Iterator[tuple[StoredVersion, Any]]:
        """Each version that loads and passes its checks, with its model, in preference order;
        later ones are loaded only when asked for."""
        for version in self.versions(pipeline_type):
            model = self._model(version)
            if model is not None:
                yield version, model

    def loaded(self, version: StoredVersion) -> Any | None:
        with self._lock:
            return self._loaded.get(version.id)

    def refusal(self, version: StoredVersion) -> str | None:
        """Why `version` was refused, if it was."""
        with self._lock:
            return self._refused.get(version.id)

    def fallbacks(self, version: StoredVersion) -> tuple[int, str] | None:
        """How many times `version` left jobs to the next one, and the latest reason."""
        with self._lock:
            return self._fallbacks.get(version.id)

    def note_fallback(self, version: StoredVersion, reason: str) -> None:
        """`version` could not price some jobs (logged the first time)."""
        with self._lock:
            count = self._fallbacks.get(version.id, (0, ""))[0] + 1
            self._fallbacks[version.id] = (count, reason)
        if count == 1:
            log.warning("stored model %s could not price some jobs, the next stored version "
                        "answers for them: %s", version.label, reason)

    def reload(self) -> None:
        """Re-read the versions at the next call and try refused ones again (a service calls
        this after saving a model, instead of waiting for the periodic check)."""
        with self._lock:
            self._checked_at = -float("inf")
            self._refused.clear()

    def _refresh(self) -> None:
        started = time.monotonic()
        if started - self._checked_at < self.check_seconds:
            return
        t = models_table
        with self._lock:
            if started - self._checked_at < self.check_seconds:
                return  # another thread has just re-read them
            with self.store().engine.connect() as conn:
                rows = conn.execute(sa.select(
                    t.c.id, t.c.pipeline_type, t.c.family, t.c.version, t.c.is_active,
                    t.c.created_at, t.c.n_rows, t.c.metrics)).mappings().all()
            self._versions = tuple(StoredVersion(**row) for row in rows)
            kept = {version.id for version in self._versions}
            for known in (self._loaded, self._refused, self._fallbacks):
                for gone in set(known) - kept:
                    del known[gone]
            self._checked_at = time.monotonic()

    def _model(self, version: StoredVersion) -> Any | None:
        """The loaded model of `version`, loading it the first time (one thread loads, the
        others wait for it); None if it is refused or no longer stored."""
        with self._lock:
            if version.id in self._loaded or version.id in self._refused:
                return self._loaded.get(version.id)
            with self.store().engine.connect() as conn:
                blob = conn.execute(sa.select(models_table.c.blob).where(
                    models_table.c.id == version.id)).scalar()
            if blob is None:
                return None
            try:
                model = self.load(blob, version)
            except Exception as exc:  # a stored blob is outside data: any failure refuses it
                reason = str(exc) or type(exc).__name__
                self._refused[version.id] = reason
                log.warning("stored model %s refused, the next stored version (else the "
                            "heuristic) answers: %s", version.label, reason)
                return None
            self._loaded[version.id] = model
            return model
