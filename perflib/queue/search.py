"""The smallest GPU count that meets a monotone condition: gallop from a guess, then bisect."""
from __future__ import annotations

from typing import Callable

MAX_GPUS = 100_000


def smallest_gpus(meets: Callable[[int], bool], guess: int = 1) -> int:
    """The smallest N ≥ 1 with ``meets(N)``, for a condition that stays true as N grows; a
    good `guess` (Erlang-C's answer) keeps the number of calls near log2 of its error."""
    guess = max(1, int(guess))
    if meets(guess):
        passing, step = guess, 1
        while passing - step >= 1 and meets(passing - step):
            passing, step = passing - step, step * 2
        failing = max(0, passing - step)  # 0 stands for "fewer than one GPU"
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
