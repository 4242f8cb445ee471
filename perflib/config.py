"""Configuration: the one module that reads environment variables and the optional `.env` file.

Every other module asks :func:`get_settings` (or takes a :class:`Settings`) instead of reading
``os.environ`` itself, so a test or a service can swap the whole configuration in one place.
"""
from __future__ import annotations

import json
import os
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pydantic
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

DEFAULT_SQLITE_PATH = Path("data") / "perflib.db"


@dataclass(frozen=True)
class Thresholds:
    """Bottleneck thresholds (the seed system's defaults)."""

    slow_image_seconds: float = 120.0
    slow_video_seconds: float = 300.0
    low_gpu_util_pct: float = 60.0
    high_cpu_pct: float = 80.0
    failure_rate: float = 0.10
    queue_seconds: float = 30.0
    high_vram_pct: float = 90.0  # a job whose VRAM peak reaches this share is near full


@dataclass(frozen=True)
class RetrainRule:
    """When a pipeline's model is retrained (``perflib maintain``, the service's schedule, a
    backtest's ``--retrain auto``): a week after its model, when live accuracy over its latest
    jobs falls below `min_accuracy`, when its latest jobs are off one way (a persistent bias, which a
step of ×1.25 gives while most still land within ±20%), or after a change-point dated past its
training window."""

    max_age_days: float = 7.0
    min_accuracy: float = 0.75  # within-20% share of the latest estimated jobs
    accuracy_jobs: int = 30  # the latest jobs live accuracy is measured over
    min_accuracy_jobs: int = 20  # ... and how many it needs before it is trusted
    bias_jobs: int = 10  # the latest estimated jobs whose median log error is their bias
    max_bias: float = 0.1  # ... beyond which (either way; log scale, ≈ ×1.105) it is due
    compare_jobs: int = 100  # latest jobs a new version must beat the active one on
    check_seconds: float = 3600.0  # the service checks the rule this often (0: never)


