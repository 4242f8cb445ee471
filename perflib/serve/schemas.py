"""Request and response bodies of the service: every field typed and bounded, so bad input is a
422 that names the field, and nothing the store would refuse is ever accepted (or spooled)."""
from __future__ import annotations

import enum
import json
import math
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr,
                      SkipValidation, StringConstraints, Tag, TypeAdapter, ValidationError, model_validator)

from perflib.analysis.alerts import SEVERITIES
from perflib.comfyui.inputs import MAX_INPUTS, MAX_NAME_LENGTH
from perflib.comfyui.graph import MAX_NODES
from perflib.comfyui.prompt_estimate import parsed_estimate
from perflib.prediction.models import FAMILIES
from perflib.queue.snapshot import QueueEta
from perflib.record import (GpuName, HostName, JobParams, JobRecord, JobType, JsonObject,
                            PipelineType, Resolution, Side, Steps)

MAX_RECORDS = 10_000  # job records in one record-metrics call


class EstimateRequest(JobParams):
    """A job about to be submitted: what it will generate, and with what (the job record's
    parameters, checked the same way; resolution and steps are required)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "pipeline_type": "video", "resolution": "768x768", "frame_count": 60, "steps": 25,
        "job_type": "scene"}]})

    resolution: Resolution
    steps: Steps

    def params(self) -> dict[str, Any]:
        """The parameters as :meth:`PerformancePredictor.estimate` takes them."""
        return self.model_dump(exclude_none=True, exclude={"resolution"})


def _bounded_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """A prompt graph as the parser bounds one: at most MAX_NODES nodes, each an object."""
    if len(graph) > MAX_NODES:
        raise ValueError(f"a prompt of {len(graph)} nodes; at most {MAX_NODES}")
    if not all(isinstance(node, dict) for node in graph.values()):
        raise ValueError("every node of a prompt is a JSON object")
    return graph


class NodeEstimate(BaseModel):
    """One node a ComfyUI prompt needs: its predicted seconds (0 when served from cache)."""

    id: str
    class_type: str
    seconds: float
    cached: bool


class InputSize(BaseModel):
    """The pixel size of one input file of a ComfyUI graph."""

    model_config = ConfigDict(extra="forbid")
    width: Side
    height: Side


InputName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]


class ComfyUIEstimateRequest(BaseModel):
    """A ComfyUI prompt about to be queued: its graph (the API-format JSON posted to ComfyUI's
    ``/prompt``) says what it generates, in one or more sampling passes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "comfyui_prompt": {
            "4": {"class_type": "CheckpointLoaderSimple",
                  "inputs": {"ckpt_name": "sd15.safetensors"}},
            "5": {"class_type": "EmptyLatentImage",
                  "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "3": {"class_type": "KSampler",
                  "inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                             "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                             "positive": ["6", 0], "negative": ["6", 0],
                             "latent_image": ["5", 0]}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage",
                  "inputs": {"images": ["8", 0], "filename_prefix": "x"}}},
        "gpu_name": "NVIDIA GeForce RTX 4090"}]})

    comfyui_prompt: JsonObject = Field(description="API-format ComfyUI prompt graph")
    comfyui_inputs: Annotated[dict[InputName, InputSize], Field(max_length=MAX_INPUTS)] | None \
        = Field(None, description="sizes of the graph's input files (LoadImage, "
                                  "LoadImageMask) by the name the graph gives them, e.g. "
                                  '{"photo.png": {"width": 768, "height": 512}}; a file not '
                                  "listed is assumed 512×512 (parsed_job says so)")
    previous_prompt: Annotated[JsonObject, AfterValidator(_bounded_graph)] | None = Field(
        None, description="the API-format prompt this server runs just before this one (the "
                          "node sends the one queued before it): the nodes whose inputs it "
                          "shares, a loaded checkpoint among them, are served from ComfyUI's "
                          "cache and cost 0")
    gpu_name: GpuName | None = None
    hostname: HostName | None = None
    job_type: JobType | None = None
    _params: dict[str, Any] = PrivateAttr(default_factory=dict)
    _parsed_job: dict[str, Any] = PrivateAttr(default_factory=dict)
    _parsed_prompt: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _parse(self) -> "ComfyUIEstimateRequest":
        self._params, self._parsed_job, self._parsed_prompt = parsed_estimate(
            self.comfyui_prompt, self.input_sizes(), gpu_name=self.gpu_name, hostname=self.hostname,
            job_type=self.job_type)
        return self

    @property
    def parsed_prompt(self) -> Any:
        """The parsed graph (:class:`perflib.comfyui.graph.ParsedPrompt`)."""
        return self._parsed_prompt

    def input_sizes(self) -> dict[str, dict[str, int]]:
        return {name: size.model_dump() for name, size in (self.comfyui_inputs or {}).items()}

    def params(self) -> dict[str, Any]:
        """The graph's job as :meth:`PerformancePredictor.estimate` takes it."""
        return self._params

    @property
    def parsed_job(self) -> dict[str, Any]:
        """What was understood of the graph: the job's parameters, each sampling pass, and the
        node types that were not understood."""
        return self._parsed_job


