"""Request and response bodies of the service: every field typed and bounded, so bad input is a
422 that names the field, and nothing the store would refuse is ever accepted (or spooled)."""
from __future__ import annotations

import enum
import math
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field,
                      StringConstraints, Tag, field_validator, model_validator)

from perflib.analysis.alerts import SEVERITIES
from perflib.models import FAMILIES
from perflib.store.schema import generation_performance, generation_phases
from perflib.validation import (FINAL_STATUSES, MAX_BATCH, MAX_FRAMES, MAX_SIDE_PX, MAX_STEPS,
                                PIPELINE_TYPES, normalise_status, parse_resolution)

MAX_RECORDS = 10_000  # job records in one record-metrics call
MAX_SECONDS = 1.0e7  # about 115 days: longer than any real job or queue
MAX_TEXT = 100_000
MAX_JSON_DEPTH = 32
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def _storable(value: str) -> str:
    # PostgreSQL refuses NUL in text and no database takes lone surrogates: refuse them here
    # rather than accept (and spool) a record that can never be written.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None
    return value


def _text(max_length: int = MAX_TEXT):
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(_storable)]


def _column_text(table, name: str):
    """Text bounded by the store column's own length."""
    return _text(table.c[name].type.length or MAX_TEXT)


def _utc(value: datetime) -> datetime:
    """Naive means UTC; aware is converted to UTC. Only plausible times are accepted (the
    analyses use pandas, whose timestamps end in 2262)."""
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None \
            else value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y} and {LATEST:%Y}")
    return value


