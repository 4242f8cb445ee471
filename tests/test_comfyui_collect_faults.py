"""The ComfyUI collector against servers that misbehave: malformed or inconsistent history
entries (each skipped alone, logged once), servers that drip bytes (a total deadline per request,
each server in its own thread), oversized answers, redirects."""
from __future__ import annotations

import copy
import logging
import random
import threading
import time

import pytest

from perflib.comfyui.collect import Collector, ServerPoller, job_id
from tests.comfyui_server import DrippingServer, FakeComfyUI


def _timestamp(event: str, value):
    def change(entry):
        for name, data in entry["status"]["messages"]:
            if name == event:
                data["timestamp"] = value
    return change


def _late_create_time(entry):
    start = entry["status"]["messages"][0][1]["timestamp"]
    entry["prompt"][3]["create_time"] = start + 10_000


def _set(path: tuple, value):
    def change(entry):
        target = entry
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


BAD_ENTRIES = {  # what is done to one entry of a page, and the reason logged for it
    "NaN timestamp": (_timestamp("execution_success", float("nan")), "not a time between"),
    "1e300 timestamp": (_timestamp("execution_start", 1e300), "not a time between"),
    "short prompt list": (lambda e: e["prompt"].__delitem__(slice(3, None)),
                          "'prompt' is not a list"),
    "string prompt": (_set(("prompt",), "a prompt"), "'prompt' is not a list"),
    "extra_data not an object": (_set(("prompt", 3), ["create_time"]),
                                 "extra_data is not a JSON object"),
    "message without payload": (lambda e: e["status"]["messages"][0].pop(),
                                "not [event name, payload object]"),
    "create_time after execution_start": (_late_create_time,
                                          "create_time is after execution_start"),
    "text timestamp": (_timestamp("execution_start", "1795996491190"), "is not a number"),
    "prompt id not text": (_set(("prompt", 1), None), "prompt id None is not text"),
    "end before start": (_timestamp("execution_success", 1_000_000_000_000),
                         "is before execution_start"),
}


@pytest.mark.parametrize("fault", BAD_ENTRIES)
def test_a_bad_entry_is_skipped_alone_logged_once_and_its_page_stored(fault, sd15,
                                                                      sqlite_store, caplog):
    change, reason = BAD_ENTRIES[fault]
    history = copy.deepcopy(dict(list(sd15.history.items())[:5]))
    bad = list(history)[1]
    change(history[bad])
    caplog.set_level(logging.WARNING, "perflib.comfyui.collect")
    with FakeComfyUI(sd15) as fake:
        fake.history = history
        poller = ServerPoller(fake.url, sqlite_store, page=2)  # the bad entry's page: 2 entries
        assert poller.poll() == 4
        assert ServerPoller(fake.url, sqlite_store, page=2).poll() == 0  # a restart
        assert poller.poll() == 0
    stored = set(sqlite_store.jobs_frame().job_id)
    assert stored == {job_id(p) for p in history if p != bad}
    warnings = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert len(warnings) == 1  # once, not at every poll
    assert bad in warnings[0] and reason in warnings[0]


def test_two_history_keys_with_one_prompt_id_store_the_true_one(sd15, sqlite_store, caplog):
    history = copy.deepcopy(dict(list(sd15.history.items())[:3]))
    first = next(iter(history))
    history["not-" + first] = copy.deepcopy(history[first])
    history["not-" + first]["status"]["messages"][-1][1]["timestamp"] += 60_000
    caplog.set_level(logging.WARNING, "perflib.comfyui.collect")
    with FakeComfyUI(sd15) as fake:
        fake.history = history
        assert Collector([fake.url], sqlite_store).poll_once() == 3
    jobs = sqlite_store.jobs_frame().set_index("job_id")
    assert sorted(jobs.index) == sorted(job_id(p) for p in list(history)[:3])
    assert jobs.loc[job_id(first)].processing_seconds < 60
    assert any(f"'not-{first}'" in r.getMessage() and "is not its history key" in r.getMessage()
               for r in caplog.records)


def test_a_redirect_is_never_followed(sd15, sqlite_store):
    with FakeComfyUI(sd15) as elsewhere, FakeComfyUI(sd15) as redirecting:
        redirecting.redirect_to = elsewhere.url
        collector = Collector([redirecting.url], sqlite_store)
        assert collector.poll_once() == 0
        assert elsewhere.requests == []
    status = collector.statuses()[0]
    assert not status.up and "redirects are not followed" in status.last_error
    assert sqlite_store.count() == 0


def _poll_in_thread(collector: Collector) -> threading.Thread:
    thread = threading.Thread(target=collector.poll_once, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_times_out_whole_and_the_others_are_stored(in_headers, sd15,
                                                                     sqlite_store):
    """A byte every 0.5 s never trips a per-read timeout of 2 s; the total deadline does."""
    with DrippingServer(in_headers) as drip, FakeComfyUI(sd15) as fake:
        fake.history = dict(list(sd15.history.items())[:3])
        collector = Collector([drip.url, fake.url], sqlite_store, timeout=2)
        began = time.monotonic()
        polling = _poll_in_thread(collector)
        polling.join(15)
        hung = polling.is_alive()
    assert not hung and time.monotonic() - began < 15
    statuses = {s.url: s for s in collector.statuses()}
    assert "no whole answer within 2 s" in statuses[drip.url].last_error
    assert statuses[fake.url].up and sqlite_store.count() == 3


def test_a_slow_server_never_delays_the_others_polls(sd15, sqlite_store):
    with DrippingServer() as drip, FakeComfyUI(sd15) as fake:
        fake.history = dict(list(sd15.history.items())[:3])
        collector = Collector([drip.url, fake.url], sqlite_store, interval=0.2, timeout=8)
        stop = threading.Event()
        running = threading.Thread(target=collector.run, args=(stop,), daemon=True)
        running.start()
        deadline = time.monotonic() + 6  # within the slow server's first request
        while time.monotonic() < deadline and fake.requests.count("/queue") < 3:
            time.sleep(0.05)
        polls = fake.requests.count("/queue")
        stop.set()
    running.join(15)
    assert polls >= 3 and sqlite_store.count() == 3
    assert not running.is_alive()


def test_an_answer_over_the_size_cap_is_refused(sd15, sqlite_store):
    with FakeComfyUI(sd15) as fake:
        poller = ServerPoller(fake.url, sqlite_store, max_bytes=50_000)
        with pytest.raises(Exception, match="answer over 50000 bytes"):
            poller.poll()  # a page of 64 entries is about 270 KB
        assert ServerPoller(fake.url, sqlite_store, page=4, max_bytes=50_000).poll() == 137


def test_queue_depths_are_exact_and_linear():
    from perflib.comfyui.history import queue_depths

    rng = random.Random(7)
    spans = []
    for n in range(300):
        created = rng.randrange(0, 2000)
        spans.append((f"p{n}", created, created + rng.choice([0, 0, 1, 5, 50, 400])))
    brute = {p: sum(1 for q, c2, e2 in spans if q != p and c2 < c < e2) for p, c, _ in spans}
    assert queue_depths(spans) == brute
    many = [(f"p{n}", n * 10, n * 10 + 5_000) for n in range(200_000)]
    began = time.monotonic()
    depths = queue_depths(many)
    assert time.monotonic() - began < 10  # quadratic: 4·10¹⁰ comparisons, hours
    assert depths["p100000"] == 499
