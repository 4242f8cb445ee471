"""Load test of the service: ``estimate-time`` against a bare FastAPI app under the same uvicorn.

Both servers run as real uvicorn processes on loopback (random free ports) with the same
options; the perflib one serves a temporary SQLite database holding two simulated weeks, a
trained model and a few live jobs. Clients keep `concurrency` HTTP/1.1 keep-alive connections
busy for `seconds` each. The client is a few lines of asyncio streams rather than httpx, so the
load generator, which shares the machine, spends its CPU on the servers' behalf as little as
possible.

``python -m tools.loadtest`` prints the figures as JSON.

:func:`many_writers` is the other load: many processes on several simulated hosts tracking jobs
at once into one database, through the tracker and its background writer as a pipeline would
(``python -m tools.loadtest writers --database-url ...``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

ESTIMATE_PATH = "/api/anime/performance/estimate-time"
BARE_PATH = "/bare"
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
START_TIMEOUT_S = 60.0
WARMUP_S = 1.0
RESOLUTIONS = ("512x512", "768x768", "1024x1024", "768x1344", "1344x768", "1024x576")


def bench_service(seconds: float = 5.0, concurrency: int = 16,
                  distinct_bodies: int | None = 64, seed: int = 0) -> dict:
    """Requests/s of estimate-time and of a bare endpoint, their ratio, and estimate latency.

    Bodies are drawn from `distinct_bodies` realistic requests (None: every request differs,
    so no estimate is answered from the service's short-lived cache).
    """
    with tempfile.TemporaryDirectory(prefix="perflib-loadtest-") as folder, ExitStack() as stack:
        folder = Path(folder)
        database_url = f"sqlite:///{folder / 'perflib.db'}"
        _prepare_database(database_url)
        perflib_port = stack.enter_context(_server(
            ["-m", "perflib.serve", "--database-url", database_url], folder, "perflib"))
        bare_port = stack.enter_context(_server(["-m", "tools.loadtest", "bare"], folder,
                                                "bare"))
        bodies = request_bodies(distinct_bodies, seed)
        bare = _measure(bare_port, BARE_PATH, bodies, seconds, concurrency)
        estimate = _measure(perflib_port, ESTIMATE_PATH, bodies, seconds, concurrency)
    ratio = estimate["requests_per_second"] / bare["requests_per_second"]
    return {
        "seconds": seconds, "concurrency": concurrency, "distinct_bodies": distinct_bodies,
        "estimate_requests_per_second": estimate["requests_per_second"],
        "bare_requests_per_second": bare["requests_per_second"],
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO,
        "estimate_p50_ms": estimate["p50_ms"], "estimate_p99_ms": estimate["p99_ms"],
        "target_p99_ms": TARGET_P99_MS,
        "bare_p50_ms": bare["p50_ms"], "bare_p99_ms": bare["p99_ms"],
        "errors": estimate["errors"] + bare["errors"],
        "meets_targets": ratio >= TARGET_RATIO and estimate["p99_ms"] <= TARGET_P99_MS,
    }


def request_bodies(distinct: int | None, seed: int = 0) -> Iterator[bytes]:
    """An endless stream of estimate-time bodies: a repeating mix of `distinct` ones, or
    (None) a new one every time."""
    rng = random.Random(seed)

    def body() -> bytes:
        video = rng.random() < 0.35
        job = {"pipeline_type": "video" if video else "image",
               "resolution": rng.choice(RESOLUTIONS), "steps": rng.randint(20, 40),
               "job_type": rng.choice(("scene", "loop", "trailer") if video
                                      else ("character", "background", "keyframe")),
               "guidance_scale": rng.choice((1.0, 5.0, 7.5))}
        if video:
            job["frame_count"] = rng.randint(16, 120)
        else:
            job["batch_size"] = rng.randint(1, 4)
        return json.dumps(job).encode()

    if distinct is None:
        while True:
            yield body()
    mix = [body() for _ in range(distinct)]
    while True:
        yield mix[rng.randrange(len(mix))]


def _prepare_database(database_url: str) -> None:
    """Two simulated weeks on two GPUs, a trained linear model, and a few live jobs."""
    from perflib.prediction.predictor import PerformancePredictor
    from perflib.sim.simulate import generate_jobs
    from perflib.store import Store

    store = Store(database_url)
    store.write_jobs(list(generate_jobs(weeks=2, gpus=2, seed=0)))
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    now = datetime.now(timezone.utc)
    live = [{"job_id": f"live-{n}", "pipeline_type": "video" if n % 2 else "image",
             "status": "running" if n < 2 else "queued", "width": 768, "height": 768,
             "frame_count": 48 if n % 2 else 1, "steps": 25,
             "submitted_at": now - timedelta(seconds=60 - n),
             "started_at": now - timedelta(seconds=30) if n < 2 else None}
            for n in range(6)]
    store.write_jobs(live)


@contextmanager
def _server(arguments: Sequence[str], folder: Path, name: str) -> Iterator[int]:
    """A uvicorn process on a free loopback port, stopped on exit; yields the port."""
    port = free_port()
    log_path = folder / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *arguments, "--port", str(port)],
                                   cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, process, log_path)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(port: int, process: subprocess.Popen, log_path: Path,
                       timeout: float = START_TIMEOUT_S) -> None:
    """Block until the server answers /openapi.json; fail with its log if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1):
                return
        except OSError:  # not listening yet
            time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server on port {port} did not start:\n{tail}")