def _portable_json(value: Any, depth: int = 0) -> Any:
    """JSON both databases store: storable text, finite numbers, modest nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not hold NaN or infinite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _portable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _portable_json(item, depth + 1)
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc)]
# Durations are kept to the microsecond: nothing is timed finer, and 1e-300 s is not a job.
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False),
                    AfterValidator(lambda seconds: round(seconds, 6))]
Reading = Annotated[float, Field(ge=0, le=1.0e9, allow_inf_nan=False)]  # %, MB, W, °C, MHz
Side = Annotated[int, Field(ge=1, le=MAX_SIDE_PX)]
PipelineType = Literal[PIPELINE_TYPES]
JsonObject = Annotated[dict[str, Any], AfterValidator(_portable_json)]
Jobs = generation_performance


class EstimateRequest(BaseModel):
    """A job about to be submitted: what it will generate, and with what."""

    pipeline_type: PipelineType
    resolution: Annotated[str, Field(examples=["768x768"], max_length=32)]
    frame_count: Annotated[int, Field(ge=1, le=MAX_FRAMES)] = 1
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)]
    job_type: _column_text(Jobs, "job_type") | None = None
    guidance_scale: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1
    sampler: _column_text(Jobs, "sampler") | None = None
    model_name: _column_text(Jobs, "model_name") | None = None
    gpu_name: _column_text(Jobs, "gpu_name") | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "pipeline_type": "video", "resolution": "768x768", "frame_count": 60, "steps": 25,
        "job_type": "scene"}]})

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        width, height = parse_resolution(value)
        return f"{width}x{height}"

    def params(self) -> dict[str, Any]:
        """The parameters as :meth:`PerformancePredictor.estimate` takes them."""
        return self.model_dump(exclude_none=True)


class QueueEta(BaseModel):
    """When a job submitted now would start and finish, behind the live queue."""

    jobs_ahead: int = Field(description="jobs queued or running now")
    gpus: int = Field(description="GPUs the queue is spread over")
    expected_start_seconds: float = Field(description="seconds from now until it starts")
    expected_finish_seconds: float = Field(description="seconds from now until it finishes")


class EstimateResponse(BaseModel):
    predicted_time_seconds: float
    confidence: float
    prediction_method: Literal["ml_model", "heuristic"]
    model_used: str
    uncertainty_range: tuple[float, float]
    recommendations: list[str]
    queue: QueueEta


class PhaseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(ge=0, le=100_000)] | None = None
    name: _column_text(generation_phases, "name")
    description: _text() | None = None
    started_at: Timestamp | None = None
    seconds: Seconds | None = None


class SampleRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(ge=0, le=10_000_000)]
    sampled_at: Timestamp
    gpu_util_pct: Reading | None = None
    vram_used_mb: Reading | None = None
    vram_total_mb: Reading | None = None
    power_w: Reading | None = None
    temperature_c: Reading | None = None
    sm_clock_mhz: Reading | None = None
    cpu_pct: Reading | None = None
    process_cpu_pct: Reading | None = None
    ram_used_mb: Reading | None = None
    process_rss_mb: Reading | None = None


class JobRecord(BaseModel):
    """One job as the tracker records it (``generation_performance`` columns, optional phases
    and samples). ``resolution`` may stand for width and height; fields the table does not have
    are kept in ``extra_params``. Queued and running jobs may be reported as they progress."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "job_id": "job-42", "pipeline_type": "video", "job_type": "scene", "status": "success",
        "resolution": "768x768", "frame_count": 60, "steps": 25, "model_name": "animatediff",
        "gpu_name": "NVIDIA GeForce RTX 4090", "started_at": "2025-01-06T10:00:00Z",
        "finished_at": "2025-01-06T10:02:45Z", "total_seconds": 165.0,
        "phases": [{"name": "denoise", "seconds": 150.0}, {"name": "decode", "seconds": 12.0}]}]})

    job_id: Annotated[_column_text(Jobs, "job_id"), StringConstraints(min_length=1)]
    pipeline_type: PipelineType
    status: str
    job_type: _column_text(Jobs, "job_type") | None = None
    error_type: _column_text(Jobs, "error_type") | None = None
    error_message: _text() | None = None
    resolution: Annotated[str, Field(max_length=32)] | None = None
    width: Side | None = None
    height: Side | None = None
    frame_count: Annotated[int, Field(ge=1, le=MAX_FRAMES)] | None = None
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = None
    guidance_scale: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] | None = None
    sampler: _column_text(Jobs, "sampler") | None = None
    model_name: _column_text(Jobs, "model_name") | None = None
    hostname: _column_text(Jobs, "hostname") | None = None
    gpu_name: _column_text(Jobs, "gpu_name") | None = None
    submitted_at: Timestamp | None = None
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    queue_seconds: Seconds | None = None
    init_seconds: Seconds | None = None
    processing_seconds: Seconds | None = None
    total_seconds: Seconds | None = None
    queue_depth: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    gpu_util_avg_pct: Reading | None = None
    gpu_util_max_pct: Reading | None = None
    vram_peak_mb: Reading | None = None
    vram_total_mb: Reading | None = None
    gpu_power_avg_w: Reading | None = None
    gpu_temp_max_c: Reading | None = None
    cpu_avg_pct: Reading | None = None
    cpu_max_pct: Reading | None = None
    ram_peak_mb: Reading | None = None
    predicted_seconds: Seconds | None = None
    user_rating: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] | None = None
    extra_params: JsonObject | None = None
    phases: Annotated[list[PhaseRecord], Field(max_length=10_000)] | None = None
    samples: Annotated[list[SampleRecord], Field(max_length=100_000)] | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        return normalise_status(value)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        width, height = parse_resolution(value)
        return f"{width}x{height}"

    @model_validator(mode="after")
    def _complete(self) -> "JobRecord":
        self._split_resolution()
        self._fill_timeline()
        for name, value in (self.model_extra or {}).items():
            try:
                _portable_json({name: value})
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    def _split_resolution(self) -> None:
        if self.resolution is None:
            return
        width, height = (int(side) for side in self.resolution.split("x"))
        if (self.width not in (None, width)) or (self.height not in (None, height)):
            raise ValueError(f"resolution {self.resolution} disagrees with width/height "
                             f"{self.width}x{self.height}")
        self.width, self.height = width, height

    def _fill_timeline(self) -> None:
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.status in FINAL_STATUSES:
            if self.total_seconds is None and self.started_at and self.finished_at:
                seconds = (self.finished_at - self.started_at).total_seconds()
                if seconds > MAX_SECONDS:
                    raise ValueError(f"finished_at is more than {MAX_SECONDS:g} s after "
                                     "started_at")
                self.total_seconds = round(seconds, 6)
            if self.started_at is None and self.finished_at and self.total_seconds is not None:
                self.started_at = _utc(datetime.fromtimestamp(
                    self.finished_at.timestamp() - self.total_seconds, timezone.utc))
            for name in ("started_at", "total_seconds"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} is required for a {self.status} job "
                                     "(or give started_at and finished_at)")
            if self.processing_seconds is None:
                self.processing_seconds = self.total_seconds
        elif self.predicted_seconds is None and (self.width is None or self.steps is None):
            raise ValueError(f"a {self.status} job needs resolution and steps, or "
                             "predicted_seconds, so the queue can be estimated")
        if self.submitted_at is None:
            self.submitted_at = self.started_at or datetime.now(timezone.utc)

    def as_record(self) -> dict[str, Any]:
        """The job as a store record; unknown fields join ``extra_params``."""
        record = self.model_dump(exclude_none=True, exclude={"resolution"})
        extra = {**(self.extra_params or {}), **(self.model_extra or {})}
        for name in self.model_extra or {}:
            record.pop(name, None)
        if extra:
            record["extra_params"] = extra
        for seq, phase in enumerate(record.get("phases", ())):
            phase.setdefault("seq", seq)
        return record


def _one_or_many(value: Any) -> str:
    return "records" if isinstance(value, list) else "record"


RecordBody = Annotated[
    Annotated[Annotated[list[JobRecord], Field(min_length=1, max_length=MAX_RECORDS)],
              Tag("records")]
    | Annotated[JobRecord, Tag("record")],
    Discriminator(_one_or_many),
]


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
