"""`make bench-scale`: perflib at fleet scale, 1M and 10M jobs over 90 days (not in CI).

Starts a throwaway PostgreSQL (:mod:`tools.pgserver`) and, per backend and size, builds the
history fast (:mod:`tools.scale_data`), then times: ``perflib maintain`` on it (the first run),
and again after an hour of new jobs (the daily job, steady state); the analysis after another
hour of new jobs (the daily refresh, 7-day bottlenecks and 30-day trends through
:class:`~perflib.analysis.PerformanceAnalyzer`, each timed); the full weekly report. The growth
from the smallest to the largest size says how each scales. Then many writers
(:func:`tools.loadtest.many_writers`: 64 processes on 8 simulated hosts) track jobs into
PostgreSQL for a minute: rows expected and found, per-batch write latency. Figures are printed
beside the targets of issue 14 and written to ``reports/benchmarks-scale.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

REPORT_PATH = Path("reports") / "benchmarks-scale.json"
DAYS = 90
# Disk per job: 1.4 KB (PostgreSQL) and 1.3 KB (SQLite) measured at 1M jobs (with phases, 1%
# sampled, indexes), plus room for new jobs and the analysis' temporary files.
BYTES_PER_JOB = {"postgresql": 2_000, "sqlite": 1_600}
TARGETS = {"analysis_s": 5.0, "analysis_growth": 2.0, "report_s": 60.0, "maintain_s": 30.0}
TARGET_SIZES = {"postgresql": 10_000_000, "sqlite": 1_000_000}     # where the targets apply
WRITE_BATCH = 2_000


def _timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def disk_needed(pg_sizes: list[int], sqlite_sizes: list[int]) -> int:
    """Bytes the largest history of each backend takes (each is deleted before the next)."""
    return (BYTES_PER_JOB["postgresql"] * max(pg_sizes, default=0)
            + BYTES_PER_JOB["sqlite"] * max(sqlite_sizes, default=0))


def check_disk(folder: Path, needed: int) -> None:
    """Refuse, saying how much is missing, when `folder` has not room for the histories."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(f"bench-scale needs about {needed / 1e9:.0f} GB free in {folder} for "
                         f"its databases; {free / 1e9:.0f} GB are free (set TMPDIR to a bigger "
                         "disk, or ask for smaller SIZES)")


def measure(url: str, jobs: int, folder: Path, days: int = DAYS, seed: int = 0) -> dict:
    """Build `jobs` jobs at `url` and time maintenance, analysis and the report on them."""
    from perflib.analysis import PerformanceAnalyzer
    from perflib.report.render import render_report
    from tools.scale_data import build_scale_database, new_hour_records
    from perflib.store import Store

    # The history ends two hours ago, so that the two hours of new jobs are in the past.
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    end -= timedelta(hours=2)
    built = build_scale_database(url, jobs, days=days, seed=seed, end=end)
    print(f"  built {built.jobs:,} jobs, {built.phases:,} phases, {built.samples:,} samples in "
          f"{built.seconds:.0f} s ({built.rows_per_s:,.0f} rows/s; indexes "
          f"{built.index_seconds:.0f} s, analyze {built.analyze_seconds:.0f} s)", flush=True)
    store = Store(url)
    figures = {"jobs": built.jobs, "phases": built.phases, "samples": built.samples,
               "database_bytes": _database_bytes(store),
               "template_jobs": built.template_jobs, "build_s": built.seconds,
               "build_rows_per_s": built.rows_per_s, "build_index_s": built.index_seconds,
               "build_analyze_s": built.analyze_seconds,
               "maintain_first_s": _timed(lambda: _maintain(url))}

    def add_hour(start: datetime) -> int:
        records = new_hour_records(jobs, start, days, seed)
        for first in range(0, len(records), WRITE_BATCH):
            store.write_jobs(records[first:first + WRITE_BATCH])
        return len(records)

    figures["new_hour_jobs"] = add_hour(end)
    figures["maintain_steady_s"] = _timed(lambda: _maintain(url))
    add_hour(end + timedelta(hours=1))
    analyzer = PerformanceAnalyzer(store)
    figures["refresh_s"] = _timed(analyzer.aggregate_daily)
    figures["bottlenecks_s"] = _timed(lambda: analyzer.analyze_bottlenecks(7))
    figures["trends_s"] = _timed(lambda: analyzer.analyze_trends(30))
    figures["analysis_s"] = figures["refresh_s"] + figures["bottlenecks_s"] + figures["trends_s"]
    figures["report_s"] = _timed(lambda: render_report(1, url, output_dir=folder / "report"))
    return figures


def _database_bytes(store) -> int:
    """What the history takes on disk: the PostgreSQL database, or the SQLite file and its WAL."""
    if store.is_postgres:
        with store.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    return sum(path.stat().st_size for path in Path(store.url.database).parent.glob(
        Path(store.url.database).name + "*"))


def _maintain(url: str) -> None:
    """``perflib maintain``, as the daily job runs it (its printout swallowed)."""
    from perflib.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        if main(["--database-url", url, "maintain"]) != 0:
            raise RuntimeError("perflib maintain failed")


@contextlib.contextmanager
def postgres_server() -> Iterator:
    """A throwaway PostgreSQL, tuned as a server for this size would be."""
    from tools.pgserver import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench-scale needs PostgreSQL's server binaries (initdb, pg_ctl) on "
                         "PATH or through pg_config")
    server = PostgresServer(bindir).start()
    try:
        for setting in ("work_mem = '64MB'", "maintenance_work_mem = '1GB'",
                        "effective_cache_size = '8GB'"):
            server.execute(f"ALTER SYSTEM SET {setting}")
        server.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()


def run(pg_sizes: list[int], sqlite_sizes: list[int], days: int = DAYS, writers: int = 64,
        hosts: int = 8, writer_seconds: float = 60.0, report_path: Path = REPORT_PATH) -> dict:
    """Measure every size on its backend (and the many writers); print and write the figures."""
    from tools.loadtest import many_writers

    folder = Path(tempfile.mkdtemp(prefix="perflib-bench-scale-"))
    check_disk(folder, disk_needed(pg_sizes, sqlite_sizes))
    results: dict = {"days": days, "cpus": os.cpu_count(), "targets": TARGETS,
                     "postgresql": {}, "sqlite": {}}
    try:
        if pg_sizes or writers:
            with postgres_server() as server:
                for size in pg_sizes:
                    print(f"== postgresql, {size:,} jobs", flush=True)
                    name = f"scale_{size}"
                    url = server.create_database(name)
                    results["postgresql"][str(size)] = measure(url, size, folder, days)
                    _close_connections(url)
                    server.execute(f'DROP DATABASE "{name}"')
                    _print_figures("postgresql", size, results["postgresql"][str(size)])
                if writers:
                    print(f"== many writers: {writers} processes on {hosts} hosts, "
                          f"{writer_seconds:.0f} s", flush=True)
                    results["many_writers"] = many_writers(
                        server.create_database("writers"), writers, hosts, writer_seconds,
                        spool_dir=folder / "writers")
                    print(json.dumps(results["many_writers"], indent=2))
        for size in sqlite_sizes:
            print(f"== sqlite, {size:,} jobs", flush=True)
            path = folder / f"scale-{size}.db"
            url = f"sqlite:///{path}"
            results["sqlite"][str(size)] = measure(url, size, folder, days)
            _close_connections(url)
            for leftover in folder.glob(f"{path.name}*"):
                leftover.unlink()
            _print_figures("sqlite", size, results["sqlite"][str(size)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["growth"] = {backend: _growth(results[backend])
                         for backend in ("postgresql", "sqlite") if len(results[backend]) > 1}
    for backend, growth in results["growth"].items():
        print(f"{backend} growth ×{growth['jobs']:.0f} jobs: analysis ×{growth['analysis']:.2f} "
              f"(target ≤ {TARGETS['analysis_growth']:.0f}×), report ×{growth['report']:.2f}")
    results["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(results, indent=2))
    print(f"written to {report_path}")
    return results


def _growth(sizes: dict[str, dict]) -> dict:
    """Smallest to largest size: how much each figure grew."""
    ordered = sorted(sizes, key=int)
    small, large = sizes[ordered[0]], sizes[ordered[-1]]
    return {"jobs": large["jobs"] / small["jobs"],
            "analysis": large["analysis_s"] / small["analysis_s"],
            "report": large["report_s"] / small["report_s"],
            "maintain_steady": large["maintain_steady_s"] / small["maintain_steady_s"]}


def _print_figures(backend: str, size: int, figures: dict) -> None:
    """The figures of one size, each beside its target where the issue sets one for it."""
    judged = size >= TARGET_SIZES[backend]

    def line(name: str, seconds: float, target: float | None = None) -> str:
        text = f"  {name:24} {seconds:8.2f} s"
        if target is not None:
            text += f"  (target ≤ {target:.0f} s at {TARGET_SIZES[backend]:,} jobs"
            text += f": {'met' if seconds <= target else 'MISSED'})" if judged else ")"
        return text

    print(f"{backend}, {size:,} jobs:")
    print(line("build", figures["build_s"]) + f"  {figures['build_rows_per_s']:,.0f} rows/s")
    print(line("maintain (first)", figures["maintain_first_s"]))
    print(line("maintain (steady)", figures["maintain_steady_s"], TARGETS["maintain_s"]))
    for name in ("refresh_s", "bottlenecks_s", "trends_s"):
        print(line(f"  {name.removesuffix('_s')}", figures[name]))
    print(line("analysis", figures["analysis_s"], TARGETS["analysis_s"]))
    print(line("weekly report", figures["report_s"], TARGETS["report_s"]), flush=True)


def _close_connections(url: str) -> None:
    """Close the pooled connections to `url`, so its database can be dropped or deleted."""
    from perflib.store import Store

    Store(url).engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000],
                        help="PostgreSQL history sizes in jobs (default 1M and 10M)")
    parser.add_argument("--sqlite-sizes", type=int, nargs="*", default=[1_000_000],
                        help="SQLite history sizes in jobs (default 1M; 10M is optional)")
    parser.add_argument("--days", type=int, default=DAYS, help="days of history (default 90)")
    parser.add_argument("--writers", type=int, default=64,
                        help="writer processes for the many-writers figure (0: skip it)")
    parser.add_argument("--hosts", type=int, default=8, help="simulated hosts of the writers")
    parser.add_argument("--writer-seconds", type=float, default=60.0,
                        help="how long the writers write")
    parser.add_argument("--output", type=Path, default=REPORT_PATH, help="the JSON written")
    args = parser.parse_args(argv)
    run(args.sizes, args.sqlite_sizes, args.days, args.writers, args.hosts, args.writer_seconds,
        args.output)


if __name__ == "__main__":
    main()
