"""The node's queue ETA counts a prompt ahead that has no estimate (the service refused it or was
down) at the fallback, the median estimate of this server's other prompts, instead of 0 s."""
from __future__ import annotations

import importlib

from tests.clock import FakeClock
from tests.test_comfyui_node import comfyui_dir, load_package, package  # noqa: F401 (fixtures)


def board_with(package, estimates: dict[str, float | None], clock):
    """An EstimateBoard whose service answers `estimates` by graph name (None: refuses)."""
    board_module = importlib.import_module(f"{package.__name__}.estimate_board")
    queue: tuple[list, list] = ([], [])

    def ask(graph, previous=None):
        seconds = estimates[graph["name"]]
        if seconds is None:
            raise ValueError("the service refused it")
        return {"predicted_time_seconds": seconds}

    board = board_module.EstimateBoard(ask, lambda *args: None, lambda: queue, 5.0, clock)
    return board, queue


def test_an_unestimated_prompt_ahead_counts_at_the_fallback(package):
    clock = FakeClock(1_000.0)
    estimates = {"a": 10.0, "b": None, "c": 30.0, "new": 5.0}
    board, (running, pending) = board_with(package, estimates, clock)
    for number, name in enumerate(estimates):
        board.submitted({"prompt": {"name": name}, "prompt_id": name})
        pending.append([number, name, {"name": name}, {}, []])
    for name in estimates:
        board._by_id[name].done.wait(5)
    running.append(pending.pop(0))  # "a" runs, "b" (refused) and "c" wait ahead of "new"
    board.started("a")
    clock.now += 4.0
    eta = board.view("new")["queue"]
    fallback = board.fallback_seconds()
    assert fallback == 10.0  # median of 10, 30 and 5
    assert eta["unestimated_ahead"] == 1 and eta["unestimated_seconds_each"] == fallback
    assert eta["expected_start_seconds"] == (10.0 - 4.0) + fallback + 30.0
    board.close()


def test_before_any_estimate_an_unestimated_prompt_counts_nothing_known(package):
    clock = FakeClock(1_000.0)
    board, (running, pending) = board_with(package, {"b": None, "new": None}, clock)
    for number, name in enumerate(("b", "new")):
        board.submitted({"prompt": {"name": name}, "prompt_id": name})
        pending.append([number, name, {"name": name}, {}, []])
        board._by_id[name].done.wait(5)
    assert board.fallback_seconds() == 0.0 and board.view("new") is None
    board.close()


def test_the_services_price_of_an_unestimated_job_is_the_nodes_too(package):
    """One definition: the service's answers carry what an unestimated job counts (its
    pipeline's recent median), and the node prices its unestimated prompts with it."""
    clock = FakeClock(1_000.0)
    board_module = importlib.import_module(f"{package.__name__}.estimate_board")
    queue: tuple[list, list] = ([], [])
    answers = {"a": {"predicted_time_seconds": 10.0,
                     "queue": {"unestimated_seconds_each": 25.0}}, "b": None}

    def ask(graph, previous=None):
        if answers[graph["name"]] is None:
            raise ValueError("the service refused it")
        return answers[graph["name"]]

    board = board_module.EstimateBoard(ask, lambda *args: None, lambda: queue, 5.0, clock)
    for number, name in enumerate(("b", "a")):
        board.submitted({"prompt": {"name": name}, "prompt_id": name})
        queue[1].append([number, name, {"name": name}, {}, []])
        board._by_id[name].done.wait(5)
    assert board.fallback_seconds() == 25.0
    eta = board.view("a")["queue"]
    assert eta["unestimated_ahead"] == 1 and eta["expected_start_seconds"] == 25.0
    board.close()
