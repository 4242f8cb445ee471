"""The ``/api/anime/performance/`` endpoints."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import (APIRouter, BackgroundTasks, Body, Depends, HTTPException, Path, Query, Request,
                     Response)
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from perflib.analysis.alerts import SEVERITIES
from perflib.analysis.arms import SelectionError
from perflib.analysis.compare import DEFAULT_DAYS, compare_settings
from perflib.serve.guards import require_token
from perflib.serve.dashboard import HeartbeatBody, HeartbeatResult, LiveDashboard, LiveDashboardReader
from perflib.serve.retrain import RetrainLimited
from perflib.serve.reports import (REPORT_HEADERS, RETRY_AFTER_S, RenderFailed, RendersBusy,
                                   unless_disconnected)
from perflib.store.heartbeats import write_heartbeats
from perflib.serve.schemas import (Acknowledged, AlertsResponse, ComfyUIEstimateRequest,
                                   ComparisonResponse, DashboardResponse, EstimateBody,
                                   EstimateResponse, JsonParsedInThread, PipelineTrend,
                                   PipelineType, RecordBody, RecordResult, RetrainRequest,
                                   RetrainTaskView, TrendsResponse, json_ready,
                                   validated_in_thread)

if TYPE_CHECKING:
    from perflib.serve.app import Services

DaysBack = Annotated[int, Query(ge=1, le=365, description="days of history to analyse")]
ArmSelector = Annotated[str | None, Query(max_length=1000, description=(
    "FIELD=VALUE or tag:KEY=VALUE, several joined by commas (all must hold), e.g. sampler=euler"))]


def api_router(services: Services) -> APIRouter:
    """Every endpoint, bound to one service's store, predictor and analyzer."""
    router = APIRouter(tags=["performance"], route_class=JsonParsedInThread)
    needs_token = [Depends(require_token(services.settings.api_token))]
    _job_routes(router, services, needs_token)
    _analysis_routes(router, services, needs_token)
    _alert_routes(router, services, needs_token)
    _report_routes(router, services)
    _model_routes(router, services, needs_token)
    return router


def _job_routes(router: APIRouter, services: Services, needs_token: list) -> None:
    """Estimating jobs before they run, and taking their records and GPU readings."""
    @router.post("/estimate-time", response_model=EstimateResponse,
                 response_model_exclude_unset=True)
    async def estimate_time(job: validated_in_thread(EstimateBody)) -> EstimateResponse:
        """How long a job will take, how sure that is, cheaper settings, and when it would
        start and finish behind the live queue. A ComfyUI prompt (``comfyui_prompt``) is
        estimated from its graph, node by node (``nodes``; those ComfyUI will serve from its
        cache after ``previous_prompt`` cost 0), and the answer says what was understood
        (``parsed_job``)."""
        comfyui = isinstance(job, ComfyUIEstimateRequest)
        refine = services.node_costs.refiner(
            job.comfyui_prompt, job.parsed_prompt, job.previous_prompt, job.gpu_name,
            job.hostname) if comfyui else None
        with services.metrics.estimate_seconds.time():
            answer = await services.estimator.estimate(job.params(), refine)
        if comfyui:
            answer = answer.model_copy(update={"parsed_job": job.parsed_job})
        return answer

    @router.post("/record-metrics", response_model=RecordResult, dependencies=needs_token,
                 responses={202: {"model": RecordResult,
                                  "description": "database down: the records were spooled"}})
    def record_metrics(body: validated_in_thread(RecordBody), response: Response,
                       background: BackgroundTasks) -> RecordResult:
        """Store one job record or a list (idempotent on job_id; a queued/running job is
        replaced by its newer report). While the database is down: spooled, 202."""
        records = [record.as_record() for record in (body if isinstance(body, list) else [body])]
        result = services.ingest.write(records)
        if result.spooled:
            response.status_code = 202
        else:
            services.estimator.forget_queue()
            services.node_costs.jobs_recorded()
            background.add_task(services.ingest.replay_spool)
        return result

    @router.post("/heartbeat", response_model=HeartbeatResult, dependencies=needs_token)
    def heartbeat(body: validated_in_thread(HeartbeatBody)) -> HeartbeatResult:
        """Latest readings of a worker's GPUs (or of a host without one: ``gpu_index`` null),
        for the dashboard; a GPU's row is overwritten at most every 5 s. Not spooled while the
        database is down (503): the next reading supersedes it."""
        beats = body if isinstance(body, list) else [body]
        stored = write_heartbeats(services.store, [beat.model_dump() for beat in beats],
                                  datetime.now(timezone.utc))
        return HeartbeatResult(received=len(beats), stored=stored)


