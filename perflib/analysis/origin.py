"""Where the analysed jobs come from: recorded by a pipeline, or written by ``perflib simulate``.

Analyses count every job; a report says plainly when the database is empty, when its period
holds no job, when what it shows is simulated, and when real and simulated jobs are mixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from perflib.analysis.sql import SIMULATED, in_window
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

EMPTY_DATABASE = ("The database is empty: no job has been recorded yet. Run `perflib simulate "
                  "--if-empty` to see a demo with simulated data.")


COUNT_CAP = 1_000_000  # a database's jobs are counted up to one more than this, no further


@dataclass(frozen=True)
class DataOrigin:
    """Job counts of one analysis window, real and simulated, and of the whole database where a
    notice needs them: without a window, or when the window holds no job (then counted up to
    COUNT_CAP + 1). Otherwise they are None: counting a fleet's whole history would cost more
    than the report."""

    jobs: int | None
    simulated_jobs: int | None
    window_jobs: int
    window_simulated_jobs: int

    @property
    def simulated(self) -> bool:
        """Some of the window's jobs are simulated."""
        return self.window_simulated_jobs > 0

    @property
    def mixed(self) -> bool:
        """The window holds real and simulated jobs together."""
        return 0 < self.window_simulated_jobs < self.window_jobs

    def notice(self) -> str | None:
        """What a reader must know before trusting the figures (one line, Markdown-safe), or
        None."""
        if self.jobs == 0:
            return EMPTY_DATABASE
        if self.window_jobs == 0:
            held = f"over {COUNT_CAP:,}" if self.jobs > COUNT_CAP else f"{self.jobs}"
            return f"No jobs in this period: the database holds {held} jobs, all outside it."
        if self.mixed:
            return (f"Real and simulated jobs are mixed: {self.window_simulated_jobs} of the "
                    f"{self.window_jobs} jobs in this period were written by `perflib simulate` "
                    "and count in every figure. `perflib purge --simulated` removes them.")
        if self.simulated:
            return ("This report shows simulated data: its jobs were written by `perflib "
                    "simulate`, not recorded from a pipeline. `perflib purge --simulated` "
                    "removes them.")
        return None


def data_origin(store: Store, start: datetime | None = None, end: datetime | None = None
                ) -> DataOrigin:
    """Count the jobs started in [start, end), real and simulated, in one indexed pass; the
    database's jobs only where the window holds none (see :class:`DataOrigin`). Without a window,
    count the whole database."""
    if start is None:
        window = counts = _counts(store, sa.true())
    else:
        window = _counts(store, in_window(start, end))
        counts = (_database_jobs(store), None) if window[0] == 0 else (None, None)
    return DataOrigin(*counts, *window)


def _counts(store: Store, condition) -> tuple[int, int]:
    """Jobs matching `condition`, and how many of them are simulated."""
    query = (sa.select(sa.func.count(), sa.func.sum(sa.case((SIMULATED, 1), else_=0)))
             .select_from(jobs).where(condition))
    with store.engine.connect() as conn:
        total, simulated = conn.execute(query).one()
    return int(total), int(simulated or 0)


def _database_jobs(store: Store) -> int:
    """The database's jobs, counted up to COUNT_CAP + 1."""
    some = sa.select(jobs.c.id).limit(COUNT_CAP + 1).subquery()
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(some)).scalar_one()
