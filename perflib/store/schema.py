"""Table definitions: one SQLAlchemy Core metadata shared by SQLite and PostgreSQL.

Tables carry no schema name here; on PostgreSQL the engine maps them into ``PERFLIB_DB_SCHEMA``
(``anime_api`` by default) with ``schema_translate_map``. This is the schema at Alembic's head: a
change here needs a new revision in ``migrations/versions`` (tests/test_migrations.py compares).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from perflib.record import TEXT_LENGTHS
from perflib.store.timestamps import UtcDateTime

metadata = sa.MetaData()

Json = sa.JSON().with_variant(JSONB(), "postgresql")

generation_performance = sa.Table(
    "generation_performance",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("job_id", sa.String(TEXT_LENGTHS["job_id"]), nullable=False, unique=True),
    sa.Column("pipeline_type", sa.String(TEXT_LENGTHS["pipeline_type"]), nullable=False),
    sa.Column("job_type", sa.String(TEXT_LENGTHS["job_type"])),
    sa.Column("status", sa.String(TEXT_LENGTHS["status"]), nullable=False),
    sa.Column("error_type", sa.String(TEXT_LENGTHS["error_type"])),
    sa.Column("error_message", sa.Text),
    # generation parameters
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("frame_count", sa.Integer),
    sa.Column("steps", sa.Integer),
    sa.Column("guidance_scale", sa.Float),
    sa.Column("batch_size", sa.Integer),
    sa.Column("sampler", sa.String(TEXT_LENGTHS["sampler"])),
    sa.Column("model_name", sa.String(TEXT_LENGTHS["model_name"])),
    # where it ran
    sa.Column("hostname", sa.String(TEXT_LENGTHS["hostname"])),
    sa.Column("gpu_name", sa.String(TEXT_LENGTHS["gpu_name"])),
    sa.Column("gpu_index", sa.Integer),
    # timeline
    sa.Column("submitted_at", UtcDateTime()),
    sa.Column("queued_at", UtcDateTime()),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("queue_seconds", sa.Float),
    sa.Column("init_seconds", sa.Float),
    sa.Column("processing_seconds", sa.Float),
    sa.Column("total_seconds", sa.Float),
    sa.Column("queue_depth", sa.Integer),
    # resource aggregates over the job's lifetime
    sa.Column("gpu_util_avg_pct", sa.Float),
    sa.Column("gpu_util_max_pct", sa.Float),
    sa.Column("vram_peak_mb", sa.Float),
    sa.Column("vram_total_mb", sa.Float),
    sa.Column("gpu_power_avg_w", sa.Float),
    sa.Column("gpu_temp_max_c", sa.Float),
    sa.Column("cpu_avg_pct", sa.Float),
    sa.Column("cpu_max_pct", sa.Float),
    sa.Column("ram_peak_mb", sa.Float),
    # prediction and feedback
    sa.Column("predicted_seconds", sa.Float),
    sa.Column("user_rating", sa.Float),
    sa.Column("extra_params", Json),
    sa.Column("tags", Json),  # experiment tags {key: value} (perflib.analysis.ab, perflib compare)
    # sampling passes of a multi-pass job (hires fix, refiner): a list of pass parameters
    sa.Column("passes", Json),
    # derived cost terms, computed once at write time from the job record (perflib.record)
    sa.Column("work_units", sa.Float),
    sa.Column("attention_work", sa.Float),
    sa.Column("decode_work", sa.Float),
    # rows written by perflib.sim.simulate: purged with `perflib purge --simulated`
    sa.Column("simulated", sa.Boolean),
    sa.Column("recorded_at", UtcDateTime(), server_default=sa.func.now()),
    sa.Index("ix_generation_performance_started_at", "started_at"),
    sa.Index("ix_generation_performance_pipeline_started", "pipeline_type", "started_at"),
    sa.Index("ix_generation_performance_status_started", "status", "started_at"),
    sa.Index("ix_generation_performance_gpu_model_finished", "gpu_name", "model_name",
             "finished_at"),
)

generation_phases = sa.Table(
    "generation_phases",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("job_id", sa.String(TEXT_LENGTHS["job_id"]),
              sa.ForeignKey("generation_performance.job_id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String(TEXT_LENGTHS["phase_name"]), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("seconds", sa.Float),
    # the job's started_at, copied at write time: the partition key on PostgreSQL
    sa.Column("job_started_at", UtcDateTime()),
    sa.UniqueConstraint("job_id", "seq", name="uq_generation_phases_job_seq"),
)

resource_samples = sa.Table(
    "resource_samples",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("job_id", sa.String(TEXT_LENGTHS["job_id"]),
              sa.ForeignKey("generation_performance.job_id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("sampled_at", UtcDateTime(), nullable=False),
    sa.Column("gpu_util_pct", sa.Float),
    sa.Column("vram_used_mb", sa.Float),
    sa.Column("vram_total_mb", sa.Float),
    sa.Column("power_w", sa.Float),
    sa.Column("temperature_c", sa.Float),
    sa.Column("sm_clock_mhz", sa.Float),
    sa.Column("cpu_pct", sa.Float),
    sa.Column("process_cpu_pct", sa.Float),
    sa.Column("ram_used_mb", sa.Float),
    sa.Column("process_rss_mb", sa.Float),
    sa.Column("job_started_at", UtcDateTime()),  # as in generation_phases
    sa.UniqueConstraint("job_id", "seq", name="uq_resource_samples_job_seq"),
)

performance_prediction_models = sa.Table(
    "performance_prediction_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_type", sa.String(TEXT_LENGTHS["pipeline_type"]), nullable=False),
    sa.Column("family", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False, default=False),
    sa.Column("metrics", Json),
    sa.Column("features", Json),
    sa.Column("train_start", UtcDateTime()),
    sa.Column("train_end", UtcDateTime()),
    sa.Column("n_rows", sa.Integer),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("pipeline_type", "family", "version", name="uq_models_version"),
)

performance_trends = sa.Table(
    "performance_trends",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("pipeline_type", sa.String(TEXT_LENGTHS["pipeline_type"]), nullable=False),
    sa.Column("job_count", sa.Integer, nullable=False),
    sa.Column("success_rate", sa.Float),
    sa.Column("mean_total_seconds", sa.Float),
    sa.Column("median_total_seconds", sa.Float),
    sa.Column("p95_total_seconds", sa.Float),
    sa.Column("mean_queue_seconds", sa.Float),
    sa.Column("mean_gpu_util_pct", sa.Float),
    sa.Column("work_units", sa.Float),
    sa.Column("updated_at", UtcDateTime()),
    # sums and counts, so that any run of days can be re-aggregated (perflib.ops.aggregates)
    sa.Column("success_count", sa.Integer),
    sa.Column("total_seconds_sum", sa.Float),  # successful jobs
    sa.Column("queue_seconds_sum", sa.Float),
    sa.Column("queue_count", sa.Integer),
    sa.Column("gpu_util_sum", sa.Float),
    sa.Column("gpu_util_count", sa.Integer),
    sa.Column("attention_work", sa.Float),  # successful jobs
    # compute seconds of successful jobs, and what the stored reference cost model expects
    sa.Column("compute_seconds", sa.Float),
    sa.Column("expected_seconds", sa.Float),
    sa.Column("median_speed_ratio", sa.Float),  # median of compute ÷ expected
    sa.UniqueConstraint("day", "pipeline_type", name="uq_trends_day_pipeline"),
)

# Per day, pipeline, job type, model and GPU: the sums bottleneck detection re-aggregates over
# any window (perflib.ops.aggregates); kept with performance_trends.
performance_daily_groups = sa.Table(
    "performance_daily_groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("pipeline_type", sa.String(TEXT_LENGTHS["pipeline_type"]), nullable=False),
    sa.Column("job_type", sa.String(TEXT_LENGTHS["job_type"])),
    sa.Column("model_name", sa.String(TEXT_LENGTHS["model_name"])),
    sa.Column("gpu_name", sa.String(TEXT_LENGTHS["gpu_name"])),
    sa.Column("jobs", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer),
    sa.Column("oom", sa.Integer),
    sa.Column("vram_ratio_sum", sa.Float),
    sa.Column("vram_ratio_count", sa.Integer),
    sa.Column("gpu_util_sum", sa.Float),
    sa.Column("gpu_util_count", sa.Integer),
    sa.Column("cpu_sum", sa.Float),
    sa.Column("cpu_count", sa.Integer),
    sa.Column("queue_sum", sa.Float),
    sa.Column("queue_count", sa.Integer),
    sa.Column("queue_max", sa.Float),
    sa.Column("processing_sum", sa.Float),  # successful jobs
    sa.Column("processing_count", sa.Integer),
    sa.Column("init_total", sa.Float),
    sa.Column("timed_seconds", sa.Float),  # processing of successful jobs with work units
    sa.Column("work", sa.Float),
    sa.Column("updated_at", UtcDateTime()),
    sa.Index("ix_performance_daily_groups_day", "day"),
)

# One row (id 1): how far the daily aggregates have read (every job up to high_water_id is
# aggregated; seen_id is the highest the last refresh read) and the reference cost model per
# pipeline that their speed ratios are measured against.
aggregate_state = sa.Table(
    "perflib_aggregate_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("high_water_id", sa.BigInteger, nullable=False),
    sa.Column("seen_id", sa.BigInteger),  # the highest job id the last refresh read
    sa.Column("cost_models", Json),  # {pipeline: [a, b, c]} seconds, per work, per attention
    sa.Column("refreshed_at", UtcDateTime()),
)

performance_alerts = sa.Table(
    "performance_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_type", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("pipeline_type", sa.String(TEXT_LENGTHS["pipeline_type"])),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("evidence", Json),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("acknowledged", sa.Boolean, nullable=False, default=False),
    # Delivery to Alertmanager (perflib.ops.alert_delivery; revision 0003): "pending" after a
    # failed try (re-sent at the next check), "firing" once delivered, "resolved" once its
    # resolution was; the severity it was delivered with and when (wall clock).
    sa.Column("delivery", sa.String(16)),
    sa.Column("delivered_severity", sa.String(16)),
    sa.Column("delivered_at", UtcDateTime()),
    sa.Index("ix_performance_alerts_open", "fingerprint", "acknowledged"),
)

JOB_COLUMNS = tuple(c.name for c in generation_performance.columns
                    if c.name not in ("id", "recorded_at"))

# The latest live reading of each GPU (one row per host and GPU, overwritten at most every few
# seconds; perflib.store.heartbeats). gpu_index -1 is a host without a readable GPU.
gpu_heartbeats = sa.Table(
    "gpu_heartbeats",
    metadata,
    sa.Column("hostname", sa.String(TEXT_LENGTHS["hostname"]), primary_key=True),
    sa.Column("gpu_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("gpu_name", sa.String(TEXT_LENGTHS["gpu_name"])),
    sa.Column("reported_at", UtcDateTime(), nullable=False),
    sa.Column("gpu_util_pct", sa.Float),
    sa.Column("vram_used_mb", sa.Float),
    sa.Column("vram_total_mb", sa.Float),
    sa.Column("power_w", sa.Float),
    sa.Column("temperature_c", sa.Float),
    sa.Column("cpu_pct", sa.Float),
    sa.Column("ram_used_mb", sa.Float),
    sa.Column("ram_total_mb", sa.Float),
)
