"""Weekly HTML reports through the service: rendered once and then served from disk, one render
per report however many ask, a bounded render queue, a service that stays responsive while
reports render, renders stopped when nobody waits or the service stops."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest
import uvicorn

from perflib.config import Settings
from perflib.serve import create_app
from perflib.serve.reports import (RETRY_AFTER_S, RenderFailed, ReportRenders,
                                   perflib_report_command)
from perflib.sim.simulate import generate_jobs
from perflib.store import Store
from tools.loadtest import free_port, wait_until_serving

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
REPORT = f"{API}/weekly-report"
END = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a report period's end
ESTIMATE = {"pipeline_type": "video", "resolution": "768x768", "frame_count": 60, "steps": 25,
            "job_type": "scene"}

# A stand-in for `perflib report`: starts a "kernel" in a session of its own (as jupyter_client
# does), logs "<pid> <kernel pid>", works for a while, stops its kernel, writes the report.
FAKE_RENDER = """
import pathlib, subprocess, sys, time
html, log, seconds = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                          start_new_session=True)
with open(log, "a") as out:
    out.write(f"{__import__('os').getpid()} {kernel.pid}\\n")
time.sleep(seconds)
kernel.kill()
kernel.wait()
html.write_text("<html><body>fake weekly report</body></html>")
"""


def fake_render(log: Path, seconds: float):
    """A render command whose children take `seconds` and log their process ids to `log`."""
    def command(job):
        return [sys.executable, "-c", FAKE_RENDER, str(job.html), str(log), str(seconds)]
    return command


def renders_started(log: Path) -> list[tuple[int, int]]:
    """(child pid, kernel pid) of every fake render started so far."""
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> str:
    """Two simulated weeks on two GPUs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'perflib.db'}"
    Store(url).write_jobs(list(generate_jobs(weeks=2, gpus=2, seed=0, jobs_per_day=60)))
    return url


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh working folder: the service keeps its reports under reports/served there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` under a real uvicorn on a free loopback port (clients can hang up on it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def get_reports(base: str, weeks: list[int], timeout: float = 60) -> list[httpx.Response]:
    """Concurrent HTML report requests, one per entry of `weeks` (its weeks_back)."""
    def get(weeks_back: int) -> httpx.Response:
        return httpx.get(f"{base}{REPORT}", params={"weeks_back": weeks_back, "format": "html"},
                         timeout=timeout)
    with ThreadPoolExecutor(len(weeks)) as pool:
        return list(pool.map(get, weeks))


# -- rendered once, served from disk -----------------------------------------------------------
def test_a_two_week_report_is_rendered_once_then_served_from_disk(history, project):
    """The real renderer through the route: the second request finds the file it wrote."""
    started = []

    def counted(job):
        started.append(job)
        return perflib_report_command(job)

    with TestClient(base_url="http://127.0.0.1", app=create_app(history, Settings(spool_dir=project / "spool"),
                               render_command=counted)) as client:
        first = client.get(REPORT, params={"weeks_back": 2, "format": "html"})
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("text/html")
        assert "Weekly performance report" in first.text
        second = client.get(REPORT, params={"weeks_back": 2, "format": "html"})
    assert second.status_code == 200 and second.text == first.text
    assert len(started) == 1
    served = list((project / "reports" / "served").glob("*.html"))
    assert [path.name for path in served] == [started[0].html.name]
    assert served[0].name.endswith("-2w.html")


def test_concurrent_requests_for_one_report_share_one_render(history, project):
    log = project / "renders.log"
    app = create_app(history, Settings(spool_dir=project / "spool"),
                     render_command=fake_render(log, 1.5))
    with serving(app) as base:
        answers = get_reports(base, [2] * 20)
        assert [a.status_code for a in answers] == [200] * 20
        assert all("fake weekly report" in a.text for a in answers)
        assert len(renders_started(log)) == 1
        assert get_reports(base, [1])[0].status_code == 200  # another period: its own render
        assert len(renders_started(log)) == 2


def test_beyond_the_render_queue_requests_are_refused_with_retry_after(history, project):
    log = project / "renders.log"
    app = create_app(history, Settings(spool_dir=project / "spool"),
                     render_command=fake_render(log, 1.5))
    app.state.services.reports.max_renders = 2  # one rendering, one waiting for the slot
    with serving(app) as base:
        answers = get_reports(base, [1, 2, 3])
        refused = [a for a in answers if a.status_code == 429]
        assert sorted(a.status_code for a in answers) == [200, 200, 429]
        assert "weekly reports are rendering" in refused[0].json()["detail"]
        assert refused[0].headers["retry-after"] == str(RETRY_AFTER_S)
        assert len(renders_started(log)) == 2
        # Once the queue has room again, the refused report renders.
        weeks_back = int(httpx.URL(str(refused[0].request.url)).params["weeks_back"])
        assert get_reports(base, [weeks_back])[0].status_code == 200


def test_health_and_estimates_answer_while_reports_render(history, project):
    log = project / "renders.log"
    app = create_app(history, Settings(spool_dir=project / "spool"),
                     render_command=fake_render(log, 6))
    with serving(app) as base, ThreadPoolExecutor(1) as background:
        waiting = background.submit(get_reports, base, [2] * 45)
        wait_for(lambda: renders_started(log), 30, "the render to start")
        time.sleep(0.5)  # every request has arrived and waits
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(5):
                start = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                assert client.post(f"{API}/estimate-time", json=ESTIMATE).status_code == 200
                assert time.perf_counter() - start < 2.0
        assert not waiting.done()  # the render was still running throughout
        assert [a.status_code for a in waiting.result()] == [200] * 45
    assert len(renders_started(log)) == 1


# -- stopping renders --------------------------------------------------------------------------
def test_a_render_is_cancelled_when_every_client_has_gone(history, project):
    log = project / "renders.log"
    app = create_app(history, Settings(spool_dir=project / "spool"),
                     render_command=fake_render(log, 60))
    with serving(app) as base, ThreadPoolExecutor(2) as clients:
        impatient = clients.submit(get_reports, base, [2], timeout=1)
        patient = clients.submit(get_reports, base, [2], timeout=10)
        with pytest.raises(httpx.ReadTimeout):
            impatient.result()
        # A loaded machine may take longer than the impatient client to start the render.
        wait_for(lambda: renders_started(log), 8, "the render to start")
        child, kernel = renders_started(log)[0]
        time.sleep(0.5)
        assert alive(child) and alive(kernel)  # someone still waits for it
        with pytest.raises(httpx.ReadTimeout):
            patient.result()
        wait_for(lambda: not alive(child) and not alive(kernel), 5, "the render to be killed")
        assert not (project / "reports" / "served").exists() or \
            not list((project / "reports" / "served").glob("*.html"))
        # The next request starts a render afresh.
        again = clients.submit(get_reports, base, [2], timeout=10)
        wait_for(lambda: len(renders_started(log)) == 2, 9, "a second render to start")
        with pytest.raises(httpx.ReadTimeout):
            again.result()


def test_a_render_past_its_timeout_is_killed(tmp_path):
    log = tmp_path / "renders.log"
    renders = ReportRenders(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", fake_render(log, 60),
                            timeout_s=4)  # time for a loaded machine to start the render
    job = renders.job(1, END)
    with pytest.raises(RenderFailed, match="took over 4 s"):
        asyncio.run(renders.html(job))
    child, kernel = renders_started(log)[0]
    wait_for(lambda: not alive(child) and not alive(kernel), 5, "the render to be killed")


def test_closing_kills_the_renders_still_running(tmp_path):
    """What the service does last when it stops, waiting requests or not."""
    log = tmp_path / "renders.log"
    renders = ReportRenders(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", fake_render(log, 60))

    async def render_then_close():
        waiting = asyncio.ensure_future(renders.html(renders.job(1, END)))
        while not renders_started(log):
            await asyncio.sleep(0.05)
        await renders.close()
        child, kernel = renders_started(log)[0]
        assert not alive(child)  # killed and reaped before close returns
        await asyncio.sleep(0)
        assert waiting.cancelled()
        return kernel

    kernel = asyncio.run(render_then_close())
    wait_for(lambda: not alive(kernel), 5, "the kernel to be killed")


FAILING_RENDER = ("import os, sys; print('starting', file=sys.stderr); "
                  "sys.exit('error: cannot reach ' + os.environ['PERFLIB_DATABASE_URL'])")


def test_a_failed_render_says_why_without_the_password(tmp_path):
    renders = ReportRenders(tmp_path, "postgresql://perflib:hunter2@127.0.0.1:9/perflib",
                            lambda job: [sys.executable, "-c", FAILING_RENDER])
    job = renders.job(3, END)
    with pytest.raises(RenderFailed) as failed:
        asyncio.run(renders.html(job))
    message = str(failed.value)
    assert "exit 1" in message and "cannot reach postgresql://perflib:***@127.0.0.1" in message
    assert "hunter2" not in message


def test_a_failed_render_is_a_500_naming_the_reason(history, project):
    app = create_app(history, Settings(spool_dir=project / "spool"),
                     render_command=lambda job: [sys.executable, "-c", FAILING_RENDER])
    with TestClient(base_url="http://127.0.0.1", app=app) as client:
        answer = client.get(REPORT, params={"format": "html"})
    assert answer.status_code == 500
    assert "could not be rendered" in answer.json()["detail"]
    assert "cannot reach sqlite" in answer.json()["detail"]


def test_sigterm_stops_the_service_and_its_render_within_seconds(history, project):
    """``perflib serve`` as a real process, rendering the real report, told to stop."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    log_path = project / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "perflib.cli", "--database-url", history, "serve", "--port",
             str(port)], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, server, log_path)
        base = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(1) as client:
            client.submit(get_reports, base, [2], 120)
            family = psutil.Process(server.pid)
            # papermill and its kernel are both running
            wait_for(lambda: len(family.children(recursive=True)) >= 2, 60, "the render")
            renderers = family.children(recursive=True)
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            took = time.monotonic() - stopping
    finally:
        server.kill()
    assert took < 6, f"took {took:.1f} s to stop\n{log_path.read_text()}"
    wait_for(lambda: not any(alive(p.pid) for p in renderers), 5, "the render to be killed")
    assert "Application shutdown complete" in log_path.read_text()
