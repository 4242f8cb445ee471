"""Erlang-C (M/M/c): the textbook answer, beside the simulation as a sanity check.

It assumes Poisson arrivals and exponential service times. Generation jobs have neither (a
few long videos among many short images; scripts submitting batches), so it usually asks for
fewer GPUs than the simulation does; the gap says how much the variance and the bursts cost.
"""
from __future__ import annotations

import math

MAX_SERVERS = 100_000


def _check(arrival_rate: float, service_rate: float, servers: int | None = None) -> None:
    if not (arrival_rate >= 0 and math.isfinite(arrival_rate)):
        raise ValueError(f"arrival_rate must be a finite number ≥ 0, got {arrival_rate!r}")
    if not (service_rate > 0 and math.isfinite(service_rate)):
        raise ValueError(f"service_rate must be a finite number > 0, got {service_rate!r}")
    if servers is not None and (isinstance(servers, bool) or int(servers) != servers
                                or servers < 1):
        raise ValueError(f"servers must be a whole number ≥ 1, got {servers!r}")


def wait_probability(arrival_rate: float, service_rate: float, servers: int) -> float:
    """P(a job waits) in M/M/c (Erlang's C formula); 1 when the load reaches `servers`."""
    _check(arrival_rate, service_rate, servers)
    load = arrival_rate / service_rate
    if load >= servers:
        return 1.0
    blocking = 1.0  # Erlang B by its stable recursion
    for k in range(1, int(servers) + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking / (1 - load / servers * (1 - blocking))


def wait_quantile(arrival_rate: float, service_rate: float, servers: int,
                  quantile: float = 0.95) -> float:
    """Seconds within which `quantile` of jobs start (P(W > t) = C·e^−(cμ−λ)t); inf when
    the GPUs cannot keep up."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile!r}")
    waiting = wait_probability(arrival_rate, service_rate, servers)
    if arrival_rate / service_rate >= servers:
        return math.inf
    if waiting <= 1 - quantile:
        return 0.0
    return math.log(waiting / (1 - quantile)) / (servers * service_rate - arrival_rate)


def servers_needed(arrival_rate: float, service_rate: float, target_seconds: float,
                   quantile: float = 0.95) -> int:
    """The fewest servers whose `quantile` wait is within `target_seconds` (at least 1)."""
    _check(arrival_rate, service_rate)
    servers = max(1, math.floor(arrival_rate / service_rate) + 1)
    while wait_quantile(arrival_rate, service_rate, servers, quantile) > target_seconds:
        servers += 1
        if servers > MAX_SERVERS:
            raise ValueError(f"more than {MAX_SERVERS} servers needed: check the rates")
    return servers
