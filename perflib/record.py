"""The job record: the one definition of a generation job's fields, types and bounds.

The tracker, the importer, the service and the CLI all validate jobs here, so a value is accepted
or refused the same way wherever it comes from. Validation is strict: a boolean is not a number,
``"１２"`` (full-width digits) is not 12, and a text longer than its store column is refused
before it reaches the database. Errors name the field. The cost terms derived from a record live
in :mod:`perflib.prediction.workload`.
"""
from __future__ import annotations

import math
import numbers
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      StringConstraints, ValidationError, field_validator, model_validator)

# graph.py ships alone into the ComfyUI node, so it defines these and the record takes them:
# the one way errors echo a value, and the job type of a prompt served wholly from cache.
from perflib.comfyui import graph as _graph
from perflib.comfyui.graph import shown

CACHE_HIT_JOB_TYPE = _graph.CACHE_HIT_JOB_TYPE

PIPELINE_TYPES = ("image", "video")
FINAL_STATUSES = ("success", "failed", "cancelled")
LIVE_STATUSES = ("queued", "running")  # jobs not finished yet, as services report them
STATUSES = FINAL_STATUSES + LIVE_STATUSES
MAX_SIDE_PX = 8192
MAX_FRAMES = 10_000
MAX_STEPS = 1_000
MAX_BATCH = 1_024
MAX_PASSES = 32
MAX_SECONDS = 1.0e7  # about 115 days: longer than any real job or queue
MAX_TEXT = 100_000
MAX_NUMBER_TEXT = 64  # characters of a number written as text ("7.5", " 1e3 ")
MAX_JSON_DEPTH = 32
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
# Longest text each job-table column holds; perflib.store.schema sizes its columns from these.
TEXT_LENGTHS = {"job_id": 200, "pipeline_type": 32, "job_type": 64, "status": 16,
                "error_type": 200, "sampler": 64, "model_name": 200, "hostname": 200,
                "gpu_name": 200, "phase_name": 100}

_STATUS_ALIASES = {"completed": "success", "succeeded": "success", "ok": "success",
                   "error": "failed", "failure": "failed", "canceled": "cancelled",
                   "interrupted": "cancelled"}
# Numbers as text are bounded (MAX_NUMBER_TEXT) and stripped before these unambiguous patterns
# run, so a check is linear in the text whatever it holds.
_RESOLUTION = re.compile(r"([0-9]+)\s*[xX×]\s*([0-9]+)")
_WHOLE = re.compile(r"\+?([0-9]+)(?:\.0*)?")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class RecordError(ValueError):
    """A job refused by validation, with the field at fault and why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.values: dict[str, Any] | None = None  # the refused record, when there is one

    @classmethod
    def first_of(cls, error: ValidationError) -> "RecordError":
        """The first problem pydantic found, as a field and a message."""
        detail = error.errors()[0]
        field = ".".join(str(part) for part in detail["loc"]) or "record"
        return cls(field, detail["msg"].removeprefix("Value error, "))


# -- scalar checks ------------------------------------------------------------------------------
def _short_text(value: str, what: str) -> str:
    """`value` stripped, once it is known to be short enough to parse (MAX_NUMBER_TEXT)."""
    if len(value) > MAX_NUMBER_TEXT:
        raise ValueError(f"must be {what} of at most {MAX_NUMBER_TEXT} characters, got "
                         f"{len(value):,} characters")
    return value.strip()


def parse_resolution(value: Any) -> tuple[int, int]:
    """``"768x512"`` → ``(768, 512)``; ASCII digits only. Raises ValueError for anything else."""
    text = _short_text(value, "WIDTHxHEIGHT") if isinstance(value, str) else None
    match = _RESOLUTION.fullmatch(text) if text is not None else None
    if not match:
        raise ValueError(f"{shown(value)} is not WIDTHxHEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise ValueError(f"{shown(value)}: each side must be between 1 and {MAX_SIDE_PX}")
    return width, height


def normalise_status(value: Any) -> str:
    """One of STATUSES, accepting common spellings (``completed``, ``error``, ``interrupted``)."""
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not one of {', '.join(STATUSES)}")
    status = value.strip().lower()
    status = _STATUS_ALIASES.get(status, status)
    if status not in STATUSES:
        raise ValueError(f"{shown(value)} is not one of {', '.join(STATUSES)}")
    return status


def whole_number(value: Any) -> Any:
    """An int, a float with no fraction, or ASCII digits as text; never a boolean."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, not {value!r}")
    if isinstance(value, str):
        match = _WHOLE.fullmatch(_short_text(value, "a whole number"))
        if not match:
            raise ValueError(f"must be a whole number written in ASCII digits, got "
                             f"{shown(value)}")
        return int(match.group(1))
    if isinstance(value, numbers.Integral):  # numpy and torch integers too
        return int(value)
    if isinstance(value, numbers.Real):
        if not float(value).is_integer():
            raise ValueError(f"must be a whole number, got {shown(value)}")
        return int(value)
    return value


