"""How sure the recommendation is: the smallest GPU count meeting the target in each of many
simulated weeks, drawn apart from the pooled ones. With a sparse history one week needs 1 GPU
and the next 2; the plan says so, and names the count that meets the target in 90% of weeks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perflib.capacity.arrivals import ArrivalPattern
from perflib.capacity.simulation import draw_workload, run_queue
from perflib.queue.search import smallest_gpus

SPREAD_WEEKS = 20
SURE_SHARE = 0.9  # the count meeting the target in this share of the simulated weeks


@dataclass(frozen=True)
class NeedSpread:
    """Per simulated week, the fewest GPUs keeping every hour within the target."""

    per_week: np.ndarray

    @property
    def least(self) -> int:
        return int(self.per_week.min())

    @property
    def median(self) -> float:
        return float(np.median(self.per_week))

    @property
    def most(self) -> int:
        return int(self.per_week.max())

    @property
    def sure(self) -> int:
        """The fewest GPUs that meet the target in at least 90% of the weeks."""
        ranked = np.sort(self.per_week)
        return int(ranked[math.ceil(SURE_SHARE * ranked.size) - 1])

    def sentence(self) -> str:
        weeks = self.per_week.size
        return (f"Over {weeks} simulated weeks one at a time, the GPUs needed range from "
                f"{self.least} to {self.most} (median {self.median:g}); {self.sure} meet the "
                f"target in {_share(self.per_week, self.sure)} of them.")

    def as_dict(self) -> dict:
        return {"weeks": int(self.per_week.size), "min": self.least, "median": self.median,
                "max": self.most, "gpus_meeting_target_in_90_percent": self.sure,
                "per_week": self.per_week.tolist()}


def need_spread(pattern: ArrivalPattern, service_seconds: np.ndarray, target_seconds: float,
                weeks: int = SPREAD_WEEKS, seed: int = 0, guess: int = 1) -> NeedSpread:
    """Draw `weeks` weeks (seeded) and find, for each alone, the smallest GPU count whose p95
    wait meets the target at every hour of the week."""
    if not (isinstance(weeks, int) and weeks >= 1):
        raise ValueError(f"spread_weeks must be a whole number ≥ 1, got {weeks!r}")
    workload = draw_workload(pattern, service_seconds, weeks, seed)
    needs = [smallest_gpus(lambda n, one=workload.week(week): run_queue(one, n)
                           .meets(target_seconds).all(), guess) for week in range(weeks)]
    return NeedSpread(np.asarray(needs, dtype=np.int64))


def _share(per_week: np.ndarray, gpus: int) -> str:
    return f"{(per_week <= gpus).mean():.0%}"
