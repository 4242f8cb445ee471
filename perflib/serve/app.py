"""The FastAPI application: one store, predictor and analyzer per app, shared by every request."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from perflib.analysis import PerformanceAnalyzer
from perflib.config import Settings, get_settings, project_root, safe_url
from perflib.ops.alert_delivery import shown_url
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.snapshot import LiveQueue
from perflib.serve.alert_checks import AlertChecks, check_alerts_periodically
from perflib.serve.errors import DATABASE_DOWN, SpoolUnavailable, describe_error
from perflib.serve.comfyui_nodes import NodeCostBook
from perflib.serve.estimator import QueueAwareEstimator
from perflib.serve.guards import (MAX_BODY_BYTES, BodySizeLimit, JsonWritesFromThisOrigin,
                                  KnownHostsOnly)
from perflib.serve.ingest import JobIngest
from perflib.serve.metrics import ServiceMetrics
from perflib.serve.reports import RenderCommand, ReportRenders, perflib_report_command
from perflib.serve.retrain import RetrainTasks, check_periodically
from perflib.serve.routes import api_router
from perflib.store import Spool, Store

log = logging.getLogger(__name__)

API_PREFIX = "/api/anime/performance"
VERSION = version("perflib")
DASHBOARD_HTML = Path(__file__).resolve().parents[1] / "static" / "dashboard.html"
SERVED_REPORTS = Path("reports") / "served"  # under the project root the service runs in


@dataclass
class Services:
    """What the endpoints share."""

    settings: Settings
    store: Store
    predictor: PerformancePredictor
    analyzer: PerformanceAnalyzer
    live_queue: LiveQueue
    estimator: QueueAwareEstimator
    ingest: JobIngest
    retrain: RetrainTasks
    metrics: ServiceMetrics
    reports: ReportRenders
    alert_checks: AlertChecks
    node_costs: NodeCostBook


def build_services(db: Any = None, settings: Settings | None = None,
                   render_command: RenderCommand = perflib_report_command) -> Services:
    """One store and everything built on it; nothing connects yet."""
    settings = settings or (db.config if isinstance(db, Store) else get_settings())
    store = db if isinstance(db, Store) else Store(db, settings)
    predictor = PerformancePredictor(store)
    live_queue = LiveQueue(store, predictor)
    metrics = ServiceMetrics(live_queue, settings.thresholds.queue_seconds,
                             settings.retrain_rule.accuracy_jobs,
                             tuple(map(shown_url, settings.alertmanager_url)))
    analyzer = PerformanceAnalyzer(store, settings)
    estimator = QueueAwareEstimator(predictor, live_queue)
    return Services(
        settings=settings, store=store, predictor=predictor,
        analyzer=analyzer, live_queue=live_queue, estimator=estimator,
        ingest=JobIngest(store, Spool(settings.spool_dir), metrics),
        retrain=RetrainTasks(store, on_saved=estimator.model_saved,
                             limit=settings.retrain_limit,
                             window_seconds=settings.retrain_window_seconds),
        metrics=metrics,
        # The renderer connects with the password; it is never shown.
        reports=ReportRenders(project_root() / SERVED_REPORTS,
                              store.url.render_as_string(hide_password=False), render_command),
        alert_checks=AlertChecks(analyzer, metrics), node_costs=NodeCostBook(store))


def create_app(db: Any = None, settings: Settings | None = None,
               render_command: RenderCommand = perflib_report_command) -> FastAPI:
    """The perflib service for database `db` (a URL, the seed-style dict, a Store, or None for
    the configured one); `render_command` gives the child process that renders a weekly
    report (tests swap in a fake)."""
    services = build_services(db, settings, render_command)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        services.ingest.drain.start()  # records an earlier run left in the spool
        check_seconds = services.settings.retrain_rule.check_seconds
        checks = [asyncio.create_task(check_periodically(services.retrain, check_seconds))] \
            if check_seconds > 0 else []
        alert_seconds = services.settings.alert_check_seconds
        if alert_seconds > 0:
            checks.append(asyncio.create_task(check_alerts_periodically(services.alert_checks,
                                                                        alert_seconds)))
        yield
        for check in checks:
            check.cancel()
        services.alert_checks.shutdown()
        services.ingest.drain.close()
        await services.reports.close()
        services.retrain.shutdown()
        services.estimator.close()

    app = FastAPI(title="perflib", version=VERSION, lifespan=lifespan,
                  description="Generation-time estimates with queue ETA, performance trends, "
                              "bottlenecks, alerts and job ingestion for diffusion pipelines.")
    app.state.services = services
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(JsonWritesFromThisOrigin)  # refused before a body is read
    app.add_middleware(KnownHostsOnly, bound_host=services.settings.host,  # outermost
                       allowed_hosts=services.settings.allowed_hosts)
    app.include_router(api_router(services), prefix=API_PREFIX)
    _handle_errors(app, services)
    _service_routes(app, services)
    return app


def _handle_errors(app: FastAPI, services: Services) -> None:
    """A database that is down answers 503 naming it (never its password); bad input 422
    naming each field."""

    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        url = services.store.url
        log.warning("database %s unavailable: %s", safe_url(url), type(exc).__name__)
        detail = f"database {safe_url(url)} is unavailable ({describe_error(exc, url)})"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "30"})

    for error in DATABASE_DOWN:
        app.add_exception_handler(error, database_down)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Each error names its field; the input is not echoed (it may be large, or hold NaN,
        # which JSON cannot carry).
        errors = [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
                  for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(SpoolUnavailable)
    async def spool_unavailable(_request: Request, exc: SpoolUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)


def _service_routes(app: FastAPI, services: Services) -> None:
    """Liveness, Prometheus exposition and the dashboard page, outside the API prefix."""

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        """Liveness, whether the database answers, and how many records wait in the spool
        (status "degraded" while the database is unavailable or records wait)."""
        try:
            with services.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            database = "ok"
        except DATABASE_DOWN:
            database = "unavailable"
        spooled = services.ingest.spool.count_waiting()
        status = "ok" if database == "ok" and not spooled else "degraded"
        return {"status": status, "database": database, "spooled": spooled, "version": VERSION}

    @app.get("/metrics", tags=["service"])
    def metrics() -> Response:
        """Prometheus exposition: jobs by pipeline and status, estimate latency, queue, and the
        autoscaling signal per pool (perflib.queue.autoscale)."""
        return Response(generate_latest(services.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @app.get("/dashboard", response_class=HTMLResponse, tags=["service"])
    def dashboard_page() -> str:
        """The live dashboard (a static page that polls the dashboard endpoint)."""
        return DASHBOARD_HTML.read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

