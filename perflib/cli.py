"""The ``perflib`` command line."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Callable

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL

from perflib.config import ConfigError, resolve_database_url, safe_url
from perflib.store import Spool, Store
from perflib.store.errors import DATABASE_DOWN, describe_error
from perflib.store.versioning import SchemaBehind

# The database cannot be reached: the service is down, the file cannot be opened, no driver.
UNREACHABLE = (*DATABASE_DOWN, sa.exc.NoSuchModuleError, psycopg.OperationalError,
               sqlite3.OperationalError)
DATABASE_FAILED = (sa.exc.DBAPIError, psycopg.Error, sqlite3.Error)


class UsageError(Exception):
    """What was asked cannot be done as given (an input that is not what it should be): one
    line naming the problem, exit 2."""


def _store(args) -> Store:
    return Store(args.database_url)


def cmd_init_db(args) -> int:
    store = _store(args)
    print(store.init_db().describe(safe_url(store.url)))
    return 0


def cmd_import(args) -> int:
    from perflib.store.importer import import_jobs

    path = _input_file(args.file)
    store = _store(args)
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

    store = _store(args)
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
    from perflib.demo import run_demo

    store = _store(args)
    summary = run_demo(jobs=args.jobs, seed=args.seed, store=store)
    print(f"\nJobs in {safe_url(store.url)} ({store.count()} in all):")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_train(args) -> int:
    from perflib.evaluation import comparison_table
    from perflib.predictor import PerformancePredictor

    predictor = PerformancePredictor(_store(args))
    pipelines = [args.pipeline_type] if args.pipeline_type else [None]
    for pipeline in pipelines:
        result = predictor.train_model(pipeline, args.model_type, split=args.split,
                                       progress=True)
        version = predictor.save_model_to_db(pipeline, result["model_type"])
        table = comparison_table(result)
        print(f"\npipeline {result['pipeline_type']}: chose {result['model_type']} "
              f"(saved as version {version})")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        for model, profile in result["inferred_profiles"].items():
            print(f"{model}: no profile configured; its jobs show {profile['vae_temporal_factor']}x"
                  f" temporal compression and "
                  f"{'full' if profile['full_attention'] else 'per-frame'} attention")
    return 0


def cmd_backtest(args) -> int:
    from perflib.backtest import backtest_file, run_backtest
    from perflib.config import get_settings
    from perflib.predictor import PerformancePredictor

    options = dict(protocol=args.split or "online", start=args.start, retrain=args.retrain,
                   model_type=args.model_type)
    try:
        result = (backtest_file(_input_file(args.file), get_settings(), **options) if args.file
                  else run_backtest(PerformancePredictor(_store(args)), **options))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"backtest {result.protocol} (retrain {result.retrain}): "
          f"{len(result.estimates)} jobs estimated, {len(result.retrains)} retrainings")
    print(result.table().to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_estimate(args) -> int:
    from perflib.predictor import PerformancePredictor

    params = {key: value for key, value in vars(args).items()
              if key in ESTIMATE_FIELDS and value is not None}
    try:
        params, parsed_job = _estimate_request(args, params)
        result = PerformancePredictor(_store(args)).estimate(params)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if parsed_job is not None:
        result["parsed_job"] = parsed_job
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _estimate_request(args, params: dict) -> tuple[dict, dict | None]:
    """The estimate's parameters, from the options or from a ComfyUI prompt file (then also
    what was understood of its graph)."""
    if args.comfyui_prompt is None:
        missing = [f"--{name.replace('_', '-')}" for name in ("pipeline_type", "resolution",
                                                               "steps") if name not in params]
        if missing:
            raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                             "required (or give --comfyui-prompt)")
        return params, None
    from perflib.comfyui.estimate import prompt_estimate, read_prompt_file

    beside = {name: params.pop(name) for name in ("gpu_name", "job_type") if name in params}
    if params:
        raise ValueError(f"--{next(iter(params)).replace('_', '-')} cannot be given with "
                         "--comfyui-prompt: the graph says it")
    try:
        document = read_prompt_file(_input_file(args.comfyui_prompt))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.comfyui_prompt} is not a JSON text file ({exc})") from None
    return prompt_estimate(document, **beside)


def _input_file(path: str) -> str:
    """`path`, refused when it names something other than a file (a folder, a device)."""
    if os.path.exists(path) and not os.path.isfile(path):
        kind = "a folder" if os.path.isdir(path) else "not a regular file"
        raise UsageError(f"{path} is {kind}: give a file")
    return path


def cmd_simulate(args) -> int:
    if args.if_empty:
        return _seed_demo(args)
    from perflib.simulate import default_incidents, simulate_history

    store = _store(args)
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
    from perflib.demo_data import seed_if_empty

    store = _store(args)
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
    from perflib.analysis.purge import purge_simulated

    print(purge_simulated(_store(args), dry_run=args.dry_run).describe())
    return 0


def cmd_report(args) -> int:
    from perflib.analysis import PerformanceAnalyzer
    from perflib.report import ReportError, render_report

    notice = PerformanceAnalyzer(_store(args)).data_origin(
        7 * args.weeks_back, args.end_date).notice()
    if notice:
        print(f"note: {notice}")
    try:
        path = render_report(weeks_back=args.weeks_back, database_url=args.database_url,
                             end_date=args.end_date, pipeline_type=args.pipeline_type,
                             output_dir=args.output_dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {path}")
    return 0


def cmd_analyze(args) -> int:
    from perflib.analysis import PerformanceAnalyzer

    report = PerformanceAnalyzer(_store(args)).generate_performance_report(
        days_back=args.days_back, end=args.end_date)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(json.dumps(report["overall_statistics"], indent=2))
    for bottleneck in report["bottlenecks"]:
        print(f"- {bottleneck['type']} ({bottleneck['severity']:.2f}, "
              f"{bottleneck['pipeline_type']}): {bottleneck['recommendations'][0]}")
    return 0


def cmd_compare(args) -> int:
    from perflib.analysis.arms import SelectionError
    from perflib.analysis.compare import compare_settings

    try:
        comparison = compare_settings(_store(args), args.a, args.b, days=args.days,
                                      pipeline_type=args.pipeline_type, before=args.before,
                                      after=args.after, end=args.end_date)
    except SelectionError as exc:
        print(f"perflib compare: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(comparison.to_markdown())
    return 0


def cmd_maintain(args) -> int:
    from perflib.analysis import PerformanceAnalyzer

    analyzer = PerformanceAnalyzer(_store(args))
    retrain = not args.no_retrain
    plan = analyzer.maintain(args.retention_days, dry_run=True, retrain=retrain)
    print(plan.describe())
    if not args.dry_run:
        print(analyzer.maintain(args.retention_days, retrain=retrain).describe())
    return 0


def cmd_aggregate(args) -> int:
    from perflib.analysis import PerformanceAnalyzer

    rows = PerformanceAnalyzer(_store(args)).aggregate_daily(rebuild=args.rebuild)
    print(f"{'rebuilt' if args.rebuild else 'refreshed'} {rows} daily aggregates")
    return 0


def cmd_capacity(args) -> int:
    from perflib.capacity import plan_capacity
    from perflib.capacity.text import plan_text

    try:
        plan = plan_capacity(_store(args), args.pipeline_type, days=args.days,
                             target_wait_seconds=args.target_wait, gpus=args.gpus,
                             end=args.end_date, weeks=args.weeks)
    except ValueError as exc:
        print(f"perflib capacity: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.as_dict(), indent=2) if args.json else plan_text(plan))
    return 0


def cmd_migrate_partitions(args) -> int:
    from perflib.store.migration import migrate

    store = _store(args)
    if not store.is_postgres:
        print("SQLite keeps plain tables (retention deletes rows in batches): nothing to migrate")
        return 0
    print(migrate(store.engine).describe())
    return 0


def cmd_serve(args) -> int:
    from perflib.serve import main as serve_main

    argv = []
    if args.host:
        argv += ["--host", args.host]
    if args.port:
        argv += ["--port", str(args.port)]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    return serve_main(argv) or 0


def cmd_comfyui_collect(args) -> int:
    from perflib.comfyui.collect import Collector

    store = _store(args)
    collector = Collector(args.url, store, interval=args.interval)
    if args.once:
        stored = collector.poll_once()
        for status in collector.statuses():
            print(status.summary())
        print(f"{stored} new prompts stored in {safe_url(store.url)}")
        return 0 if all(status.up for status in collector.statuses()) else 1
    print(f"collecting from {', '.join(args.url)} every {args.interval:g} s into "
          f"{safe_url(store.url)} (Ctrl-C stops)", flush=True)
    try:
        collector.run(on_change=lambda status: print(status.summary(), flush=True))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_comfyui_install(args) -> int:
    from perflib.comfyui.install import install_node

    try:
        installed = install_node(args.comfyui_dir, args.service_url, args.base_directory)
    except ValueError as exc:
        print(f"perflib comfyui install: {exc}", file=sys.stderr)
        return 2
    print(f"installed the perflib node package in {installed.path} "
          f"({len(installed.files)} files)")
    if installed.config:
        print(f"service URL written to {installed.config}")
    print("restart ComfyUI to load it")
    return 0


def _share(text: str) -> float:
    """'70%' or '0.7' as a share (0.7)."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _bounded(parse: Callable[[str], float], low: float, high: float, noun: str = "number",
             exclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: `parse(text)` from `low` to `high` (both excluded when `exclusive`);
    anything else (not a number, nan, inf, out of range) is refused naming the range."""
    shown = [f"{bound:,}" if isinstance(bound, int) else f"{bound:g}" for bound in (low, high)]
    wanted = (f"> {shown[0]} and < {shown[1]}" if exclusive
              else f"from {shown[0]} to {shown[1]}")

    def value(text: str) -> float:
        try:
            number = parse(text.strip())
        except (ValueError, OverflowError):
            number = float("nan")
        inside = low < number < high if exclusive else low <= number <= high
        if not inside:  # nan is inside no range
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun} {wanted}")
        return number
    return value


# Every numeric option's range: wide enough for any real use, small enough that no value runs
# for hours, allocates gigabytes or overflows a date.
SEED = _bounded(int, 0, 2**32 - 1, "whole number")
SECONDS = _bounded(float, 0, 86400, "number of seconds", exclusive=True)
DAYS = _bounded(float, 0, 3660, "number of days", exclusive=True)
SHARE = _bounded(_share, 0, 1, "share (0.7 or 70%)", exclusive=True)


def _whole(low: int, high: int) -> Callable[[str], float]:
    """An argparse type: a whole number from `low` to `high`."""
    return _bounded(int, low, high, "whole number")


ESTIMATE_FIELDS = ("pipeline_type", "resolution", "frame_count", "steps", "job_type",
                   "guidance_scale", "batch_size", "sampler", "model_name", "gpu_name")


class _Parser(argparse.ArgumentParser):
    """argparse with its refusals in one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perflib", description=__doc__)
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL (default: PERFLIB_DATABASE_URL, else data/perflib.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true",
                        help="log at DEBUG level and show the traceback of any failure")
    commands = parser.add_subparsers(dest="command", required=True)

    _data_commands(commands)
    _prediction_commands(commands)
    _history_commands(commands)
    _analysis_commands(commands)
    _capacity_command(commands)
    _comfyui_commands(commands)
    _serve_command(commands)
    return parser


