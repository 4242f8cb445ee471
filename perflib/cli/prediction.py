"""Subcommands that train, replay (backtest) and ask the predictor."""
from __future__ import annotations

import json
import sys

from perflib.cli.common import ESTIMATE_FIELDS, SHARE, UsageError, input_file, open_store


def cmd_train(args) -> int:
    from perflib.prediction.evaluation import comparison_table
    from perflib.prediction.predictor import PerformancePredictor

    predictor = PerformancePredictor(open_store(args))
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
    from perflib.prediction.backtest import backtest_file, run_backtest
    from perflib.config import get_settings
    from perflib.prediction.predictor import PerformancePredictor

    options = dict(protocol=args.split or "online", start=args.start, retrain=args.retrain,
                   model_type=args.model_type)
    try:
        result = (backtest_file(input_file(args.file), get_settings(), **options) if args.file
                  else run_backtest(PerformancePredictor(open_store(args)), **options))
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
    from perflib.prediction.predictor import PerformancePredictor

    params = {key: value for key, value in vars(args).items()
              if key in ESTIMATE_FIELDS and value is not None}
    try:
        params, parsed_job = _estimate_request(args, params)
        result = PerformancePredictor(open_store(args)).estimate(params)
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
    from perflib.comfyui.prompt_estimate import prompt_estimate, read_prompt_file

    beside = {name: params.pop(name) for name in ("gpu_name", "job_type") if name in params}
    if params:
        raise ValueError(f"--{next(iter(params)).replace('_', '-')} cannot be given with "
                         "--comfyui-prompt: the graph says it")
    try:
        document = read_prompt_file(input_file(args.comfyui_prompt))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.comfyui_prompt} is not a JSON text file ({exc})") from None
    return prompt_estimate(document, **beside)


def prediction_commands(commands) -> None:
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
