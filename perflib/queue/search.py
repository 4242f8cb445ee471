"""The smallest GPU count that meets a monotone condition: gallop from a guess, then bisect.
The autoscaling signal (:mod:`perflib.queue.autoscale`) and capacity planning
(:mod:`perflib.capacity.planner`) both search with it."""
from __future__ import annotations

from typing import Callable

MAX_GPUS = 100_000


def smallest_gpus(meets: Callable[[int], bool], guess: int = 1, least: int = 1) -> int:
    """The smallest N ≥ `least` (at least 1) with ``meets(N)``, for a condition that stays true
    as N grows; a good `guess` (Erlang-C's answer, an upper bound) keeps the number of calls
    near log2 of its error."""
    least = max(1, int(least))
    guess = max(least, int(guess))
    if meets(guess):
        passing, step = guess, 1
        while passing - step >= least and meets(passing - step):
            passing, step = passing - step, step * 2
        failing = max(least - 1, passing - step)  # least − 1 stands for "fewer than allowed"
    else:
        failing, step = guess, 1
        while not meets(failing + step):
            failing, step = failing + step, step * 2
            if failing > MAX_GPUS:
                raise ValueError(f"no GPU count up to {MAX_GPUS} meets the target")
        passing = failing + step
    while passing - failing > 1:
        middle = (passing + failing) // 2
        if meets(middle):
            passing = middle
        else:
            failing = middle
    return passing
