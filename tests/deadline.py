"""Running a piece of test work under a deadline: a hang fails the test instead of the suite."""
from __future__ import annotations

import threading


def within(seconds: float, action) -> dict:
    """`action()`'s outcome (``result``, or the exception as ``error``), failing when it takes
    longer than `seconds` (it is left running in a daemon thread)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = action()
        except Exception as exc:  # the caller asserts on it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome
