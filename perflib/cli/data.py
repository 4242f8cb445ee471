"""Subcommands that load, write or tidy the job store, and simulated history."""
from __future__ import annotations

import csv
import sys

from perflib.cli.common import SEED, UsageError, bounded, input_file, open_store, whole
from perflib.config import safe_url
from perflib.store import Spool


def cmd_init_db(args) -> int:
    store = open_store(args)
    print(store.init_db().describe(safe_url(store.url)))
    return 0


def cmd_import(args) -> int:
    from perflib.store.importer import import_jobs

    path = input_file(args.file)
    store = open_store(args)
    try:
        report = import_jobs(path, store)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{args.file} is not a CSV or JSONL text file ({exc}); rows before "
                         "the problem may be stored") from None
    for error in report.errors:
        print(f"skipped {error}", file=sys.stderr)
    print(f"read {report.rows_read} rows: {report.inserted} jobs added, "
          f"{report.duplicates} already stored, {len(report.errors)} rejected")
    return 1 if report.errors and args.strict else 0


def cmd_flush_spool(args) -> int:
    from functools import partial

    from perflib.store.deadletter import DeadLetter, write_or_dead_letter

    store = open_store(args)
    spool = Spool(store.config.spool_dir)
    # Appends and replays take turns through a lock on each file, so the spools of processes
    # still running are replayed too; --all adds those named for other hosts.
    pending = spool.count_pending(include_live=True, other_hosts=args.all)
    if not pending:
        print(f"spool {spool.directory} has nothing to replay")
        return 0
    dead_letter = DeadLetter(spool.directory)
    replayed = spool.replay(partial(write_or_dead_letter, store.write_jobs,
                                    dead_letter=dead_letter),
                            include_live=True, other_hosts=args.all)
    print(f"replayed {replayed} spooled job records into {safe_url(store.url)}")
    if dead_letter.taken:
        print(f"{dead_letter.taken} of them refused by the database: kept in "
              f"{dead_letter.path}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from perflib.sim.demo import run_demo

    store = open_store(args)
    summary = run_demo(jobs=args.jobs, seed=args.seed, store=store)
    print(f"\nJobs in {safe_url(store.url)} ({store.count()} in all):")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_simulate(args) -> int:
    if args.if_empty:
        return _seed_demo(args)
    from perflib.sim.simulate import default_incidents, simulate_history

    store = open_store(args)
    end = None
    incidents = ()
    if args.incidents:
        from datetime import datetime, timezone

        end = datetime.now(timezone.utc)
        incidents = default_incidents(end.date(), args.weeks)
    result = simulate_history(store, weeks=args.weeks, gpus=args.gpus, seed=args.seed, end=end,
                              incidents=incidents, jobs_per_day=args.jobs_per_day,
                              ground_truth_path=args.ground_truth,
                              gpus_per_host=args.gpus_per_host)
    _print_simulation(result, store)
    return 0


def _seed_demo(args) -> int:
    from perflib.sim.demo_data import seed_if_empty

    store = open_store(args)
    demo = seed_if_empty(store, weeks=args.weeks, gpus=args.gpus,
                         gpus_per_host=args.gpus_per_host, seed=args.seed,
                         jobs_per_day=args.jobs_per_day, ground_truth_path=args.ground_truth)
    if demo is None:
        print(f"{safe_url(store.url)} holds {store.count()} jobs: nothing simulated (--if-empty)")
        return 0
    _print_simulation(demo.simulation, store)
    for pipeline, family in demo.trained.items():
        print(f"  trained a {family} model for {pipeline} jobs")
    print(f"  {demo.trend_rows} daily aggregates; reports will say they show simulated data "
          "(`perflib purge --simulated` removes it)")
    return 0


def _print_simulation(result, store) -> None:
    print(f"simulated {result.jobs} jobs ({result.failed} failed, {result.inserted} new) on "
          f"{result.gpus} GPUs from {result.start:%Y-%m-%d} to {result.end:%Y-%m-%d} into "
          f"{safe_url(store.url)}")
    for incident in result.incidents:
        print(f"  incident {incident.kind} from {incident.start} to {incident.end or 'the end'}")


def cmd_purge(args) -> int:
    from perflib.ops.purge import purge_simulated

    print(purge_simulated(open_store(args), dry_run=args.dry_run).describe())
    return 0


def cmd_migrate_partitions(args) -> int:
    from perflib.store.migration import migrate

    store = open_store(args)
    if not store.is_postgres:
        print("SQLite keeps plain tables (retention deletes rows in batches): nothing to migrate")
        return 0
    print(migrate(store.engine).describe())
    return 0


def data_commands(commands) -> None:
    """Commands that load, write or tidy the job store."""
    commands.add_parser("init-db", help="create or upgrade the schema to head").set_defaults(
        handler=cmd_init_db)

    importer = commands.add_parser("import", help="load past jobs from a CSV or JSONL file")
    importer.add_argument("file")
    importer.add_argument("--strict", action="store_true",
                          help="exit 1 when any row was rejected")
    importer.set_defaults(handler=cmd_import)

    flush = commands.add_parser("flush-spool", help="write spooled job records to the database")
    flush.add_argument("--all", action="store_true",
                       help="also replay spools named for other hosts (a spool folder shared "
                            "between machines; whether their processes still run cannot be told)")
    flush.set_defaults(handler=cmd_flush_spool)

    demo = commands.add_parser("demo", help="record real tracked CPU jobs and print a summary")
    demo.add_argument("--jobs", type=whole(1, 10_000), default=300)
    demo.add_argument("--seed", type=SEED, default=0)
    demo.set_defaults(handler=cmd_demo)


def history_commands(commands) -> None:
    """Commands that write or remove simulated demo history."""
    simulate = commands.add_parser("simulate", help="write a simulated production history")
    simulate.add_argument("--weeks", type=whole(1, 104), default=8)
    simulate.add_argument("--gpus", type=whole(1, 1000), default=2)
    simulate.add_argument("--gpus-per-host", type=whole(1, 64), default=1,
                          help="GPUs on each simulated host (render-01, render-02, ...)")
    simulate.add_argument("--seed", type=SEED, default=0)
    simulate.add_argument("--jobs-per-day", type=bounded(float, 0, 10_000, exclusive=True),
                          default=180.0)
    simulate.add_argument("--incidents", action="store_true",
                          help="plant one incident of each kind (ground truth beside the data)")
    simulate.add_argument("--ground-truth", help="write the incidents' ground truth here (JSON)")
    simulate.add_argument("--if-empty", action="store_true",
                          help="demo data: only into a database with no job, with the incidents, "
                               "then train models and build daily aggregates (make report)")
    simulate.set_defaults(handler=cmd_simulate)

    purge = commands.add_parser("purge", help="delete simulated jobs and what was built from "
                                "them (models, daily aggregates, alerts)")
    purge.add_argument("--simulated", action="store_true", required=True,
                       help="the jobs written by perflib simulate")
    purge.add_argument("--dry-run", action="store_true", help="only count what would go")
    purge.set_defaults(handler=cmd_purge)