def plain_number(value: Any) -> Any:
    """A finite int or float, or a decimal written in ASCII; never a boolean."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {value!r}")
    if isinstance(value, str):
        text = _short_text(value, "a number")
        if not _DECIMAL.fullmatch(text):
            raise ValueError(f"must be a number written in ASCII digits, got {shown(value)}")
        return float(text)
    if isinstance(value, numbers.Real):  # numpy and torch numbers too
        return float(value)
    return value


def storable_text(value: str) -> str:
    """Text both databases keep: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None
    return value


def utc_time(value: datetime) -> datetime:
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


def portable_json(value: Any, depth: int = 0) -> Any:
    """JSON both databases store: storable text, finite numbers, modest nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        storable_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not hold NaN or infinite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"keys must be text, got {shown(key)}")
            storable_text(key)
            portable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            portable_json(item, depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ValueError(f"holds {type(value).__name__}, which is not JSON")
    return value


def _text(max_length: int = MAX_TEXT):
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(storable_text)]


def _column_text(name: str):
    return _text(TEXT_LENGTHS[name])


def _bounded_int(minimum: int, maximum: int):
    return Annotated[int, BeforeValidator(whole_number), Field(ge=minimum, le=maximum)]


def _bounded_float(minimum: float, maximum: float):
    return Annotated[float, BeforeValidator(plain_number),
                     Field(ge=minimum, le=maximum, allow_inf_nan=False)]


Timestamp = Annotated[datetime, AfterValidator(utc_time)]
# Durations are kept to the microsecond: nothing is timed finer, and 1e-300 s is not a job.
Seconds = Annotated[float, BeforeValidator(plain_number),
                    Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False),
                    AfterValidator(lambda seconds: round(seconds, 6))]
Reading = _bounded_float(0, 1.0e9)  # %, MB, W, °C, MHz
Side = _bounded_int(1, MAX_SIDE_PX)
Frames = _bounded_int(1, MAX_FRAMES)
Steps = _bounded_int(1, MAX_STEPS)
Batch = _bounded_int(1, MAX_BATCH)
Guidance = _bounded_float(0, 100)
PipelineType = Literal[PIPELINE_TYPES]
JsonObject = Annotated[dict[str, Any], AfterValidator(portable_json)]
Resolution = Annotated[str, Field(examples=["768x768"], max_length=32)]
JobId = Annotated[_column_text("job_id"), StringConstraints(min_length=1)]
JobType = _column_text("job_type")
SamplerName = _column_text("sampler")
ModelName = _column_text("model_name")
GpuName = _column_text("gpu_name")
HostName = _column_text("hostname")
ErrorType = _column_text("error_type")
PhaseName = _column_text("phase_name")
MAX_TAGS = 32
# Experiment tags ({"ab": "dpmpp"}): short text to short text, for perflib compare.
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64),
                   AfterValidator(storable_text)]
Tags = Annotated[dict[TagKey, _text(200)], Field(max_length=MAX_TAGS)]


# -- the record --------------------------------------------------------------------------------
class SamplingPass(BaseModel):
    """One sampling pass of a job: a hires fix or refiner adds a second one at its own size."""

    model_config = ConfigDict(extra="forbid")

    width: Side
    height: Side
    frame_count: Frames = 1
    batch_size: Batch = 1
    steps: Steps = Field(description="denoiser evaluations this pass runs")
    denoise: _bounded_float(0, 1) = 1.0
    guidance_scale: Guidance | None = None
    sampler: SamplerName | None = None
    scheduler: _text(64) | None = None
    model_name: ModelName | None = None
    model_calls_per_step: _bounded_int(1, 8) = 1
    source: _text(64) | None = Field(None, description="where its latent comes from: empty, "
                                                       "upscale, encode, ...")
    vae_temporal_factor: _bounded_int(1, 32) | None = Field(
        None, description="frames per latent frame, as the pass's latent node builds it")
    vae_spatial_factor: _bounded_int(1, 64) | None = Field(
        None, description="pixels per latent cell side, as the pass's latent node builds it")
    latent_channels: _bounded_int(1, 1024) | None = None


class JobParams(BaseModel):
    """What a job generates and with what: enough to estimate it before it runs."""

    pipeline_type: PipelineType
    job_type: JobType | None = None
    resolution: Resolution | None = None
    width: Side | None = None
    height: Side | None = None
    frame_count: Frames | None = None
    steps: Steps | None = None
    batch_size: Batch | None = None
    guidance_scale: Guidance | None = None
    sampler: SamplerName | None = None
    model_name: ModelName | None = None
    gpu_name: GpuName | None = None
    hostname: HostName | None = None
    passes: Annotated[list[SamplingPass], Field(max_length=MAX_PASSES)] | None = None

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str | None) -> str | None:
        if value is None:
            return None
        width, height = parse_resolution(value)
        return f"{width}x{height}"

    @model_validator(mode="after")
    def _split_resolution(self):
        if self.resolution is not None:
            width, height = (int(side) for side in self.resolution.split("x"))
            if (self.width not in (None, width)) or (self.height not in (None, height)):
                raise ValueError(f"resolution {self.resolution} disagrees with width/height "
                                 f"{self.width}x{self.height}")
            self.width, self.height = width, height
        if self.passes and self.width is None:  # a multi-pass job is described by its first
            first = self.passes[0]
            self.width, self.height, self.steps = first.width, first.height, first.steps
        return self


def estimate_params(params: Any) -> dict[str, Any]:
    """An estimate request checked and normalised: width and height split out, defaults filled
    (1 frame, batch 1, guidance 7.5). Raises :class:`RecordError` naming the field."""
    if not isinstance(params, dict):
        raise RecordError("params", f"must be a mapping, got {type(params).__name__}")
    try:
        job = JobParams.model_validate(params)
    except ValidationError as exc:
        raise RecordError.first_of(exc) from None
    if job.width is None:
        raise RecordError("resolution", "is required (WIDTHxHEIGHT)")
    if job.steps is None:
        raise RecordError("steps", "is required")
    values = job.model_dump(exclude_none=True, exclude={"resolution"})
    if job.passes:
        values["passes"] = [p.model_dump(exclude_none=True) for p in job.passes]
    values.setdefault("frame_count", 1)
    values.setdefault("batch_size", 1)
    values.setdefault("guidance_scale", 7.5)
    return values


class PhaseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: _bounded_int(0, 100_000) | None = None
    name: PhaseName
    description: _text() | None = None
    started_at: Timestamp | None = None
    seconds: Seconds | None = None


class SampleRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: _bounded_int(0, 10_000_000)
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


class JobRecord(JobParams):
    """One job as perflib stores it (``generation_performance`` columns, optional passes, phases
    and samples). ``resolution`` may stand for width and height; fields the table does not have
    are kept in ``extra_params``. Queued and running jobs may be reported as they progress."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "job_id": "job-42", "pipeline_type": "video", "job_type": "scene", "status": "success",
        "resolution": "768x768", "frame_count": 60, "steps": 25, "model_name": "animatediff",
        "gpu_name": "NVIDIA GeForce RTX 4090", "started_at": "2025-01-06T10:00:00Z",
        "finished_at": "2025-01-06T10:02:45Z", "total_seconds": 165.0,
        "phases": [{"name": "denoise", "seconds": 150.0}, {"name": "decode", "seconds": 12.0}]}]})

    job_id: JobId
    status: str
    error_type: ErrorType | None = None
    error_message: _text() | None = None
    submitted_at: Timestamp | None = None
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    queue_seconds: Seconds | None = None
    init_seconds: Seconds | None = None
    processing_seconds: Seconds | None = None
    total_seconds: Seconds | None = None
    queue_depth: _bounded_int(0, 10_000_000) | None = None
    gpu_index: _bounded_int(0, 1_024) | None = None
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
    user_rating: _bounded_float(0, 5) | None = None
    simulated: bool = Field(False, description="written by perflib.sim.simulate (demo data)")
    extra_params: JsonObject | None = None
    tags: Tags | None = Field(None, description="experiment tags, e.g. {\"ab\": \"dpmpp\"}")
    phases: Annotated[list[PhaseRecord], Field(max_length=10_000)] | None = None
    samples: Annotated[list[SampleRecord], Field(max_length=100_000)] | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> str:
        return normalise_status(value)

    @model_validator(mode="after")
    def _complete(self) -> "JobRecord":
        self._fill_timeline()
        for name, value in (self.model_extra or {}).items():
            try:
                portable_json({name: value})
            except ValueError as exc:
                raise ValueError(f"{shown(name, quoted=False)}: {exc}") from None
        return self

    def _fill_timeline(self) -> None:
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.status in FINAL_STATUSES:
            self._fill_finished_timeline()
        elif self.predicted_seconds is None and (self.width is None or self.steps is None):
            raise ValueError(f"a {self.status} job needs resolution and steps, or "
                             "predicted_seconds, so the queue can be estimated")
        if self.submitted_at is None:
            self.submitted_at = self.started_at or datetime.now(timezone.utc)

    def _fill_finished_timeline(self) -> None:
        if self.total_seconds is None and self.started_at and self.finished_at:
            seconds = (self.finished_at - self.started_at).total_seconds()
            if seconds > MAX_SECONDS:
                raise ValueError(f"finished_at is more than {MAX_SECONDS:g} s after started_at")
            self.total_seconds = round(seconds, 6)
        if self.started_at is None and self.finished_at and self.total_seconds is not None:
            self.started_at = utc_time(datetime.fromtimestamp(
                self.finished_at.timestamp() - self.total_seconds, timezone.utc))
        for name in ("started_at", "total_seconds"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required for a {self.status} job "
                                 "(or give started_at and finished_at)")
        if self.processing_seconds is None:
            self.processing_seconds = self.total_seconds

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