@dataclass(frozen=True)
class GpuProfile:
    """Published facts of one GPU model, to guess the speed of a GPU that has run no jobs from
    the GPUs that have (``PERFLIB_GPU_PROFILES``)."""

    peak_tflops: float | None = None  # dense FP16/BF16 tensor throughput
    memory_bandwidth_gbps: float | None = None

    def __post_init__(self):
        for name in ("peak_tflops", "memory_bandwidth_gbps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.peak_tflops is None and self.memory_bandwidth_gbps is None:
            raise ValueError("a GPU profile needs peak_tflops or memory_bandwidth_gbps")


@dataclass(frozen=True)
class ModelProfile:
    """Latent geometry of one denoiser, used to count true latent tokens and attention pairs.

    Defaults describe an SD-style UNet: 8x VAE, no temporal compression, no patching, attention
    within each frame.
    """

    vae_spatial_factor: int = 8
    vae_temporal_factor: int = 1
    patch_size: int = 1
    full_attention: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything perflib can be configured with; built by :func:`get_settings`."""

    database_url: str = ""
    db_schema: str = "anime_api"
    sample_interval: float = 1.0
    heartbeat_seconds: float = 5.0  # live GPU readings for the dashboard; 0 turns them off
    spool_dir: Path = Path("data") / "spool"
    spool_retry_seconds: float = 5.0  # first retry of spooled records; doubles up to a minute
    keep_resource_samples: bool = False
    cuda_visible_devices: str | None = None
    api_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8328
    allowed_hosts: tuple[str, ...] = ()  # Host names the service answers besides loopback
    retention_days: int = 90
    heuristic_refresh_seconds: float = 300.0  # how long a fitted heuristic is used
    retrain_limit: int = 6  # retrainings the service starts per window, at most
    retrain_window_seconds: float = 3600.0
    # Delivery of alerts to Alertmanager (perflib.ops.alert_delivery): none without a URL.
    alertmanager_url: tuple[str, ...] = ()
    alertmanager_token: SecretStr | None = None  # bearer token, or user and password below
    alertmanager_user: str | None = None
    alertmanager_password: SecretStr | None = None
    alertmanager_deadline_seconds: float = 10.0  # one delivery, every try and retry included
    alert_resolve_seconds: float = 3600.0  # an alert no check raises again resolves after this
    alert_check_seconds: float = 900.0  # the service raises and delivers alerts this often
    external_url: str = ""  # where people reach the service (links in alerts)
    thresholds: Thresholds = field(default_factory=Thresholds)
    retrain_rule: RetrainRule = field(default_factory=RetrainRule)
    model_profiles: Mapping[str, ModelProfile] = field(default_factory=dict)
    gpu_profiles: Mapping[str, GpuProfile] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (handy in tests and the CLI)."""
        return replace(self, **changes)

    def profile_for(self, model_name: str | None) -> ModelProfile:
        """The configured profile of `model_name`, else SD-style defaults."""
        return self.model_profiles.get(model_name or "", ModelProfile())


class ConfigError(ValueError):
    """A configuration value perflib cannot use; the message names the variable."""


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _host_names(value: str | None) -> tuple[str, ...]:
    """``PERFLIB_ALLOWED_HOSTS``: comma-separated host names (``*.example.com`` for a domain's
    subdomains), lower-cased."""
    return tuple(name.strip().lower() for name in (value or "").split(",") if name.strip())


def _urls(value: str | None) -> tuple[str, ...]:
    """``PERFLIB_ALERTMANAGER_URL``: comma-separated http(s) URLs, without trailing slashes."""
    urls = tuple(url.strip().rstrip("/") for url in (value or "").split(",") if url.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("PERFLIB_ALERTMANAGER_URL must hold http:// or https:// URLs, "
                              "comma-separated")
        if "@" in url.split("/")[2]:  # never shown: the value may hold a password
            raise ConfigError("PERFLIB_ALERTMANAGER_URL must not hold a user or password: "
                              "set PERFLIB_ALERTMANAGER_USER and _PASSWORD (or _TOKEN)")
    return urls


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


def _parse_profiles(raw: str | None) -> dict[str, ModelProfile]:
    """Parse ``PERFLIB_MODEL_PROFILES``: JSON ``{model_name: {vae_spatial_factor: 8, ...}}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {name: ModelProfile(**fields) for name, fields in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"PERFLIB_MODEL_PROFILES is not valid profile JSON: {exc}") from None


def _parse_gpu_profiles(raw: str | None) -> dict[str, GpuProfile]:
    """Parse ``PERFLIB_GPU_PROFILES``: JSON ``{gpu_name: {peak_tflops, memory_bandwidth_gbps}}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {str(name): GpuProfile(**fields) for name, fields in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"PERFLIB_GPU_PROFILES is not valid GPU profile JSON: {exc}") \
            from None


# Each variable is named after its Settings field (PERFLIB_<FIELD>, the nested rules'
# PERFLIB_THRESHOLD_<FIELD> and PERFLIB_RETRAIN_<FIELD>) but these; the defaults are the
# dataclasses' own, written once.
_RENAMED = {"keep_resource_samples": "PERFLIB_KEEP_SAMPLES",
            "cuda_visible_devices": "CUDA_VISIBLE_DEVICES"}
_NESTED = {"thresholds": (Thresholds, "PERFLIB_THRESHOLD_"),
           "retrain_rule": (RetrainRule, "PERFLIB_RETRAIN_")}
_READ_AS = (int, float, str, Path)  # other fields are read as text and parsed below
_PARSERS: dict[str, Callable[[str], Any]] = {
    "keep_resource_samples": _truthy, "allowed_hosts": _host_names,
    "api_token": lambda text: text or None, "model_profiles": _parse_profiles,
    "gpu_profiles": _parse_gpu_profiles, "alertmanager_url": _urls,
    "alertmanager_token": _secret, "alertmanager_password": _secret,
    "alertmanager_user": lambda text: text or None}


def _variables() -> dict[str, tuple[tuple[str, ...], type]]:
    """Every variable perflib reads: its name → (its path in Settings, the type it is read
    as)."""
    variables = {}
    for name, hint in typing.get_type_hints(Settings).items():
        if name in _NESTED:
            kind, prefix = _NESTED[name]
            variables.update({prefix + field_name.upper(): ((name, field_name), field_hint)
                              for field_name, field_hint in typing.get_type_hints(kind).items()})
        else:
            variables[_RENAMED.get(name, f"PERFLIB_{name.upper()}")] = (
                (name,), hint if hint in _READ_AS else str)
    return variables


VARIABLES = _variables()

# The environment and `.env` as pydantic-settings reads them (the environment wins); a
# variable that is not set stays out, so its Settings default applies.
class _Variables(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", env_file=".env")


_Environment = pydantic.create_model(
    "_Environment", __base__=_Variables,
    **{variable.lower(): (typing.Optional[kind], pydantic.Field(None, validation_alias=variable))
       for variable, (_, kind) in VARIABLES.items()})


def _read_environment(env_file: str | os.PathLike | None) -> dict[tuple[str, ...], Any]:
    """The variables set in the environment or `env_file` (default `.env`), by Settings
    path; a number that is not one is a ConfigError naming its variable."""
    try:
        environment = _Environment(_env_file=Path(env_file) if env_file else Path(".env"))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"{error['loc'][0]} must be a number, got {error['input']!r}") \
            from None
    return {VARIABLES[name.upper()][0]: value
            for name, value in environment.model_dump(exclude_unset=True).items()}


def _checked(settings: Settings) -> Settings:
    """`settings` when its values are in range, else a ConfigError naming the variable."""
    seconds = settings.heartbeat_seconds  # 0 (off) or at least the 5 s a row is written in
    if seconds != 0 and not 5.0 <= seconds <= 3600.0:
        raise ConfigError(f"PERFLIB_HEARTBEAT_SECONDS must be 0 (off) or between 5 and 3600, "
                          f"got {seconds:g}")
    _check_alerting(settings)
    rule = asdict(settings.retrain_rule)
    if not 0.0 <= rule["min_accuracy"] <= 1.0:
        raise ConfigError(f"PERFLIB_RETRAIN_MIN_ACCURACY must be between 0 and 1, got "
                          f"{rule['min_accuracy']:g}")
    negative = [name for name, value in rule.items() if value < 0]
    if negative:
        raise ConfigError(f"PERFLIB_RETRAIN_{negative[0].upper()} must not be negative")
    return settings


def _check_alerting(settings: Settings) -> None:
    """Alert delivery settings in range; a token and a password do not go together."""
    for name in ("alertmanager_deadline_seconds", "alert_resolve_seconds"):
        if not 0 < getattr(settings, name) <= 86400 * 7:
            raise ConfigError(f"PERFLIB_{name.upper()} must be above 0 and at most a week, "
                              f"got {getattr(settings, name):g}")
    if settings.alert_check_seconds < 0:
        raise ConfigError("PERFLIB_ALERT_CHECK_SECONDS must not be negative (0: never)")
    if settings.alertmanager_token and (settings.alertmanager_user
                                        or settings.alertmanager_password):
        raise ConfigError("PERFLIB_ALERTMANAGER_TOKEN and PERFLIB_ALERTMANAGER_USER/_PASSWORD "
                          "exclude each other: set one way of signing in")
    if bool(settings.alertmanager_user) != bool(settings.alertmanager_password):
        raise ConfigError("PERFLIB_ALERTMANAGER_USER and PERFLIB_ALERTMANAGER_PASSWORD go "
                          "together")


def get_settings(env_file: str | os.PathLike | None = None) -> Settings:
    """Build settings from the environment and `.env` (environment variables win)."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in _NESTED}
    for path, value in _read_environment(env_file).items():
        if len(path) == 2:
            nested[path[0]][path[1]] = value
        else:
            top[path[0]] = _PARSERS.get(path[0], lambda same: same)(value)
    nested_values = {name: _NESTED[name][0](**values) for name, values in nested.items()}
    return _checked(Settings(**top, **nested_values))


def resolve_database_url(db: str | URL | Mapping[str, Any] | None = None,
                         settings: Settings | None = None) -> URL:
    """Turn what a caller names as a database into a SQLAlchemy URL.

    Accepts a URL string or object, the seed-style dict ``{'host', 'port', 'database', 'user',
    'password'}`` (PostgreSQL), or None for the configured default: ``PERFLIB_DATABASE_URL``, else
    the SQLite file ``data/perflib.db`` under the working directory.
    """
    if isinstance(db, URL):
        return db
    if isinstance(db, Mapping):
        missing = [key for key in ("host", "database") if not db.get(key)]
        if missing:
            raise ValueError(f"database dict is missing field(s): {', '.join(missing)}")
        return URL.create(
            "postgresql+psycopg",
            username=db.get("user"),
            password=db.get("password"),
            host=db["host"],
            port=int(db["port"]) if db.get("port") else None,
            database=db["database"],
        )
    if db:
        return _normalise_driver(make_url(db))
    settings = settings or get_settings()
    if settings.database_url:
        return _normalise_driver(make_url(settings.database_url))
    return URL.create("sqlite", database=str(DEFAULT_SQLITE_PATH))


def _normalise_driver(url: URL) -> URL:
    """Plain ``postgresql://`` URLs mean psycopg 3, the driver perflib ships with."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


@contextmanager
def database_in_environment(database_url: str | None) -> Iterator[None]:
    """Name a database to child processes (a notebook kernel) through ``PERFLIB_DATABASE_URL``
    instead of an argument, so its password never lands in a file they write."""
    if not database_url:
        yield
        return
    previous = os.environ.get("PERFLIB_DATABASE_URL")
    os.environ["PERFLIB_DATABASE_URL"] = str(database_url)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PERFLIB_DATABASE_URL", None)
        else:
            os.environ["PERFLIB_DATABASE_URL"] = previous


def environment_for_child(database_url: str) -> dict[str, str]:
    """This process's environment with ``PERFLIB_DATABASE_URL`` set to `database_url`, for a
    child process: the password travels in its environment, never on its command line."""
    return {**os.environ, "PERFLIB_DATABASE_URL": str(database_url)}


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding perflib's
    pyproject.toml; notebooks run from here so relative paths mean the same everywhere."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "perflib"' in pyproject.read_text():
            return folder
    return here


def safe_url(url: URL | str) -> str:
    """The URL as text with any password replaced by ``***`` — the only form ever logged."""
    url = make_url(url) if isinstance(url, str) else url
    return url.render_as_string(hide_password=True)