def _data_commands(commands) -> None:
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
    demo.add_argument("--jobs", type=_whole(1, 10_000), default=300)
    demo.add_argument("--seed", type=SEED, default=0)
    demo.set_defaults(handler=cmd_demo)


def _prediction_commands(commands) -> None:
    """Commands that train, replay and ask the predictor."""
    train = commands.add_parser("train", help="train prediction models and save the best")
    train.add_argument("--pipeline-type", choices=["image", "video"],
                       help="one pipeline (default: one model over all jobs)")
    train.add_argument("--model-type", default="auto",
                       choices=["auto", "random_forest", "gradient_boosting",
                                "linear_regression", "neural_network"])
    train.add_argument("--split", default="time", choices=["time", "size"],
                       help="hold out the latest 30%% (time) or the largest 30%% (size)")
    train.set_defaults(handler=cmd_train)

    backtest = commands.add_parser("backtest", help="replay a job history as production "
                                   "would have seen it and report the estimates' accuracy")
    backtest.add_argument("file", nargs="?", help="a CSV or JSONL of past jobs (the import "
                          "format); default: the configured database's jobs")
    backtest.add_argument("--start", type=SHARE, default=None, metavar="SHARE",
                          help="jobs trained on first, e.g. 70%% (default 70%%; 80%% for "
                               "--split size)")
    backtest.add_argument("--retrain", default="never", choices=["auto", "weekly", "daily",
                                                                  "never"],
                          help="online replay: when to retrain (auto: the maintain rule)")
    backtest.add_argument("--split", choices=["time", "size"],
                          help="a static protocol instead of the online replay: the latest "
                               "jobs (time) or the largest (size), model trained once")
    backtest.add_argument("--model-type", default="auto",
                          choices=["auto", "random_forest", "gradient_boosting",
                                   "linear_regression", "neural_network"])
    backtest.add_argument("--json", action="store_true", help="print JSON")
    backtest.set_defaults(handler=cmd_backtest)

    estimate = commands.add_parser("estimate", help="predict a job's time before it runs")
    estimate.add_argument("--comfyui-prompt", metavar="FILE",
                          help="a ComfyUI prompt in API format (or a /prompt body): its graph "
                               "gives the parameters; only --gpu-name and --job-type go with it")
    estimate.add_argument("--pipeline-type", choices=["image", "video"],
                          help="required without --comfyui-prompt")
    # Values stay text here: the job record checks them as it checks every other way in.
    estimate.add_argument("--resolution", help="WIDTHxHEIGHT (required without --comfyui-prompt)")
    estimate.add_argument("--steps", help="required without --comfyui-prompt")
    estimate.add_argument("--frame-count")
    estimate.add_argument("--job-type")
    estimate.add_argument("--guidance-scale")
    estimate.add_argument("--batch-size")
    estimate.add_argument("--sampler")
    estimate.add_argument("--model-name")
    estimate.add_argument("--gpu-name")
    estimate.set_defaults(handler=cmd_estimate)


