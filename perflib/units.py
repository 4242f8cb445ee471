"""How perflib writes a duration for people: one rule, shared by the report, the analyses'
advice and the predictor's recommendations (the dashboard's JavaScript follows it too)."""
from __future__ import annotations

import math

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
    """
    if _missing(seconds):
        return MISSING
    sign, value = ("-" if seconds < 0 else ""), abs(float(seconds))
    if value == 0:
        text = "0 s"
    elif value < 1:
        text = f"{value:.2g} s"
    elif value < 10:
        text = f"{value:.1f} s"
    elif value < 180:
        text = f"{value:.0f} s"
    elif value < 600:
        text = f"{value / 60:.1f} min"
    elif value < 5400:
        text = f"{value / 60:.0f} min"
    elif value < 36000:
        text = f"{value / 3600:.1f} h"
    else:
        text = f"{value / 3600:,.0f} h"
    return sign + text


def _missing(value) -> bool:
    """None, NaN or pandas' NA (which refuses float())."""
    try:
        return value is None or math.isnan(float(value))
    except TypeError:
        return True
