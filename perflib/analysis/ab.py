"""Experiment arms for A/B comparisons: which arm a job runs in, decided by its id alone.

``assign("job-42", ["euler", "dpmpp_2m"])`` gives the same arm for the same job id on every
machine and in every process (a hash, not a random draw), so a retried job stays in its arm and
the split can be reproduced afterwards. Tag the job with the arm
(``track_generation_job(..., tags={"ab": arm})``) and compare the arms with ``perflib compare
--a tag:ab=euler --b tag:ab=dpmpp_2m``.
"""
from __future__ import annotations

import hashlib
import math
import numbers
from typing import Sequence

_HASH_BYTES = 8


def assign(job_id: str, arms: Sequence[str], weights: Sequence[float] | None = None,
           experiment: str = "") -> str:
    """The arm `job_id` runs in: each arm's share of jobs is its weight (equal by default).

    The choice is ``blake2b(experiment, job_id)`` read as a number in [0, 1) and placed on the
    arms' cumulative weights, so it is deterministic per job id, uniform over ids, and
    independent between experiments with different `experiment` names. Raises ValueError
    naming the argument at fault.
    """
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be non-empty text, got {job_id!r}")
    arms = list(arms) if not isinstance(arms, str) else [arms]
    if not arms or not all(isinstance(arm, str) and arm for arm in arms):
        raise ValueError(f"arms must be a non-empty list of non-empty texts, got {arms!r}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"arms must be distinct, got {arms!r}")
    shares = _shares(weights, len(arms))
    point = _unit_interval(f"{experiment}\x00{job_id}")
    cumulative = 0.0
    for arm, share in zip(arms, shares):
        cumulative += share
        if point < cumulative:
            return arm
    return next(arm for arm, share in zip(reversed(arms), reversed(shares)) if share > 0)


def _shares(weights: Sequence[float] | None, count: int) -> list[float]:
    """Weights as shares summing to 1; equal when none are given."""
    if weights is None:
        return [1.0 / count] * count
    weights = list(weights)
    if len(weights) != count:
        raise ValueError(f"weights must have one entry per arm ({count}), got {len(weights)}")
    if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w)
               and w >= 0 for w in weights):
        raise ValueError(f"weights must be finite numbers ≥ 0, got {weights!r}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must not all be 0")
    return [w / total for w in weights]


def _unit_interval(text: str) -> float:
    """`text` hashed to a number in [0, 1)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=_HASH_BYTES).digest()
    return int.from_bytes(digest, "big") / 2.0 ** (8 * _HASH_BYTES)
