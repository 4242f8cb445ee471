"""Benchmarks: each figure is a ratio against a reference measured in the same process and run.

``python -m tools.bench [--only NAME ...]`` prints the figures and merges them into
``reports/benchmarks.json``. Every benchmark is a function ``bench_<name>() -> dict``.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from perflib.config import Settings
from perflib.store import Store, flush_all, schema
from perflib.store.partitions import DUPLICATE_WINDOW
from perflib.store.writer import MAX_BATCH
from perflib.prediction.work_terms import stored_terms
from perflib.tracking.tracker import configure, track_generation_job

REPORT_PATH = Path("reports") / "benchmarks.json"
BENCHMARKS: dict[str, Callable[[], dict]] = {}


def benchmark(function: Callable[[], dict]) -> Callable[[], dict]:
    BENCHMARKS[function.__name__.removeprefix("bench_")] = function
    return function


def _median_seconds(run_once: Callable[[], None], repeats: int) -> float:
    timings = []
    clock = time.perf_counter
    for _ in range(repeats):
        start = clock()
        run_once()
        timings.append(clock() - start)
    return statistics.median(timings)


@benchmark
def bench_tracker() -> dict:
    """Per-job overhead of a tracked job with two phases (sampler and writer running) against
    prometheus_client's ``Histogram.labels(...).time()``."""
    from prometheus_client import CollectorRegistry, Histogram

    histogram = Histogram("bench_seconds", "reference", ["pipeline"],
                          registry=CollectorRegistry())
    folder = Path(tempfile.mkdtemp(prefix="perflib-bench-"))
    configure(f"sqlite:///{folder / 'bench.db'}", Settings(spool_dir=folder / "spool"))
    params = {"resolution": "768x768", "steps": 25, "frame_count": 16}
    counter = iter(range(10**9))

    def tracked_job():
        with track_generation_job(f"bench-{next(counter)}", "video", params) as job:
            job.mark_phase("denoise")
            job.mark_phase("decode")

    def prometheus_timer():
        with histogram.labels("video").time():
            pass

    for _ in range(2000):  # warm up: engine, schema, sampler thread, writer thread
        tracked_job()
        prometheus_timer()
    flush_all()
    tracker_s, reference_s = [], []
    for _ in range(5):  # interleaved rounds, so both see the same machine
        tracker_s.append(_median_seconds(tracked_job, 4000))
        reference_s.append(_median_seconds(prometheus_timer, 4000))
        flush_all()
    tracker, reference = statistics.median(tracker_s), statistics.median(reference_s)
    return {"tracker_job_overhead_us": tracker * 1e6,
            "prometheus_histogram_time_us": reference * 1e6,
            "ratio_to_prometheus": tracker / reference, "target_ratio_max": 10.0}


def _ingest_rows(count: int) -> list[dict]:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return [{"job_id": f"ingest-{n}", "pipeline_type": "video" if n % 3 else "image",
             "job_type": "scene", "status": "success", "width": 768, "height": 768,
             "frame_count": 16, "steps": 25, "guidance_scale": 7.5, "batch_size": 1,
             "sampler": "euler", "model_name": "sd15", "gpu_name": "rtx4090",
             "started_at": start + timedelta(seconds=n),
             "finished_at": start + timedelta(seconds=n + 12),
             "queue_seconds": 0.5, "processing_seconds": 11.5, "total_seconds": 12.0}
            for n in range(count)]