def _analysis_routes(router: APIRouter, services: Services, needs_token: list) -> None:
    """Trends and comparisons."""
    @router.get("/trends", response_model=TrendsResponse)
    def trends(days_back: DaysBack = 7, pipeline_type: PipelineType | None = None
               ) -> TrendsResponse:
        """Per pipeline: average time, its trend, success rate, bottlenecks and advice."""
        analyzer = services.analyzer
        found = analyzer.analyze_bottlenecks(days_back, pipeline_type)
        result = {}
        for pipeline, trend in analyzer.analyze_trends(days_back, pipeline_type).items():
            mine = [b for b in found if b.pipeline_type in (pipeline, None)]
            result[pipeline] = PipelineTrend(
                avg_generation_time=json_ready(trend.avg_generation_time),
                time_trend=trend.direction,
                slope_seconds_per_day=json_ready(trend.slope_seconds_per_day),
                p_value=json_ready(trend.p_value),
                change_points=json_ready([c.as_dict() for c in trend.change_points]),
                success_rate=json_ready(trend.success_rate),
                bottlenecks=json_ready([b.as_dict() for b in mine]),
                recommendations=list(dict.fromkeys(r for b in mine for r in b.recommendations)))
        return TrendsResponse(period_days=days_back, analysis_date=datetime.now(timezone.utc),
                              trends=result)

    @router.get("/compare", response_model=ComparisonResponse,
                responses={422: {"description": "a bad selector, or an arm with too few jobs"}})
    def compare(a: ArmSelector = None, b: ArmSelector = None,
                before: Annotated[datetime | None, Query(
                    description="arm A holds only jobs started before this (ISO date or time)")]
                = None,
                after: Annotated[datetime | None, Query(
                    description="arm B holds only jobs started from this on (default: before)")]
                = None,
                days_back: DaysBack = DEFAULT_DAYS, pipeline_type: PipelineType | None = None
                ) -> ComparisonResponse:
        """A/B: is arm B faster or slower than arm A for the same work? Normalised time
        (actual ÷ the cost model's expected seconds) within strata of GPU, model and size, with
        a bootstrap interval, a stratified Mann-Whitney test and what these counts can detect."""
        try:
            comparison = compare_settings(services.store, a, b, days=days_back,
                                          pipeline_type=pipeline_type, before=before,
                                          after=after)
        except SelectionError as exc:
            raise HTTPException(422, [{"loc": ["query", exc.field], "msg": exc.message,
                                       "type": "value_error"}]) from None
        return ComparisonResponse(**json_ready(comparison.as_dict()))