def _history_commands(commands) -> None:
    """Commands that write or remove simulated demo history."""
    simulate = commands.add_parser("simulate", help="write a simulated production history")
    simulate.add_argument("--weeks", type=_whole(1, 104), default=8)
    simulate.add_argument("--gpus", type=_whole(1, 1000), default=2)
    simulate.add_argument("--gpus-per-host", type=_whole(1, 64), default=1,
                          help="GPUs on each simulated host (render-01, render-02, ...)")
    simulate.add_argument("--seed", type=SEED, default=0)
    simulate.add_argument("--jobs-per-day", type=_bounded(float, 0, 10_000, exclusive=True),
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


def _analysis_commands(commands) -> None:
    """Commands that analyse, compare and report (and maintain)."""
    report = commands.add_parser("report", help="render the weekly HTML report into reports/")
    report.add_argument("--weeks-back", type=_whole(1, 520), default=1)
    report.add_argument("--end-date", help="ISO date the period ends (default: newest job)")
    report.add_argument("--pipeline-type", choices=["image", "video"])
    report.add_argument("--output-dir", default="reports",
                        help="where the HTML goes (relative to the project root)")
    report.set_defaults(handler=cmd_report)

    analyze = commands.add_parser("analyze", help="print the performance report")
    analyze.add_argument("--days-back", type=DAYS, default=7)
    analyze.add_argument("--end-date")
    analyze.add_argument("--json", action="store_true", help="the whole report dict as JSON")
    analyze.set_defaults(handler=cmd_analyze)

    compare = commands.add_parser(
        "compare", help="A/B: is one group of jobs faster than another for the same work")
    compare.add_argument("--a", metavar="SELECTOR",
                         help="arm A: FIELD=VALUE or tag:KEY=VALUE, several joined by commas "
                              "(e.g. sampler=euler)")
    compare.add_argument("--b", metavar="SELECTOR", help="arm B, the same way "
                         "(e.g. sampler=dpmpp_2m)")
    compare.add_argument("--before", metavar="DATE",
                         help="arm A holds only jobs started before this ISO date or time")
    compare.add_argument("--after", metavar="DATE",
                         help="arm B holds only jobs started from this ISO date or time on "
                              "(default: --before)")
    compare.add_argument("--pipeline-type", choices=["image", "video"])
    compare.add_argument("--days", type=DAYS, default=30,
                         help="days of history to compare (default 30)")
    compare.add_argument("--end-date", help="ISO date the period ends (default: newest job)")
    compare.add_argument("--json", action="store_true", help="the comparison as JSON")
    compare.set_defaults(handler=cmd_compare)

    maintain = commands.add_parser("maintain", help="apply retention, prune model versions, "
                                   "refresh daily aggregates, raise alerts, retrain models "
                                   "that are due")
    maintain.add_argument("--retention-days", type=_whole(1, 36_500),
                          help="keep this many days of jobs (default PERFLIB_RETENTION_DAYS, 90)")
    maintain.add_argument("--dry-run", action="store_true",
                          help="only say what would go and which models are due")
    maintain.add_argument("--no-retrain", action="store_true",
                          help="leave the models as they are")
    maintain.set_defaults(handler=cmd_maintain)

    aggregate = commands.add_parser("aggregate", help="refresh the daily aggregates of the days "
                                    "with new jobs (as maintain does)")
    aggregate.add_argument("--rebuild", action="store_true",
                           help="recompute every day and refit the reference cost models")
    aggregate.set_defaults(handler=cmd_aggregate)

    commands.add_parser(
        "migrate-partitions", help="PostgreSQL: move the job tables to day partitions, so "
        "retention drops whole days (rows written meanwhile are kept; idempotent)"
    ).set_defaults(handler=cmd_migrate_partitions)


def _capacity_command(commands) -> None:
    """Capacity planning: the GPUs that keep the queue wait within its target."""
    capacity = commands.add_parser(
        "capacity", help="how many GPUs keep the p95 queue wait within the target at every "
                         "hour of the week (simulation of the observed arrivals, Erlang-C beside)")
    capacity.add_argument("--pipeline-type", choices=["image", "video"],
                          help="plan the GPUs of one pipeline (default: one pool for all)")
    capacity.add_argument("--days", type=_bounded(float, 7, 3660, "number of days"),
                          default=28, help="days of arrivals to plan from, 7 to 3660 "
                                           "(default 28)")
    capacity.add_argument("--target-wait", type=SECONDS, metavar="SECONDS",
                          help="p95 queue wait to keep (default: the high_queue_time threshold, "
                               "PERFLIB_THRESHOLD_QUEUE_SECONDS, 30 s)")
    capacity.add_argument("--gpus", type=_whole(1, 10_000),
                          help="the GPU count to evaluate (default: the GPUs seen in the window)")
    capacity.add_argument("--weeks", type=_whole(1, 104), default=4,
                          help="simulated weeks the figures pool (default 4)")
    capacity.add_argument("--end-date", help="ISO date the window ends (default: newest job)")
    capacity.add_argument("--json", action="store_true", help="the plan, all 168 hours, as JSON")
    capacity.set_defaults(handler=cmd_capacity)


def _comfyui_commands(commands) -> None:
    """The ``perflib comfyui`` group: collect and install."""
    comfyui = commands.add_parser("comfyui", help="ComfyUI: collect the prompts its servers "
                                  "run; install the perflib node into one")
    comfyui_commands = comfyui.add_subparsers(dest="comfyui_command", required=True)
    collect = comfyui_commands.add_parser(
        "collect", help="store every prompt ComfyUI servers run, and their queues as live jobs")
    collect.add_argument("--url", action="append", required=True,
                         help="a ComfyUI server, e.g. http://127.0.0.1:8188 (repeat for several)")
    mode = collect.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="poll each server once, print its status, exit 1 if any is down")
    mode.add_argument("--follow", action="store_true", help="keep polling (the default)")
    collect.add_argument("--interval", type=SECONDS, default=2.0,
                         help="seconds between polls (default 2; a server that is down is "
                              "retried with backoff up to a minute)")
    collect.set_defaults(handler=cmd_comfyui_collect)
    install = comfyui_commands.add_parser(
        "install", help="install the perflib custom node package (estimates in the browser, "
                        "per-node job records) into a ComfyUI checkout")
    install.add_argument("comfyui_dir", metavar="COMFYUI_DIR",
                         help="the ComfyUI checkout (the folder with main.py)")
    install.add_argument("--service-url",
                         help="the perflib service the node talks to (default: the node's "
                              "PERFLIB_SERVICE_URL, else http://127.0.0.1:8328)")
    install.add_argument("--base-directory",
                         help="ComfyUI's --base-directory, when it runs with one")
    install.set_defaults(handler=cmd_comfyui_install)


