"""``python -m perflib.serve``: run the service with uvicorn."""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Sequence

import uvicorn

from perflib.config import get_settings, safe_url
from perflib.serve.app import create_app
from perflib.serve.guards import is_loopback

# One config for the service and for the benchmark's bare reference app. On SIGTERM, requests
# still running after the graceful timeout are cancelled (a weekly report render with them).
UVICORN_OPTIONS: dict[str, Any] = {"log_level": "info", "access_log": False,
                                   "timeout_keep_alive": 30, "timeout_graceful_shutdown": 3}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m perflib.serve",
        description="perflib service: estimates with queue ETA, trends, alerts, ingestion, "
                    "dashboard (docs at /docs)")
    parser.add_argument("--host", default=None,
                        help="address to bind (default PERFLIB_HOST, else 127.0.0.1); a "
                             "non-loopback address needs PERFLIB_API_TOKEN, and names clients "
                             "use besides addresses go in PERFLIB_ALLOWED_HOSTS")
    parser.add_argument("--port", type=int, default=None,
                        help="port to bind (default PERFLIB_PORT, else 8328)")
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL (default: PERFLIB_DATABASE_URL, else data/perflib.db)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; refuses a non-loopback address when writes would be open."""
    args = parse_args(argv)
    settings = get_settings()
    args.host = args.host or settings.host
    args.port = args.port or settings.port
    if settings.api_token is None and not is_loopback(args.host):
        sys.exit(f"perflib serve: refusing to bind {args.host} without PERFLIB_API_TOKEN — "
                 "record-metrics, retrain and acknowledge would be open to the network. Set "
                 "PERFLIB_API_TOKEN, or bind 127.0.0.1.")
    app = create_app(args.database_url, settings.with_overrides(host=args.host))
    store = app.state.services.store
    print(f"perflib serving {safe_url(store.url)} on http://{args.host}:{args.port} "
          f"(dashboard /dashboard, docs /docs)", flush=True)
    # What is loaded by now (libraries) lives as long as the process: kept out of the full
    # collections that a big request's 100,000 objects set off (each scanned it all, 350 ms
    # holding the GIL, and /healthz waited).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port,
                **{**UVICORN_OPTIONS, "access_log": args.access_log})
    return 0