def _job_or_comfyui(value: Any) -> str:
    return "comfyui" if isinstance(value, dict) and "comfyui_prompt" in value else "job"


EstimateBody = Annotated[
    Annotated[EstimateRequest, Tag("job")]
    | Annotated[ComfyUIEstimateRequest, Tag("comfyui")],
    Discriminator(_job_or_comfyui),
]


class GraphEditSaving(BaseModel):
    """An edit of a ComfyUI prompt's graph and the seconds the estimate says it saves."""

    node_id: str
    class_type: str
    input: str = Field(description="the input to set; class_type: the node's class")
    old_value: Any
    new_value: Any
    seconds_saved: float = Field(description="estimate of the prompt − estimate of the "
                                             "edited prompt")
    description: str


class EstimateResponse(BaseModel):
    predicted_time_seconds: float
    confidence: float
    prediction_method: Literal["ml_model", "heuristic"]
    model_used: str
    uncertainty_range: tuple[float, float]
    recommendations: list[str] | list[GraphEditSaving] = Field(
        description="cheaper settings; for a comfyui_prompt, edits of its graph that save "
                    "time, the largest saving first")
    speed_source: Literal["observed", "pooled", "gpu_profile", "heuristic"] | None = Field(
        None, description="where the GPU and model's speed came from: their own jobs, the "
                          "pooled fit of other GPUs and models (a wider interval), the GPU's "
                          "profile (PERFLIB_GPU_PROFILES), or the untrained heuristic")
    geometry_source: str | None = Field(
        None, description="where the model's latent geometry came from: configured, inferred "
                          "from its own jobs, profile:<arch> (a public architecture's published "
                          "geometry), sibling:<name> (a related model's, for a model with too "
                          "few jobs), or the SD-style default")
    queue: QueueEta
    parsed_job: dict[str, Any] | None = Field(
        None, description="for a comfyui_prompt: what was understood of its graph (only then "
                          "present)")
    nodes: list[NodeEstimate] | None = Field(
        None, description="for a comfyui_prompt: every node it needs, in id order, with its "
                          "predicted seconds (cached: served from ComfyUI's cache, 0 s); they "
                          "sum to predicted_time_seconds")
    total_from: Literal["node_sum", "prior", "job_model"] | None = Field(
        None, description="for a comfyui_prompt: the total is the sum of node costs learned "
                          "from this GPU's recorded node times, the physics prior of each node "
                          "refitted on the first few (a new server), or the job-level estimate "
                          "shared out over the nodes (a node class not learned yet)")


def one_or_many(model: type[BaseModel], max_items: int, one: str, many: str):
    """A request body of one `model` object or a list of 1 to `max_items` of them; errors are
    reported under `one` or `many`."""
    def which(value: Any) -> str:
        return many if isinstance(value, list) else one

    return Annotated[
        Annotated[Annotated[list[model], Field(min_length=1, max_length=max_items)], Tag(many)]
        | Annotated[model, Tag(one)],
        Discriminator(which),
    ]


class JsonParsedInThread(APIRoute):
    """A route whose JSON body is decoded in the thread pool (a 1 MiB body holds 100,000
    objects: tens of milliseconds the event loop would otherwise spend on it); FastAPI then
    takes the decoded body from the request."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def decoded_first(request: Request):
            body = await request.body()
            if body and request.headers.get("content-type", "").startswith("application/json"):
                request._json = await run_in_threadpool(_decoded, body)  # what json() returns
            return await handler(request)

        return decoded_first


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:  # as FastAPI words it
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                       "msg": "JSON decode error", "input": {},
                                       "ctx": {"error": exc.msg}}]) from None
    except UnicodeDecodeError:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                       "msg": "JSON decode error: not UTF-8 text",
                                       "input": {}}]) from None


def validated_in_thread(body_type: Any) -> Any:
    """A route's JSON body of `body_type`, validated in the thread pool: FastAPI validates a
    declared body on the event loop, where a big one (thousands of records, a ComfyUI graph to
    parse) would stall every other request. The OpenAPI schema stays `body_type`'s own."""
    adapter = TypeAdapter(body_type)

    def validated(body: Any) -> Any:
        try:
            return adapter.validate_python(body)
        except ValidationError as exc:
            raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                          for error in exc.errors(include_url=False)]) from None

    # Set here, not in the signature: this module's annotations are text, and `body_type` is
    # local. A plain def dependency is what FastAPI runs in its thread pool.
    validated.__annotations__["body"] = Annotated[body_type, SkipValidation, Body()]
    return Annotated[body_type, Depends(validated)]