def _serve_command(commands) -> None:
    """The HTTP service."""
    serve = commands.add_parser("serve", help="run the HTTP service (estimate-time, ...)")
    serve.add_argument("--host", help="default PERFLIB_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=_whole(1, 65_535),
                       help="default PERFLIB_PORT, else 8328")
    serve.set_defaults(handler=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # output that waited in the buffer meets a closed pipe here
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """stdout's reader has gone (``perflib compare | head``): as Python's documentation
    recommends, what is left goes to devnull (so the exit does not fail again) and the command
    ends quietly with 1, as Python ends on EPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"perflib {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:
        failure = None if args.debug else _failure_line(exc, args.database_url)
        if failure is None:
            raise
        print(f"perflib {args.command}: {failure}", file=sys.stderr)
        return 1


def _failure_line(exc: Exception, database_url: str | None) -> str | None:
    """One line saying what failed, for failures fixed outside perflib (the database, a file,
    the configuration), with no password in it; None for anything else, whose traceback helps."""
    if isinstance(exc, ConfigError):
        return f"bad configuration: {exc}"
    try:
        url = resolve_database_url(database_url)
    except (ConfigError, sa.exc.ArgumentError):
        return ("bad configuration: the database URL (--database-url or PERFLIB_DATABASE_URL) "
                "is not a valid SQLAlchemy URL")
    if isinstance(exc, SchemaBehind):
        return describe_error(exc, url)
    if isinstance(exc, UNREACHABLE) or _is_database_file_error(exc, url):
        return f"cannot reach the database {safe_url(url)}: {describe_error(exc, url)}"
    if isinstance(exc, DATABASE_FAILED):
        return f"the database {safe_url(url)} failed: {describe_error(exc, url)}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return None


def _is_database_file_error(exc: Exception, url: URL) -> bool:
    """An OSError on a SQLite database file or on a folder it should be in."""
    if not isinstance(exc, OSError) or not exc.filename or url.get_backend_name() != "sqlite" \
            or not url.database or url.database == ":memory:":
        return False
    database, failed = Path(url.database).absolute(), Path(exc.filename).absolute()
    return failed == database or failed in database.parents


if __name__ == "__main__":
    sys.exit(main())