def _measure(port: int, path: str, bodies: Iterator[bytes], seconds: float,
             concurrency: int) -> dict:
    asyncio.run(_load(port, path, bodies, WARMUP_S, concurrency))
    latencies, errors, elapsed = asyncio.run(_load(port, path, bodies, seconds, concurrency))
    ms = np.array(latencies) * 1000
    return {"requests_per_second": round(len(ms) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "errors": errors}


async def _load(port: int, path: str, bodies: Iterator[bytes], seconds: float,
                concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                body = next(bodies)
                sent = time.perf_counter()
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - sent)
                errors += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines
                  if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


def bare_app():
    """The reference: one POST endpoint answering constant JSON."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post(BARE_PATH)
    async def bare() -> dict:
        return {"predicted_time_seconds": 1.0}

    return app


def many_writers(database_url: str, processes: int = 64, hosts: int = 8, seconds: float = 60.0,
                 jobs_per_second: float = 20.0, spool_dir: Path | None = None) -> dict:
    """`processes` forked processes, spread over `hosts` simulated hosts (the jobs' hostname),
    each tracking `jobs_per_second` jobs with a phase for `seconds` into one database; returns
    the rows expected and found, the records spooled (the database refused a batch) and the
    per-batch write latency (p50/p99 over every batch any process wrote, start-up excluded)."""
    import multiprocessing

    from perflib.store import Store

    store = Store(database_url)
    store.init_db()
    before = _count_load_rows(store)
    store.engine.dispose()  # no connection of ours crosses the forks
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    workers = [context.Process(target=_writer_process, daemon=True,
                               args=(database_url, n % hosts, n // hosts, n, seconds,
                                     jobs_per_second, spool_dir, results))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join(START_TIMEOUT_S)
    latencies = np.array([ms for report in reports for ms in report["batch_ms"]] or [np.nan])
    return {"processes": processes, "hosts": hosts, "seconds": seconds,
            "rows_expected": sum(report["tracked"] for report in reports),
            "rows_found": _count_load_rows(store) - before,
            "spooled": sum(report["spooled"] for report in reports),
            "batches": int(np.isfinite(latencies).sum()),
            "batch_p50_ms": round(float(np.nanpercentile(latencies, 50)), 1),
            "batch_p99_ms": round(float(np.nanpercentile(latencies, 99)), 1)}


def _writer_process(database_url: str, host: int, gpu: int, index: int, seconds: float,
                    jobs_per_second: float, spool_dir: Path | None, results) -> None:
    """One writer: tracks paced jobs until `seconds` pass, flushes, reports to `results`."""
    from perflib.config import Settings
    from perflib.store import Store, writer_for
    from perflib.tracking.tracker import track_generation_job

    class TimedStore(Store):
        def write_jobs(self, records, replace_live=False):
            started = time.perf_counter()
            try:
                return super().write_jobs(records, replace_live)
            finally:
                batch_ms.append((time.perf_counter() - started) * 1000)

    batch_ms: list[float] = []
    folder = Path(spool_dir or tempfile.mkdtemp(prefix="perflib-writers-")) / f"p{index}"
    store = TimedStore(database_url, Settings(spool_dir=folder, heartbeat_seconds=0))
    params = {"hostname": f"sim-host-{host:02d}", "width": 768, "height": 768, "steps": 25,
              "model_name": "sd15", "gpu_index": gpu}
    store.writable_engine()  # start-up (connecting, checking the schema) is not a batch's latency
    tracked, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        with track_generation_job(f"load-{index}-{tracked}", "image", params, db=store) as job:
            job.mark_processing_start()
            job.mark_phase("denoise")
            job.mark_success()
        tracked += 1
        time.sleep(1.0 / jobs_per_second)
    writer = writer_for(store)
    writer.flush(START_TIMEOUT_S)
    results.put({"tracked": tracked, "spooled": writer.spooled, "batch_ms": batch_ms})


def _count_load_rows(store) -> int:
    import sqlalchemy as sa

    from perflib.store.schema import generation_performance as jobs

    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(jobs.c.job_id.like("load-%"))
                            ).scalar_one()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=("bench", "bare", "writers"), default="bench",
                        help="bench (default): run the load test; bare: serve the reference app; "
                             "writers: many tracking processes into --database-url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--distinct-bodies", type=int, default=64,
                        help="size of the request mix; 0 makes every request different")
    parser.add_argument("--port", type=int, default=0, help="port of the bare app")
    parser.add_argument("--database-url", help="writers: the database written to")
    parser.add_argument("--processes", type=int, default=64, help="writers: processes")
    parser.add_argument("--hosts", type=int, default=8, help="writers: simulated hosts")
    args = parser.parse_args(argv)
    if args.mode == "writers":
        if not args.database_url:
            parser.error("writers: --database-url is required")
        print(json.dumps(many_writers(args.database_url, args.processes, args.hosts,
                                      args.seconds), indent=2))
        return 0
    if args.mode == "bare":
        import uvicorn

        from perflib.serve.server import UVICORN_OPTIONS

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)
        return 0
    result = bench_service(args.seconds, args.concurrency, args.distinct_bodies or None)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
