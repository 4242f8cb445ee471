"""The ``perflib`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from perflib.config import safe_url
from perflib.store import Spool, Store


def _store(args) -> Store:
    return Store(args.database_url)


def cmd_init_db(args) -> int:
    store = _store(args)
    version = store.init_db()
    print(f"schema version {version} ready in {safe_url(store.url)}")
    return 0


def cmd_import(args) -> int:
    from perflib.store.importer import import_jobs

    store = _store(args)
    report = import_jobs(args.file, store)
    for error in report.errors:
        print(f"skipped {error}", file=sys.stderr)
    print(f"read {report.rows_read} rows: {report.inserted} jobs added, "
          f"{report.duplicates} already stored, {len(report.errors)} rejected")
    return 1 if report.errors and args.strict else 0


def cmd_flush_spool(args) -> int:
    store = _store(args)
    spool = Spool(store.config.spool_dir)
    pending = spool.count_pending(args.all)
    if not pending:
        print(f"spool {spool.directory} has nothing to replay")
        return 0
    replayed = spool.replay(store.write_jobs, args.all)
    print(f"replayed {replayed} spooled job records into {safe_url(store.url)}")
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


def cmd_estimate(args) -> int:
    from perflib.predictor import PerformancePredictor

    params = {key: value for key, value in vars(args).items()
              if key in ESTIMATE_FIELDS and value is not None}
    try:
        result = PerformancePredictor(_store(args)).estimate(params)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_simulate(args) -> int:
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
                              ground_truth_path=args.ground_truth)
    print(f"simulated {result.jobs} jobs ({result.failed} failed, {result.inserted} new) on "
          f"{result.gpus} GPUs from {result.start:%Y-%m-%d} to {result.end:%Y-%m-%d} into "
          f"{safe_url(store.url)}")
    for incident in result.incidents:
        print(f"  incident {incident.kind} from {incident.start} to {incident.end or 'the end'}")
    return 0


def cmd_report(args) -> int:
    from perflib.report import ReportError, render_report

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


def cmd_maintain(args) -> int:
    from perflib.analysis import PerformanceAnalyzer

    analyzer = PerformanceAnalyzer(_store(args))
    plan = analyzer.maintain(args.retention_days, dry_run=True)
    print(plan.describe())
    if not args.dry_run:
        print(analyzer.maintain(args.retention_days).describe())
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


ESTIMATE_FIELDS = ("pipeline_type", "resolution", "frame_count", "steps", "job_type",
                   "guidance_scale", "batch_size", "sampler", "model_name", "gpu_name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perflib", description=__doc__)
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL (default: PERFLIB_DATABASE_URL, else data/perflib.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("init-db", help="create or upgrade the schema").set_defaults(
        handler=cmd_init_db)

    importer = commands.add_parser("import", help="load past jobs from a CSV or JSONL file")
    importer.add_argument("file")
    importer.add_argument("--strict", action="store_true",
                          help="exit 1 when any row was rejected")
    importer.set_defaults(handler=cmd_import)

    flush = commands.add_parser("flush-spool", help="write spooled job records to the database")
    flush.add_argument("--all", action="store_true",
                       help="also replay spools of processes still running (they may still be "
                            "appending; records are idempotent, so at worst a late one waits)")
    flush.set_defaults(handler=cmd_flush_spool)

    demo = commands.add_parser("demo", help="record real tracked CPU jobs and print a summary")
    demo.add_argument("--jobs", type=int, default=300)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=cmd_demo)

    train = commands.add_parser("train", help="train prediction models and save the best")
    train.add_argument("--pipeline-type", choices=["image", "video"],
                       help="one pipeline (default: one model over all jobs)")
    train.add_argument("--model-type", default="auto",
                       choices=["auto", "random_forest", "gradient_boosting",
                                "linear_regression", "neural_network"])
    train.add_argument("--split", default="time", choices=["time", "size"],
                       help="hold out the latest 30%% (time) or the largest 30%% (size)")
    train.set_defaults(handler=cmd_train)

    estimate = commands.add_parser("estimate", help="predict a job's time before it runs")
    estimate.add_argument("--pipeline-type", required=True, choices=["image", "video"])
    estimate.add_argument("--resolution", required=True, help="WIDTHxHEIGHT")
    estimate.add_argument("--steps", type=int, required=True)
    estimate.add_argument("--frame-count", type=int)
    estimate.add_argument("--job-type")
    estimate.add_argument("--guidance-scale", type=float)
    estimate.add_argument("--batch-size", type=int)
    estimate.add_argument("--sampler")
    estimate.add_argument("--model-name")
    estimate.add_argument("--gpu-name")
    estimate.set_defaults(handler=cmd_estimate)

    simulate = commands.add_parser("simulate", help="write a simulated production history")
    simulate.add_argument("--weeks", type=int, default=8)
    simulate.add_argument("--gpus", type=int, default=2)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--jobs-per-day", type=float, default=180.0)
    simulate.add_argument("--incidents", action="store_true",
                          help="plant one incident of each kind (ground truth beside the data)")
    simulate.add_argument("--ground-truth", help="write the incidents' ground truth here (JSON)")
    simulate.set_defaults(handler=cmd_simulate)

    report = commands.add_parser("report", help="render the weekly HTML report into reports/")
    report.add_argument("--weeks-back", type=int, default=1)
    report.add_argument("--end-date", help="ISO date the period ends (default: newest job)")
    report.add_argument("--pipeline-type", choices=["image", "video"])
    report.add_argument("--output-dir", default="reports",
                        help="where the HTML goes (relative to the project root)")
    report.set_defaults(handler=cmd_report)

    analyze = commands.add_parser("analyze", help="print the performance report")
    analyze.add_argument("--days-back", type=float, default=7)
    analyze.add_argument("--end-date")
    analyze.add_argument("--json", action="store_true", help="the whole report dict as JSON")
    analyze.set_defaults(handler=cmd_analyze)

    maintain = commands.add_parser("maintain", help="apply retention, prune model versions, "
                                   "refresh daily aggregates")
    maintain.add_argument("--retention-days", type=int,
                          help="keep this many days of jobs (default PERFLIB_RETENTION_DAYS, 90)")
    maintain.add_argument("--dry-run", action="store_true", help="only say what would go")
    maintain.set_defaults(handler=cmd_maintain)

    serve = commands.add_parser("serve", help="run the HTTP service (estimate-time, ...)")
    serve.add_argument("--host", help="default PERFLIB_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=int, help="default PERFLIB_PORT, else 8328")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
