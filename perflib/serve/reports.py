"""Weekly HTML reports for the service: each rendered once, by a child process, away from the
event loop, so estimates and health checks stay quick while a report renders.

- A report's file is named by :func:`perflib.report.render.report_stem`, as the renderer names it,
  so a report rendered once is served from disk from then on.
- Requests for a report that is being rendered wait on that render (single flight). At most
  ``max_renders`` reports are rendering or waiting for one of ``slots``; a request that would
  start one more is refused with :class:`RendersBusy` (the route answers 429, Retry-After).
- A render is ``perflib report`` in a child process, killed together with its notebook kernel
  (which runs in a session of its own) when every request waiting on it has gone, when it runs
  past ``timeout_s``, and when the service stops.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Sequence, TypeVar

import psutil
from sqlalchemy.engine import make_url
from starlette.requests import Request

from perflib.config import environment_for_child
from perflib.report.render import report_stem

MAX_RENDERS = 4  # reports rendering or waiting for a slot, at most
RENDER_SLOTS = 1  # reports rendering at once (each keeps a core busy for 10-20 s)
RENDER_TIMEOUT_S = 600.0
RETRY_AFTER_S = 30
# A report shows recorded names: its page may run no script (inline or fetched), load nothing
# but its own inline styles and data: images, and be framed by no other page.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                               "script-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

T = TypeVar("T")


@dataclass(frozen=True)
class ReportJob:
    """One report to render: its period and the file the render writes."""

    weeks_back: int
    end: datetime
    html: Path


RenderCommand = Callable[[ReportJob], Sequence[str]]


def perflib_report_command(job: ReportJob) -> list[str]:
    """``perflib report`` for the job's period, into the job's folder."""
    return [sys.executable, "-m", "perflib.cli", "report", "--weeks-back", str(job.weeks_back),
            "--end-date", job.end.isoformat(), "--output-dir", str(job.html.parent)]


class RendersBusy(RuntimeError):
    """As many reports as allowed are rendering or waiting to."""


class RenderFailed(RuntimeError):
    """The render child failed, ran too long, or wrote no report."""


@dataclass
class _Render:
    task: asyncio.Task
    waiting: int = 0


class ReportRenders:
    """Renders weekly reports into `folder` with `command`, one child per report."""

    def __init__(self, folder: Path, database_url: str,
                 command: RenderCommand = perflib_report_command, max_renders: int = MAX_RENDERS,
                 slots: int = RENDER_SLOTS, timeout_s: float = RENDER_TIMEOUT_S):
        self.folder = folder
        self.database_url = database_url
        self.command = command
        self.max_renders = max_renders
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(slots)
        self._renders: dict[Path, _Render] = {}  # by file, while someone waits for it
        self._running: set[asyncio.Task] = set()  # every render not finished, waited for or not

    def job(self, weeks_back: int, end: datetime) -> ReportJob:
        """The report of the `weeks_back` weeks up to `end`, named as the renderer names it."""
        return ReportJob(weeks_back, end, self.folder / f"{report_stem(end, weeks_back)}.html")

    async def html(self, job: ReportJob) -> Path:
        """The job's report file, rendered first unless it is on disk; joins a render of the
        same report already under way. Leaving (being cancelled) as its last waiter stops it."""
        render = self._renders.get(job.html)
        if render is None:
            if job.html.is_file():
                return job.html
            if len(self._renders) >= self.max_renders:
                raise RendersBusy(f"{len(self._renders)} weekly reports are rendering or waiting "
                                  f"to, the most allowed; retry in {RETRY_AFTER_S} s")
            render = _Render(asyncio.ensure_future(self._render(job)))
            render.task.add_done_callback(lambda _: self._forget(job.html, render))
            render.task.add_done_callback(self._running.discard)
            self._renders[job.html] = render
            self._running.add(render.task)
        render.waiting += 1
        try:
            return await asyncio.shield(render.task)
        finally:
            render.waiting -= 1
            if render.waiting == 0 and not render.task.done():
                self._forget(job.html, render)  # a new request starts afresh
                render.task.cancel()

    async def close(self) -> None:
        """Stop every render and wait until its child is killed (the service is stopping)."""
        self._renders.clear()
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, html: Path, render: _Render) -> None:
        if self._renders.get(html) is render:
            del self._renders[html]

    async def _render(self, job: ReportJob) -> Path:
        async with self._slots:
            job.html.parent.mkdir(parents=True, exist_ok=True)
            try:
                child = await asyncio.create_subprocess_exec(
                    *self.command(job), env=environment_for_child(self.database_url),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE)
            except OSError as exc:
                raise RenderFailed(f"cannot start the report renderer: {exc}") from None
            try:
                _, stderr = await asyncio.wait_for(child.communicate(), self.timeout_s)
            except asyncio.TimeoutError:
                raise RenderFailed(f"the weekly report took over {self.timeout_s:g} s to "
                                   "render and was stopped") from None
            finally:
                await _stop(child)
        if child.returncode != 0 or not job.html.is_file():
            raise RenderFailed(f"the weekly report could not be rendered (exit "
                               f"{child.returncode}): {self._last_line(stderr)}")
        return job.html

    def _last_line(self, stderr: bytes) -> str:
        """The child's last words, without the database password."""
        lines = stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        password = make_url(self.database_url).password
        return lines[-1][:500].replace(password, "***") if password else lines[-1][:500]


async def _stop(child: asyncio.subprocess.Process) -> None:
    """Kill a child still running, with everything it started (the notebook kernel), and reap
    it."""
    if child.returncode is None:
        try:
            parent = psutil.Process(child.pid)
            family = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    await child.wait()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None once the client has disconnected (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return None if task.cancelled() else task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