def _alert_routes(router: APIRouter, services: Services, needs_token: list) -> None:
    """Alerts, and acknowledging them."""
    @router.get("/alerts", response_model=AlertsResponse)
    def alerts(severity: Literal[SEVERITIES] | None = None,
               acknowledged: bool | None = None) -> AlertsResponse:
        """Stored alerts, most severe first (raised by ``perflib maintain`` and the service's
        alert check; this only reads)."""
        return AlertsResponse(alerts=json_ready(services.analyzer.alerts(severity,
                                                                         acknowledged)))

    @router.post("/alerts/{alert_id}/acknowledge", response_model=Acknowledged,
                 dependencies=needs_token)
    def acknowledge(alert_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Acknowledged:
        """Acknowledge an alert; one delivered to Alertmanager is resolved there at once."""
        if not services.analyzer.acknowledge_alert(alert_id):
            raise HTTPException(404, f"no alert {alert_id}")
        services.alert_checks.deliver()  # when one is configured
        return Acknowledged(id=alert_id, acknowledged=True)


def _report_routes(router: APIRouter, services: Services) -> None:
    """The weekly report and the dashboards (all read only)."""
    @router.get("/weekly-report", response_model=None,
                responses={429: {"description": "as many reports as allowed are rendering"}})
    async def weekly_report(request: Request, weeks_back: Annotated[int, Query(ge=1, le=52)] = 1,
                            format: Literal["json", "html"] = "json") -> dict | Response:
        """The weekly report as JSON, or as the rendered HTML report (rendered once, in a child
        process; concurrent requests for it share that render)."""
        if format == "json":
            return json_ready(await run_in_threadpool(
                services.analyzer.generate_performance_report, 7 * weeks_back))
        _, end = await run_in_threadpool(services.analyzer.window, 7 * weeks_back)
        job = services.reports.job(weeks_back, end)
        try:
            html = await unless_disconnected(request, services.reports.html(job))
        except RendersBusy as exc:
            raise HTTPException(429, str(exc),
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except RenderFailed as exc:
            raise HTTPException(500, str(exc)) from None
        if html is None:
            return Response(status_code=499)  # the client has gone: nothing is sent
        return FileResponse(html, media_type="text/html", headers=REPORT_HEADERS)

    @router.get("/dashboard", response_model=DashboardResponse)
    def dashboard() -> DashboardResponse:
        """The last 24 hours' headline numbers, jobs per hour, bottlenecks and opportunities."""
        return DashboardResponse(**json_ready(services.analyzer.dashboard()))

    live_dashboard = LiveDashboardReader(services.live_queue)

    @router.get("/dashboard/live", response_model=LiveDashboard)
    def dashboard_live() -> LiveDashboard:
        """What the live dashboard shows, cheap enough to poll every few seconds: a lane per
        GPU (running job, latest heartbeat, idle time today), the queue with each job's
        expected start and finish, open alerts, 14 days of normalised generation time per
        pipeline with change-points, and the accuracy of the latest 100 estimates."""
        return live_dashboard.read()


def _model_routes(router: APIRouter, services: Services, needs_token: list) -> None:
    """Which model answers, and retraining it."""
    @router.get("/model-status")
    def model_status() -> dict:
        """Per pipeline: which model answers (or the heuristic) with its family, version,
        training time and metrics; the active version; versions refused and why."""
        return json_ready(services.predictor.model_status())

    @router.post("/retrain", status_code=202, response_model=RetrainTaskView,
                 dependencies=needs_token, responses={
                     200: {"model": RetrainTaskView,
                           "description": "this pipeline's retraining already queued or running"},
                     429: {"description": "too many retrainings this window (see Retry-After)"}})
    def retrain(response: Response,
                request: Annotated[RetrainRequest | None, Body()] = None) -> RetrainTaskView:
        """Train in the background and save a new active model version (one task per pipeline
        at a time; asking again returns it)."""
        request = request or RetrainRequest()
        try:
            task, created = services.retrain.submit(request.pipeline_type, request.model_type)
        except RetrainLimited as exc:
            raise HTTPException(429, str(exc), headers={
                "Retry-After": str(exc.retry_after_seconds)}) from None
        if not created:
            response.status_code = 200
        return task

    @router.get("/retrain/{task_id}", response_model=RetrainTaskView)
    def retrain_status(task_id: Annotated[str, Path(max_length=64)]) -> RetrainTaskView:
        task = services.retrain.get(task_id)
        if task is None:
            raise HTTPException(404, f"no retrain task {task_id}")
        return task