RecordBody = one_or_many(JobRecord, MAX_RECORDS, "record", "records")


class RecordResult(BaseModel):
    """What happened to the records of one record-metrics call."""

    received: int
    stored: int = Field(description="new jobs, or live jobs updated")
    already_stored: int = Field(description="finished jobs that were stored before")
    spooled: int = Field(description="records kept in the spool while the database is down")


class RetrainRequest(BaseModel):
    pipeline_type: PipelineType | None = None
    model_type: Literal[("auto",) + FAMILIES] = "auto"


class RetrainTaskView(BaseModel):
    task_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    pipeline_type: str | None
    model_type: str
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class Alert(BaseModel):
    id: int
    alert_type: str
    severity: Literal[SEVERITIES]
    pipeline_type: str | None
    message: str
    evidence: dict[str, Any] | None
    first_seen: datetime
    last_seen: datetime
    acknowledged: bool


class AlertsResponse(BaseModel):
    alerts: list[Alert] = Field(description="most severe first, then most recent")


class Acknowledged(BaseModel):
    id: int
    acknowledged: bool


class PipelineTrend(BaseModel):
    avg_generation_time: float | None = Field(description="mean seconds per successful job")
    time_trend: Literal["improving", "degrading", "stable"]
    slope_seconds_per_day: float | None
    p_value: float | None
    change_points: list[dict[str, Any]]
    success_rate: float | None
    bottlenecks: list[dict[str, Any]]
    recommendations: list[str]


class TrendsResponse(BaseModel):
    period_days: int
    analysis_date: datetime
    trends: dict[str, PipelineTrend]


class SystemStatus(BaseModel):
    jobs_24h: int
    avg_generation_time: float | None
    success_rate_24h: float | None
    queued_jobs: int


class HourCount(BaseModel):
    hour: int = Field(description="UTC hour of the day, 0-23")
    jobs: int


class DashboardResponse(BaseModel):
    system_status: SystemStatus
    bottlenecks: list[dict[str, Any]]
    optimization_opportunities: list[dict[str, Any]]
    jobs_per_hour: list[HourCount] = []


class ArmView(BaseModel):
    """One arm of a comparison: its compared jobs."""

    label: str = Field(description="the selection, e.g. sampler=euler")
    jobs: int
    mean_seconds: float = Field(description="mean compute seconds (processing less model load)")
    median_seconds: float
    median_work_units: float = Field(description="how big its jobs were")
    normalised_time: float = Field(description="trimmed geometric mean of actual ÷ expected "
                                               "seconds over its jobs")
    log_spread: float = Field(description="winsorised standard deviation of log normalised time")


class ComparisonResponse(BaseModel):
    """Arm B against arm A for the same work: normalised time (actual ÷ the cost model's
    expected seconds) compared within strata of GPU, model and job size."""

    a: ArmView
    b: ArmView
    ratio: float = Field(description="normalised time B ÷ A: above 1, B is slower")
    ratio_low: float = Field(description="bootstrap confidence interval of the ratio")
    ratio_high: float
    confidence_level: float
    change: float = Field(description="ratio − 1: +0.07 is 7% slower")
    p_value: float = Field(description="van Elteren (stratified Mann-Whitney), two-sided")
    significant: bool = Field(description="p_value < 0.05")
    naive_ratio: float = Field(description="mean seconds B ÷ A, ignoring the job mix")
    detectable_change: float = Field(description="smallest change detected with 80% "
                                                 "probability at these counts")
    power_at_reference: float = Field(description="probability of detecting a 5% change")
    jobs_per_arm_for_target: int = Field(description="jobs per arm that detect a 2% change")
    strata: int
    excluded_jobs: int = Field(description="jobs in strata only one arm ran")
    period_start: datetime | None
    period_end: datetime | None
    pipeline_type: str | None
    notes: list[str]
    verdict: str
    power_statement: str


def json_ready(value: Any) -> Any:
    """Analysis output as plain JSON values: numpy scalars unwrapped, dates as ISO text,
    NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