def salvaged_record(values: dict[str, Any]) -> dict[str, Any]:
    """A measured job as a store record even when some of its parameters are malformed: each
    refused parameter moves to ``extra_params["invalid_fields"]`` with the reason, so the job is
    kept. Raises :class:`RecordError` only when an identifying field (job id, pipeline type,
    status, timeline) is itself at fault."""
    values = dict(values)
    for _ in range(len(values)):
        try:
            return job_record(values)
        except RecordError as exc:
            name = exc.field.split(".")[0]
            if name in _IDENTITY_FIELDS or name not in values:
                exc.values = values  # what was measured, for the dead-letter file
                raise
            extra = dict(values.get("extra_params") or {}) if name != "extra_params" else {}
            invalid = dict(extra.get("invalid_fields") or {})
            invalid[name] = {"value": _json_safe(values.pop(name)), "error": exc.message}
            values["extra_params"] = {**extra, "invalid_fields": invalid}
    return job_record(values)


def _json_safe(value: Any) -> Any:
    """`value` itself when JSON keeps it as it is, else its repr (shortened)."""
    if isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value[:MAX_TEXT] if isinstance(value, str) else value
    return repr(value)[:200]


_IDENTITY_FIELDS = {"job_id", "pipeline_type", "status", "submitted_at", "started_at",
                    "finished_at", "total_seconds", "record"}


