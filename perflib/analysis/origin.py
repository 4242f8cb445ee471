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


@dataclass(frozen=True)
class DataOrigin:
    """Job counts of the whole database and of one analysis window, real and simulated."""

    jobs: int
    simulated_jobs: int
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
            return f"No jobs in this period: the database holds {self.jobs} jobs, all outside it."
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
    """Count the database's jobs and those started in [start, end) (without a window: all of
    them), real and simulated, in one pass."""
    inside = sa.true() if start is None else in_window(store, start, end)
    counts = [sa.func.count(),
              sa.func.sum(sa.case((SIMULATED, 1), else_=0)),
              sa.func.sum(sa.case((inside, 1), else_=0)),
              sa.func.sum(sa.case((sa.and_(inside, SIMULATED), 1), else_=0))]
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(*counts).select_from(jobs)).one()
    return DataOrigin(*(int(value or 0) for value in row))