def _raw_sqlite_insert(path: Path, rows: list[dict]) -> float:
    """The reference: plain sqlite3 executemany of the same rows into the same table, in one
    transaction (the schema is made before the clock starts)."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex, CreateTable

    table = schema.generation_performance
    dialect = sqlite_dialect.dialect()
    columns = list(rows[0])
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(str(CreateTable(table).compile(dialect=dialect)))
    for index in table.indexes:
        connection.execute(str(CreateIndex(index).compile(dialect=dialect)))
    sql = (f"INSERT OR IGNORE INTO generation_performance ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    start = time.perf_counter()
    values = [tuple(v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row.values())
              for row in rows]
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(sql, values)
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def _raw_postgres_copy(url: str, rows: list[dict]) -> float:
    """The reference: one psycopg ``COPY`` of the same rows into the same (day-partitioned)
    table, in one transaction (the tables and the rows' days made before the clock starts)."""
    import psycopg

    store = _with_days_of(Store(url), rows)
    table = f'"{store.config.db_schema}".generation_performance'
    dsn = store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        start = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(
                f"COPY {table} ({', '.join(rows[0])}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row.values()))
        connection.commit()
        elapsed = time.perf_counter() - start
    store.engine.dispose()
    return elapsed


def _raw_postgres_same_job(url: str, rows: list[dict], batch: int = MAX_BATCH) -> float:
    """The reference doing the store's job on the day-partitioned tables with psycopg alone,
    batch for batch: one query for which of the batch's jobs are stored already (started
    within ``DUPLICATE_WINDOW`` of them, or never), one COPY of the others, a commit."""
    import psycopg

    store = _with_days_of(Store(url), rows)
    table = f'"{store.config.db_schema}".generation_performance'
    dsn = store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    lookup = (f"SELECT DISTINCT job_id FROM {table} WHERE job_id = ANY(%b::text[]) AND "
              f"(started_at IS NULL OR (started_at >= %s AND started_at < %s))")
    with psycopg.connect(dsn) as connection:
        start = time.perf_counter()
        for offset in range(0, len(rows), batch):
            chunk = rows[offset:offset + batch]
            starts = [row["started_at"] for row in chunk]
            with connection.cursor() as cursor:
                cursor.execute(lookup, ([row["job_id"] for row in chunk],
                                        min(starts) - DUPLICATE_WINDOW,
                                        max(starts) + DUPLICATE_WINDOW), prepare=False)
                found = {job for (job,) in cursor}
                with cursor.copy(f"COPY {table} ({', '.join(rows[0])}) FROM STDIN") as copy:
                    for row in chunk:
                        if row["job_id"] not in found:
                            copy.write_row(tuple(row.values()))
            connection.commit()
        elapsed = time.perf_counter() - start
    store.engine.dispose()
    return elapsed


def _with_days_of(store: Store, rows: list[dict]) -> Store:
    """`store` with its schema and the day partitions of `rows` made, as ``perflib maintain``
    makes them ahead of the writes (the same for the store and the raw reference)."""
    from perflib.store import partitions

    store.init_db()
    partitions.ensure_partitions(store.engine, partitions.record_days(rows))
    return store


def _store_insert(store: Store, rows: list[dict], batch: int = MAX_BATCH) -> float:
    """Seconds the store takes to write `rows` in batches of the background writer's size
    (each batch its own transaction, as the writer thread does)."""
    store.init_db()
    start = time.perf_counter()
    for offset in range(0, len(rows), batch):
        store.write_jobs(rows[offset:offset + batch])
    elapsed = time.perf_counter() - start
    store.engine.dispose()
    return elapsed


def _interleaved(runs: list[Callable[[int], float]], rounds: int) -> list[list[float]]:
    """Seconds of `rounds` runs of each, taken in turn (the order reverses every round), so a
    busy moment of a shared machine falls on all of them."""
    timings: list[list[float]] = [[] for _ in runs]
    for n in range(rounds):
        order = list(range(len(runs)))
        for index in order if n % 2 == 0 else reversed(order):
            timings[index].append(runs[index](n))
    return timings


def _ratio_figures(prefix: str, reference: str, rows: int, store_s: list[float],
                   raw_s: list[float]) -> dict:
    """Rows/s of both and the ratio raw seconds / store seconds (1.0: as fast as the raw
    driver; higher is better) of the medians, of the bests, and the spread of each round's."""
    paired = sorted(raw / store for raw, store in zip(raw_s, store_s))
    store, raw = statistics.median(store_s), statistics.median(raw_s)
    return {f"{prefix}_rows_per_s": rows / store, f"{reference}_rows_per_s": rows / raw,
            f"{prefix}_ratio_to_{reference}": raw / store,
            f"{prefix}_ratio_to_{reference}_best": min(raw_s) / min(store_s),
            f"{prefix}_ratio_to_{reference}_rounds_min": paired[0],
            f"{prefix}_ratio_to_{reference}_rounds_max": paired[-1],
            f"{prefix}_rounds": len(paired)}


@benchmark
def bench_ingestion(rows: int = 50_000, rounds: int = 7) -> dict:
    """Rows/s through the store against the raw driver writing the same rows (with their cost
    terms, which the store computes and the references are given) into the same schema, in
    interleaved rounds; the store writes batches of the background writer's size, each its
    own transaction. Ratios are raw seconds / store seconds (1.0: as fast as the raw driver),
    medians over the rounds.

    SQLite: raw sqlite3 ``INSERT OR IGNORE`` executemany in one transaction, the same job (the
    unique job_id skips a stored job on both sides). PostgreSQL's day-partitioned tables (days
    made ahead, as maintain does): a raw psycopg COPY in one transaction, which does less than
    the store, since no index can keep job_id unique across partitions and the store looks up
    which jobs are stored already; so also a raw psycopg writer doing the store's job, batch
    for batch (the same lookup, the COPY of the new rows, a commit per batch), which measures
    what the store itself costs."""
    data = _ingest_rows(rows)
    stored = _as_stored(data)
    folder = Path(tempfile.mkdtemp(prefix="perflib-bench-"))
    store_s, raw_s = _interleaved(
        [lambda n: _store_insert(Store(f"sqlite:///{folder / f'store{n}.db'}"), data),
         lambda n: _raw_sqlite_insert(folder / f"raw{n}.db", stored)], rounds)
    result = {"rows": rows, "target_ratio_min": 0.9,
              **_ratio_figures("store_sqlite", "raw_sqlite3", rows, store_s, raw_s)}
    result.update(_postgres_ingestion(data, stored, rounds))
    return result


def _as_stored(rows: list[dict]) -> list[dict]:
    """The rows as the store keeps them: with their derived cost terms, which the raw
    references insert as given (computed here, before any clock) and the store computes."""
    return [{**row, **terms} for row, terms in zip(rows, stored_terms(rows))]


def _postgres_ingestion(data: list[dict], stored: list[dict], rounds: int) -> dict:
    from tools.pgserver import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        return {"postgres_note": "no PostgreSQL binaries found"}
    server = PostgresServer(bindir).start()
    try:
        store_s, copy_s, same_job_s = _interleaved(
            [lambda n: _store_insert(_with_days_of(Store(server.create_database(f"store{n}")),
                                                   data), data),
             lambda n: _raw_postgres_copy(server.create_database(f"raw{n}"), stored),
             lambda n: _raw_postgres_same_job(server.create_database(f"same{n}"), stored)],
            rounds)
    finally:
        server.stop()
    return {**_ratio_figures("store_postgres", "raw_psycopg_copy", len(data), store_s, copy_s),
            **_ratio_figures("store_postgres", "raw_psycopg_same_job", len(data), store_s,
                             same_job_s)}


@benchmark
def bench_sampler(samples: int = 200) -> dict:
    """CPU time the sampler uses per second of wall time at the default interval: the CPU time
    of one reading (measured on its own thread) divided by the interval between readings."""
    from perflib.tracking.sampler import ResourceSampler

    interval = Settings().sample_interval
    sampler = ResourceSampler(interval=interval).start()
    sampler.stop()  # readings below are taken on a thread of our own, to time them exactly
    cpu_per_sample: list[float] = []

    def take_readings():
        for _ in range(samples):
            start = time.thread_time()
            sampler.sample_once()
            cpu_per_sample.append(time.thread_time() - start)

    thread = threading.Thread(target=take_readings)
    thread.start()
    thread.join()
    per_sample = statistics.mean(cpu_per_sample)
    return {"interval_s": interval, "cpu_ms_per_reading": per_sample * 1e3,
            "cpu_share_of_one_core": per_sample / interval, "target_share_max": 0.01}


@benchmark
def bench_predictor(jobs: int = 50_000) -> dict:
    """Training all four families on `jobs` simulated jobs; single estimates in-process (median
    and p99) with the chosen family and with each family in turn; a batch estimate of 10,000
    rows. Reference: one bare scikit-learn LinearRegression prediction, timed in the same run."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from perflib.prediction.models import FAMILIES
    from perflib.prediction.predictor import PerformancePredictor
    from perflib.sim.simulate import generate_jobs

    folder = Path(tempfile.mkdtemp(prefix="perflib-bench-"))
    store = Store(f"sqlite:///{folder / 'predictor.db'}", Settings(spool_dir=folder / "spool"))
    records = list(generate_jobs(weeks=52, gpus=4, seed=1, jobs_per_day=jobs / 364))[:jobs]
    for offset in range(0, len(records), 5000):
        store.write_jobs(records[offset:offset + 5000])
    predictor = PerformancePredictor(store)
    start = time.perf_counter()
    result = predictor.train_model(None, "auto")
    train_s = time.perf_counter() - start
    predictor.save_model_to_db(None, result["model_type"])

    request = {"pipeline_type": "video", "resolution": "768x768", "frame_count": 48,
               "steps": 25, "job_type": "scene", "model_name": records[-1]["model_name"],
               "gpu_name": records[-1]["gpu_name"]}
    latencies = _estimate_latencies(predictor, request)
    reference = LinearRegression().fit(np.arange(10.0).reshape(-1, 1), np.arange(10.0))
    bare = _median_seconds(lambda: reference.predict(np.ones((1, 1))), 300)
    batch = pd.DataFrame(records[-10_000:])
    start = time.perf_counter()
    predictor.estimate_batch(batch[batch.pipeline_type == "video"], "video")
    predictor.estimate_batch(batch[batch.pipeline_type == "image"], "image")
    batch_s = time.perf_counter() - start
    by_family = {}
    for family in FAMILIES:  # each family in turn as the active model
        if family != result["model_type"]:
            predictor.train_model(None, family)
        predictor.save_model_to_db(None, family)
        family_latencies = _estimate_latencies(PerformancePredictor(store), request)
        by_family[f"estimate_median_ms_{family}"] = statistics.median(family_latencies) * 1e3
        by_family[f"estimate_p99_ms_{family}"] = float(np.quantile(family_latencies, 0.99)) * 1e3
    return {"jobs": len(records), "chosen_family": result["model_type"],
            "train_all_families_s": train_s, "train_target_s": 60.0,
            "accuracy_within_20_percent": result["accuracy_within_20_percent"],
            "estimate_median_ms": statistics.median(latencies) * 1e3,
            "estimate_p99_ms": float(np.quantile(latencies, 0.99)) * 1e3,
            "estimate_target_median_ms": 2.0,
            "bare_sklearn_predict_ms": bare * 1e3,
            "ratio_estimate_to_bare_predict": statistics.median(latencies) / bare,
            **by_family,
            "batch_10k_estimate_s": batch_s}


def _estimate_latencies(predictor, request: dict, repeats: int = 300) -> list[float]:
    """Seconds per single in-process estimate (after one warm-up that loads the model)."""
    predictor.estimate(request)
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        predictor.estimate(request)
        latencies.append(time.perf_counter() - began)
    return latencies


@benchmark
def bench_service() -> dict:
    """estimate-time through uvicorn with 16 concurrent loopback clients, as a ratio to a bare
    endpoint under the same server configuration (see :mod:`tools.loadtest`): with a
    realistic mix of 64 repeating requests, and with every request different."""
    from tools.loadtest import bench_service as load

    repeating = load(distinct_bodies=64)
    distinct = load(distinct_bodies=None)
    return {**{f"repeating_{k}": v for k, v in repeating.items()},
            **{f"all_distinct_{k}": v for k, v in distinct.items()}}


def _busy_farm(store: Store, gpus: int, queued: int, now: datetime) -> None:
    """Two simulated weeks on `gpus` GPUs (4 per host) with their daily aggregates, a job
    running on four GPUs in five, `queued` jobs waiting (half without an estimate, priced by
    the service), a heartbeat from every GPU and a dozen alerts."""
    from perflib.analysis import PerformanceAnalyzer
    from perflib.analysis.alerts import SEVERITIES
    from perflib.ops.alerts import save_alerts
    from perflib.record import job_record
    from perflib.sim.simulate import GPU_KINDS, generate_jobs
    from perflib.store.heartbeats import write_heartbeats

    store.write_jobs(list(generate_jobs(weeks=2, gpus=gpus, seed=0, end=now - timedelta(hours=1),
                                        jobs_per_day=2000, gpus_per_host=4)))
    PerformanceAnalyzer(store).aggregate_daily(days_back=None)
    where = [(f"render-{g // 4 + 1:02d}", g % 4, GPU_KINDS[g % len(GPU_KINDS)].name)
             for g in range(gpus)]
    live = [{"job_id": f"running-{g}", "pipeline_type": "video", "status": "running",
             "resolution": "768x768", "frame_count": 48, "steps": 25, "hostname": host,
             "gpu_index": index, "gpu_name": name, "predicted_seconds": 300.0,
             "started_at": now - timedelta(seconds=7 * g)}
            for g, (host, index, name) in enumerate(where) if g % 5]
    live += [{"job_id": f"queued-{n}", "pipeline_type": ("image", "video")[n % 2],
              "status": "queued", "resolution": "1024x1024", "frame_count": 1 + 47 * (n % 2),
              "steps": 30, "submitted_at": now - timedelta(seconds=queued - n),
              **({"predicted_seconds": 60.0 + n} if n % 2 else {})} for n in range(queued)]
    store.write_jobs([job_record(job) for job in live], replace_live=True)
    write_heartbeats(store, [{"hostname": host, "gpu_index": index, "gpu_name": name,
                              "gpu_util_pct": 90.0, "vram_used_mb": 20_000.0,
                              "vram_total_mb": 24_564.0, "power_w": 400.0,
                              "temperature_c": 70.0, "cpu_pct": 20.0, "ram_used_mb": 40_000.0,
                              "ram_total_mb": 128_000.0} for host, index, name in where], now)
    save_alerts(store, [{"alert_type": "queue_backlog", "pipeline_type": "video",
                         "severity": SEVERITIES[n % 4], "message": f"alert {n}",
                         "evidence": {"n": n}, "fingerprint": f"bench|{n}"}
                        for n in range(12)], now)


@benchmark
def bench_dashboard(gpus: int = 50, queued: int = 500) -> dict:
    """The live dashboard's payload (``GET dashboard/live``) for `gpus` GPUs and `queued` jobs
    waiting, through uvicorn on loopback, polled as a wall screen does; median and p95 ms, as a
    ratio to ``/healthz`` (a plain ``SELECT 1``) in the same server."""
    import httpx

    from tools.screenshots import serving
    from perflib.serve import create_app

    folder = Path(tempfile.mkdtemp(prefix="perflib-bench-"))
    settings = Settings(spool_dir=folder / "spool", heartbeat_seconds=0)
    store = Store(f"sqlite:///{folder / 'farm.db'}", settings)
    _busy_farm(store, gpus, queued, datetime.now(timezone.utc))
    dashboard_ms, healthz_ms = [], []
    with serving(create_app(store, settings)) as url, httpx.Client(base_url=url) as client:
        payload = client.get("/api/anime/performance/dashboard/live").json()  # prices the queue
        for _ in range(5):  # interleaved rounds, so both see the same machine
            for path, timings in (("/api/anime/performance/dashboard/live", dashboard_ms),
                                  ("/healthz", healthz_ms)):
                for _ in range(40):
                    start = time.perf_counter()
                    client.get(path).raise_for_status()
                    timings.append((time.perf_counter() - start) * 1000)
    dashboard, healthz = statistics.median(dashboard_ms), statistics.median(healthz_ms)
    return {"gpus": len(payload["gpus"]), "queued": len(payload["queue"]),
            "running": sum(len(lane["running"]) for lane in payload["gpus"]),
            "dashboard_median_ms": dashboard,
            "dashboard_p95_ms": statistics.quantiles(dashboard_ms, n=20)[-1],
            "healthz_median_ms": healthz, "ratio_to_healthz": dashboard / healthz,
            "target_median_ms_max": 50.0}


def hostile_graph(samplers: int, chain: int) -> dict:
    """A ComfyUI prompt that a parse costing samplers × nodes reads slowly: `chain` conditioning
    nodes in a row under each of `samplers` KSamplers, all gathered by one custom output node
    (4,000 × 3,000 is 840 KB of JSON)."""
    graph = {"m": {"class_type": "CheckpointLoaderSimple",
                   "inputs": {"ckpt_name": "m.safetensors"}},
             "l": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512}},
             "c0": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["m", 1]}}}
    for n in range(1, chain):
        graph[f"c{n}"] = {"class_type": "ConditioningCombine", "inputs": {"a": [f"c{n - 1}", 0]}}
    for n in range(samplers):
        graph[str(n)] = {"class_type": "KSampler", "inputs": {
            "steps": 20, "model": ["m", 0], "positive": [f"c{chain - 1}", 0],
            "latent_image": ["l", 0]}}
    graph["out"] = {"class_type": "Gather",
                    "inputs": {str(n): [str(n), 0] for n in range(samplers)}}
    return graph


def _healthz_ms(client, until: Callable[[int], bool]) -> list[float]:
    """Milliseconds of successive ``/healthz`` calls, 5 ms apart, until `until(calls)`."""
    timings: list[float] = []
    while not until(len(timings)):
        start = time.perf_counter()
        client.get("/healthz").raise_for_status()
        timings.append((time.perf_counter() - start) * 1000)
        time.sleep(0.005)
    return timings


def _post_until(url: str, body: str, stop: threading.Event, statuses: list[int]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=600) as client:
        while not stop.is_set():
            statuses.append(client.post(
                "/api/anime/performance/estimate-time", content=body,
                headers={"Content-Type": "application/json"}).status_code)


@benchmark
def bench_hostile(posts: int = 5) -> dict:
    """``/healthz`` p99 of the service (its own uvicorn process) while another client posts,
    `posts` times in a row, a ComfyUI graph of just under 1 MiB (4,000 samplers over a
    5,480-node chain: the body limit); as a ratio to its p99 with no such client."""
    import httpx

    from tools.loadtest import _server

    statuses: list[int] = []
    stop = threading.Event()
    body = json.dumps({"comfyui_prompt": hostile_graph(4000, 5480)})
    with tempfile.TemporaryDirectory(prefix="perflib-bench-") as folder:
        database_url = f"sqlite:///{Path(folder) / 'perflib.db'}"
        with _server(["-m", "perflib.serve", "--database-url", database_url], Path(folder),
                     "perflib") as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") \
                as client:
            quiet = _healthz_ms(client, lambda calls: calls >= 500)
            attacker = threading.Thread(target=_post_until,
                                        args=(f"http://127.0.0.1:{port}", body, stop, statuses))
            attacker.start()
            try:
                hostile = _healthz_ms(client, lambda _: len(statuses) >= posts)
            finally:
                stop.set()
                attacker.join()
    quiet_p99, hostile_p99 = (statistics.quantiles(ms, n=100, method="inclusive")[-1]
                              for ms in (quiet, hostile))
    return {"hostile_body_bytes": len(body), "hostile_posts": len(statuses),
            "hostile_statuses": sorted(set(statuses)), "healthz_calls_under_load": len(hostile),
            "healthz_p99_ms_quiet": quiet_p99, "healthz_p99_ms_hostile": hostile_p99,
            "healthz_max_ms_hostile": max(hostile),
            "ratio_hostile_to_quiet_p99": hostile_p99 / quiet_p99, "target_p99_ms_max": 100.0}


def run(names: list[str] | None = None, report_path: Path = REPORT_PATH) -> dict:
    """Run the named benchmarks (default all), print them and merge them into the report."""
    results = json.loads(report_path.read_text()) if report_path.exists() else {}
    for name in names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        figures = BENCHMARKS[name]()
        figures["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        results[name] = figures
        for key, value in figures.items():
            print(f"  {key:32} {value:,.4g}" if isinstance(value, float) else
                  f"  {key:32} {value}")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(results, indent=2))
    print(f"written to {report_path}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS),
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    run(args.only)


if __name__ == "__main__":
    main()