def job_record(values: dict[str, Any]) -> dict[str, Any]:
    """`values` checked as a :class:`JobRecord` and returned as a store record. Raises
    :class:`RecordError` naming the first field at fault."""
    try:
        return JobRecord.model_validate(values).as_record()
    except ValidationError as exc:
        raise RecordError.first_of(exc) from None


# -- the live reading of a GPU -------------------------------------------------------------------
Percent = _bounded_float(0, 100)


class GpuHeartbeat(BaseModel):
    """The latest reading of one GPU, sent every few seconds by a tracked process's sampler or a
    remote worker, for the live dashboard. ``gpu_index`` is the NVML index on its host (the one
    jobs record); a host without a readable GPU reports one heartbeat with ``gpu_index`` null and
    only CPU and RAM."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "hostname": "render-01", "gpu_index": 0, "gpu_name": "NVIDIA GeForce RTX 4090",
        "gpu_util_pct": 97.0, "vram_used_mb": 18432.0, "vram_total_mb": 24564.0,
        "power_w": 412.5, "temperature_c": 71.0, "cpu_pct": 23.5, "ram_used_mb": 40211.0,
        "ram_total_mb": 128000.0}]})

    hostname: Annotated[HostName, StringConstraints(min_length=1)]
    gpu_index: _bounded_int(0, 1_024) | None = None
    gpu_name: GpuName | None = None
    gpu_util_pct: Percent | None = None
    vram_used_mb: Reading | None = None
    vram_total_mb: Reading | None = None
    power_w: Reading | None = None
    temperature_c: _bounded_float(-100, 200) | None = None
    cpu_pct: Percent | None = None
    ram_used_mb: Reading | None = None
    ram_total_mb: Reading | None = None
