"""Subcommands that analyse recorded jobs: report, analyze, compare, maintain, aggregate and
capacity."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from perflib.cli.common import DAYS, SECONDS, bounded, open_store, whole
from perflib.cli.data import cmd_migrate_partitions


def cmd_report(args) -> int:
    from perflib.analysis import PerformanceAnalyzer
    from perflib.report.render import ReportError, render_report

    notice = PerformanceAnalyzer(open_store(args)).data_origin(
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

    report = PerformanceAnalyzer(open_store(args)).performance_report(
        days_back=args.days_back, end=args.end_date)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return 0
    print(json.dumps(asdict(report.statistics), indent=2))
    for bottleneck in report.bottlenecks:
        print(f"- {bottleneck.type.value} ({bottleneck.severity:.2f}, "
              f"{bottleneck.pipeline_type}): {bottleneck.recommendations[0]}")
    return 0


def cmd_compare(args) -> int:
    from perflib.analysis.arms import SelectionError
    from perflib.analysis.compare import compare_settings

    try:
        comparison = compare_settings(open_store(args), args.a, args.b, days=args.days,
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

    analyzer = PerformanceAnalyzer(open_store(args))
    retrain = not args.no_retrain
    plan = analyzer.maintain(args.retention_days, dry_run=True, retrain=retrain)
    print(plan.describe())
    if not args.dry_run:
        print(analyzer.maintain(args.retention_days, retrain=retrain).describe())
    return 0


def cmd_aggregate(args) -> int:
    from perflib.analysis import PerformanceAnalyzer

    rows = PerformanceAnalyzer(open_store(args)).aggregate_daily(rebuild=args.rebuild)
    print(f"{'rebuilt' if args.rebuild else 'refreshed'} {rows} daily aggregates")
    return 0


def cmd_capacity(args) -> int:
    from perflib.capacity import plan_capacity
    from perflib.capacity.text import plan_text

    try:
        plan = plan_capacity(open_store(args), args.pipeline_type, days=args.days,
                             target_wait_seconds=args.target_wait, gpus=args.gpus,
                             end=args.end_date, weeks=args.weeks,
                             spread_weeks=args.spread_weeks)
    except ValueError as exc:
        print(f"perflib capacity: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.as_dict(), indent=2) if args.json else plan_text(plan))
    return 0


def analysis_commands(commands) -> None:
    """Commands that analyse, compare and report (and maintain)."""
    report = commands.add_parser("report", help="render the weekly HTML report into reports/")
    report.add_argument("--weeks-back", type=whole(1, 520), default=1)
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
    maintain.add_argument("--retention-days", type=whole(1, 36_500),
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


def capacity_command(commands) -> None:
    """Capacity planning: the GPUs that keep the queue wait within its target."""
    capacity = commands.add_parser(
        "capacity", help="how many GPUs keep the p95 queue wait within the target at every "
                         "hour of the week (simulation of the observed arrivals, Erlang-C beside)")
    capacity.add_argument("--pipeline-type", choices=["image", "video"],
                          help="plan the GPUs of one pipeline (default: one pool for all)")
    capacity.add_argument("--days", type=bounded(float, 7, 3660, "number of days"),
                          default=28, help="days of arrivals to plan from, 7 to 3660 "
                                           "(default 28)")
    capacity.add_argument("--target-wait", type=SECONDS, metavar="SECONDS",
                          help="p95 queue wait to keep (default: the high_queue_time threshold, "
                               "PERFLIB_THRESHOLD_QUEUE_SECONDS, 30 s)")
    capacity.add_argument("--gpus", type=whole(1, 10_000),
                          help="the GPU count to evaluate (default: the GPUs seen in the window)")
    capacity.add_argument("--weeks", type=whole(1, 104), default=4,
                          help="simulated weeks the figures pool (default 4)")
    capacity.add_argument("--spread-weeks", type=whole(1, 104), default=20,
                          help="further weeks simulated one at a time for the spread of the "
                               "GPUs needed (default 20)")
    capacity.add_argument("--end-date", help="ISO date the window ends (default: newest job)")
    capacity.add_argument("--json", action="store_true", help="the plan, all 168 hours, as JSON")
    capacity.set_defaults(handler=cmd_capacity)
