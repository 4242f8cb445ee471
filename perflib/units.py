"""How perflib writes durations and counts for people: one rule, shared by the report, the
analyses' advice, the capacity plan and the predictor's recommendations (the dashboard's
JavaScript follows the duration rule too)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

MISSING = "–"


def format_duration(seconds: float | None) -> str:
    """A duration in the unit that shows it; the dashboard's JavaScript follows the same rule.

    The rule, on the magnitude (a negative value gets a leading "-"; missing is "–"):

    ===============  ==========================  =============
    below            shown as                    examples
    ===============  ==========================  =============
    exactly 0        ``0 s``
    1 s              two significant digits, s   ``0.93 s``, ``0.004 s``
    10 s             one decimal, s              ``3.2 s``
    3 min            whole seconds               ``45 s``, ``132 s``
    10 min           one decimal, min            ``3.5 min``, ``9.8 min``
    90 min           whole minutes               ``14 min``
    10 h             one decimal, h              ``1.5 h``
    (above)          whole hours, thousands sep  ``36 h``, ``1,234 h``
    ===============  ==========================  =============

    So a value is never shown as "0 min" or "0.0 h": minutes start at 3 min, hours at 90 min.
    The band is chosen by the value as shown: 9.99 s is "10 s", not "10.0 s".
    """
    if _missing(seconds):
        return MISSING
    sign, value = ("-" if seconds < 0 else ""), abs(float(seconds))
    if value == 0:
        return "0 s"
    if float(f"{value:.2g}") < 1:
        return f"{sign}{value:.2g} s"
    for below, unit, divisor, decimals in _BANDS:  # the first band the *rounded* value is in
        shown = round(value / divisor, decimals)
        if shown * divisor < below:
            break
    return f"{sign}{shown:,.{decimals}f} {unit}"


# (shown below, unit, seconds per unit, decimals): the rows of the table above from 1 s.
_BANDS = ((10, "s", 1, 1), (180, "s", 1, 0), (600, "min", 60, 1), (5400, "min", 60, 0),
          (36000, "h", 3600, 1), (math.inf, "h", 3600, 0))


def _missing(value) -> bool:
    """None, NaN or pandas' NA (which refuses float())."""
    try:
        return value is None or math.isnan(float(value))
    except TypeError:
        return True


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA: nothing to show."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def format_percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9988 → ``99.9%``; never ``-0.0%`` (a rounding residue
    such as -1e-9 reads 0.0%)."""
    if missing(fraction):
        return MISSING
    return f"{round(float(fraction) * 100, digits) + 0.0:,.{digits}f}%"  # + 0.0: -0.0 → 0.0


def format_count(number: float | None, noun: str | None = None) -> str:
    """A count with thousands separators: 12849.0 → ``12,849``; with a `noun`, pluralised
    by the count: ``1 GPU``, ``3 GPUs``."""
    if missing(number):
        return MISSING
    count = round(float(number))
    return f"{count:,}" if noun is None else f"{count:,} {noun}{'' if count == 1 else 's'}"
