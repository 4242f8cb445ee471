"""Fast scale data: millions of realistic simulated jobs in minutes, for `make bench-scale`.

A template of realistic jobs (:func:`perflib.simulate.generate_jobs` over the whole span, with
the default incidents) is tiled: each copy is the same history on another slice of a bigger
fleet (its own hosts and GPUs), each job moved by up to half an hour, with fresh job ids
(``scale-<seed>-<copy>-<n>``, marked ``simulated``). So the hour-of-week arrival shape and the
planted incidents stay where they were, at any density. The derived cost terms are computed once
per template job (:func:`perflib.workload.stored_terms`). PostgreSQL is loaded with ``COPY``, SQLite
with ``executemany`` in big transactions (``synchronous=OFF``); the job tables' secondary indexes
are dropped during the load and built again after it, which is faster on both. Each job gets its
phases; resource samples are thinned: only `sample_share` of the jobs (1% by default) carry them.
"""
from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from datetime import datetime, timedelta
from typing import Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.config import Settings
from perflib.simulate import default_incidents, generate_jobs, history_window
from perflib.store import Store, schema
from perflib.workload import stored_terms

TEMPLATE_JOBS = 40_000
JITTER_SECONDS = 1800           # each job moves by up to this much, either way
GPUS_PER_HOST = 8
JOBS_PER_GPU_DAY = 160          # template fleet size: busy, with queues at peak hours
MAX_SAMPLES_PER_JOB = 120
JOB_TABLES = (schema.generation_performance, schema.generation_phases, schema.resource_samples)
# Columns that differ between copies of a template job; they lead every row.
VARYING = ("job_id", "hostname", "gpu_index", "submitted_at", "queued_at", "started_at",
           "finished_at")
JOB_STARTED_AT = "job_started_at"     # phases and samples of time-partitioned job tables
_US = 1_000_000


@dataclasses.dataclass
class BuildResult:
    """What :func:`build_scale_database` wrote and how long it took."""

    backend: str
    jobs: int
    phases: int
    samples: int
    template_jobs: int          # realistic jobs simulated, then tiled
    copies: int
    start: datetime             # the jobs were submitted in [start, end)
    end: datetime
    load_seconds: float         # template, rows and the load itself
    index_seconds: float        # rebuilding the secondary indexes after the load
    analyze_seconds: float      # PostgreSQL: VACUUM ANALYZE, as autovacuum would have done
    seconds: float              # the whole build

    @property
    def rows(self) -> int:
        return self.jobs + self.phases + self.samples

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def build_scale_database(url: str, jobs: int, days: int = 90, seed: int = 0,
                         end: datetime | None = None, settings: Settings | None = None,
                         template_jobs: int = TEMPLATE_JOBS, sample_share: float = 0.01,
                         drop_indexes: bool = True) -> BuildResult:
    """Fill the empty database at `url` with `jobs` simulated jobs submitted over the `days`
    before `end` (default: this hour), fast; see the module docstring for how. With
    `drop_indexes`, the job tables' secondary indexes are dropped for the load and rebuilt."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    if days < 21:
        raise ValueError("days must be at least 21 (the default incidents need three weeks)")
    if not 0 <= sample_share <= 1:
        raise ValueError("sample_share must be between 0 and 1")
    began = time.perf_counter()
    store = Store(url, settings)
    store.init_db()
    if store.count() or store.count(schema.generation_phases):
        raise ValueError(f"{store!r} already holds jobs; the scale build needs an empty database")
    template = _Template.simulate(min(jobs, template_jobs), days, seed, end, store.config,
                                  sample_share)
    _ensure_partitions(store, template.start, template.end)
    loader = _PostgresLoader(store) if store.is_postgres else _SqliteLoader(store)
    indexes = loader.secondary_indexes() if drop_indexes else []
    loader.run([f"DROP INDEX {name}" for name, _ in indexes])
    counts = loader.load(template, template.copies(jobs, seed))
    load_s = time.perf_counter() - began
    loader.run([definition for _, definition in indexes])
    index_s = time.perf_counter() - began - load_s
    loader.analyze()
    seconds = time.perf_counter() - began
    return BuildResult(store.url.get_backend_name(), *counts, template_jobs=template.size,
                       copies=math.ceil(jobs / template.size), start=template.start,
                       end=template.end, load_seconds=load_s, index_seconds=index_s,
                       analyze_seconds=seconds - load_s - index_s, seconds=seconds)


def _ensure_partitions(store: Store, start: datetime, end: datetime) -> None:
    """PostgreSQL job tables partitioned by time need their day partitions before COPY routes
    rows into them."""
    if not store.is_postgres:
        return
    try:
        from perflib.store import partitions
    except ImportError:     # a tree from before time partitioning
        return
    with store.engine.connect() as conn:
        if partitions.table_kind(conn) != "partitioned":
            return
    partitions.ensure_partitions(store.engine, partitions.days_between(start.date(), end.date()))


# -- the template -----------------------------------------------------------------------------
@dataclasses.dataclass
class _Copy:
    """One copy of the template (or of a part of it): its rows' varying values."""

    number: int
    rows: np.ndarray            # template rows in this copy
    job_ids: list[str]
    hostnames: list[str]
    gpu_indices: list[int]
    shift_us: np.ndarray        # per template row (0 for rows not in the copy)


class _Template:
    """Realistic simulated jobs as arrays, ready to be tiled."""

    def __init__(self, frame: pd.DataFrame, phases: pd.DataFrame, samples: pd.DataFrame,
                 start: datetime, end: datetime, gpus: int):
        self.frame, self.phases, self.samples = frame, phases, samples
        self.start, self.end, self.gpus = start, end, gpus
        self.constant_columns = [c for c in frame.columns if c not in VARYING
                                 and c not in ("gpu", "submit_us", "start_us", "finish_us")]

    @property
    def size(self) -> int:
        return len(self.frame)

    @classmethod
    def simulate(cls, size: int, days: int, seed: int, end: datetime | None, config: Settings,
                 sample_share: float) -> _Template:
        """About `size` jobs over `days` days (the default incidents planted), with their cost
        terms, phases and (for `sample_share` of them) resource samples."""
        weeks = math.ceil(days / 7)
        _, end = history_window(end, weeks)
        start = end - timedelta(days=days)
        gpus = _template_gpus(size, days)
        records = [r for r in generate_jobs(weeks, gpus, seed, end,
                                            default_incidents(end.date(), weeks),
                                            size / days, GPUS_PER_HOST)
                   if r["submitted_at"] >= start]
        for record, terms in zip(records, stored_terms(records, config.model_profiles)):
            record.update(terms)
        phases = pd.DataFrame([{**p, "row": i} for i, r in enumerate(records)
                               for p in r.pop("phases")])
        frame = pd.DataFrame(records)
        frame["gpu"] = [_template_gpu(host, index) for host, index
                        in zip(frame["hostname"], frame["gpu_index"])]
        for name, column in (("submit_us", "submitted_at"), ("start_us", "started_at"),
                             ("finish_us", "finished_at")):
            frame[name] = _epoch_us(frame[column])
        phases["start_us"] = _epoch_us(phases["started_at"])
        rng = np.random.default_rng([seed, 1])
        sampled = np.flatnonzero(rng.random(len(frame)) < sample_share)
        samples = _samples(frame, sampled, config.sample_interval, rng)
        return cls(frame, phases, samples, start, end, gpus)

    def copies(self, jobs: int, seed: int) -> Iterator[_Copy]:
        """Copies of the template until `jobs` jobs are reached (the last one a random part)."""
        rng = np.random.default_rng([seed, 2])
        submit, finish = self.frame["submit_us"].to_numpy(), self.frame["finish_us"].to_numpy()
        first, last = _epoch_seconds(self.start) * _US, _epoch_seconds(self.end) * _US
        gpu = self.frame["gpu"].to_numpy()
        for number in range(math.ceil(jobs / self.size)):
            left = jobs - number * self.size
            rows = (np.arange(self.size) if left >= self.size
                    else np.sort(rng.choice(self.size, left, replace=False)))
            shift = rng.integers(-JITTER_SECONDS * _US, JITTER_SECONDS * _US, self.size)
            shift[(submit + shift < first) | (finish + shift > last)] = 0
            slots = [_fleet_slot(number * self.gpus + g) for g in gpu[rows].tolist()]
            yield _Copy(number, rows, [f"scale-{seed}-{number}-{i}" for i in rows.tolist()],
                        [host for host, _ in slots], [index for _, index in slots], shift)


def new_hour_records(jobs: int, start: datetime, days: int = 90, seed: int = 0,
                     template_jobs: int = TEMPLATE_JOBS) -> list[dict]:
    """Job records (for :meth:`Store.write_jobs`) of the hour from `start`, at the density and
    on the fleet of a :func:`build_scale_database` history of `jobs` over `days`: the new jobs
    a daily run finds on top of it."""
    size = min(jobs, template_jobs)
    gpus = _template_gpus(size, days)
    hour = [r for r in generate_jobs(1, gpus, seed + 1, start + timedelta(hours=1), (),
                                     size / days, GPUS_PER_HOST) if r["submitted_at"] >= start]
    records = []
    for number in range(max(1, round(jobs / size))):
        for n, record in enumerate(hour):
            host, index = _fleet_slot(number * gpus + _template_gpu(record["hostname"],
                                                                    record["gpu_index"]))
            records.append({**record, "job_id": f"scale-{seed}-{start:%Y%m%d%H}-{number}-{n}",
                            "hostname": host, "gpu_index": index})
    return records


def _template_gpus(size: int, days: int) -> int:
    """GPUs of the template's fleet: busy, with queues at the peak hours."""
    return max(2, math.ceil(size / days / JOBS_PER_GPU_DAY))


def _template_gpu(hostname: str, gpu_index: int) -> int:
    """The number of a simulated GPU (``render-<host>``, index) in its fleet."""
    return (int(hostname.removeprefix("render-")) - 1) * GPUS_PER_HOST + gpu_index


def _fleet_slot(gpu: int) -> tuple[str, int]:
    """(hostname, gpu_index) of GPU number `gpu` of the whole tiled fleet."""
    return f"render-{gpu // GPUS_PER_HOST + 1:04d}", gpu % GPUS_PER_HOST


def _samples(frame: pd.DataFrame, sampled: np.ndarray, interval: float,
             rng: np.random.Generator) -> pd.DataFrame:
    """Resource samples every `interval` seconds over the processing of the `sampled` jobs,
    around each job's recorded averages and peaks."""
    jobs = frame.iloc[sampled]
    counts = np.clip((jobs["processing_seconds"].to_numpy() / interval).astype(int), 1,
                     MAX_SAMPLES_PER_JOB)
    row = np.repeat(sampled, counts)
    seq = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.array([], int)
    per_job = frame.iloc[row]
    noise = rng.standard_normal((len(row), 3))
    return pd.DataFrame({
        "row": row, "seq": seq,
        "offset_us": (jobs["init_seconds"].to_numpy().repeat(counts) + seq * interval) * _US,
        "gpu_util_pct": np.clip(per_job["gpu_util_avg_pct"].to_numpy() + 4 * noise[:, 0], 0, 100),
        "vram_used_mb": per_job["vram_peak_mb"].to_numpy() * (0.93 + 0.02 * noise[:, 1]),
        "vram_total_mb": per_job["vram_total_mb"].to_numpy(),
        "power_w": per_job["gpu_power_avg_w"].to_numpy() * (1 + 0.03 * noise[:, 2]),
        "temperature_c": per_job["gpu_temp_max_c"].to_numpy() - 2.0,
        "cpu_pct": per_job["cpu_avg_pct"].to_numpy(),
        "ram_used_mb": per_job["ram_peak_mb"].to_numpy(),
    })


def _epoch_us(column: pd.Series) -> np.ndarray:
    naive_utc = pd.to_datetime(column, utc=True).dt.tz_convert(None)
    return naive_utc.to_numpy().astype("datetime64[us]").astype(np.int64)


def _epoch_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


# -- loaders ----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Rows:
    """One table's rows in one copy: their varying values, column by column, and the positions
    of their constant values in the template."""

    table: sa.Table
    varying: list[list]
    constants: np.ndarray


def _copy_rows(template: _Template, copy: _Copy, postgres: bool) -> list[_Rows]:
    """The jobs, phases and samples of one copy of the template."""
    frame, size = template.frame, template.size
    shifted = {name: frame[name].to_numpy()[copy.rows] + copy.shift_us[copy.rows]
               for name in ("submit_us", "start_us", "finish_us")}
    submitted = _timestamps(shifted["submit_us"], postgres)
    jobs = _Rows(schema.generation_performance,
                 [copy.job_ids, copy.hostnames, copy.gpu_indices, submitted, submitted,
                  _timestamps(shifted["start_us"], postgres),
                  _timestamps(shifted["finish_us"], postgres)], copy.rows)
    ids_by_row = np.empty(size, dtype=object)
    ids_by_row[copy.rows] = copy.job_ids
    in_copy = np.zeros(size, dtype=bool)
    in_copy[copy.rows] = True
    start_us = frame["start_us"].to_numpy()
    children = []
    for table, child, at_us in (
            (schema.generation_phases, template.phases, template.phases["start_us"].to_numpy()),
            (schema.resource_samples, template.samples,
             start_us[template.samples["row"].to_numpy()] + template.samples["offset_us"])):
        rows = child["row"].to_numpy()
        chosen = np.flatnonzero(in_copy[rows])
        shift = copy.shift_us[rows[chosen]]
        varying = [ids_by_row[rows[chosen]].tolist(),
                   _timestamps(np.asarray(at_us, dtype=np.int64)[chosen] + shift, postgres)]
        if JOB_STARTED_AT in table.c:
            varying.append(_timestamps(start_us[rows[chosen]] + shift, postgres))
        children.append(_Rows(table, varying, chosen))
    return [jobs, *children]


def _varying_columns(table: sa.Table) -> tuple[str, ...]:
    """The columns of `table` whose values differ between copies, in the order of _copy_rows."""
    if table is schema.generation_performance:
        return VARYING
    time_column = "started_at" if table is schema.generation_phases else "sampled_at"
    return ("job_id", time_column, *((JOB_STARTED_AT,) if JOB_STARTED_AT in table.c else ()))


class _Loader:
    """Writes the copies of a template, one transaction per copy; subclasses turn the template's
    constant values into driver values once (`_constants`) and write rows (`_write`)."""

    postgres = False

    def __init__(self, store: Store):
        self.store = store

    def load(self, template: _Template, copies: Iterator[_Copy]) -> tuple[int, int, int]:
        """Write every copy; return the jobs, phases and samples written."""
        job_columns = [c for c in template.constant_columns
                       if c in schema.generation_performance.c]
        constant_frames = {
            schema.generation_performance: template.frame[job_columns],
            schema.generation_phases: template.phases[["seq", "name", "description",
                                                       "seconds"]],
            schema.resource_samples: template.samples.drop(columns=["row", "offset_us"]),
        }
        columns = {table: [*_varying_columns(table), *frame.columns]
                   for table, frame in constant_frames.items()}
        constants = {table: self._constants(frame) for table, frame in constant_frames.items()}
        counts = dict.fromkeys(JOB_TABLES, 0)
        with self._connection() as connection:
            for copy in copies:
                tables = _copy_rows(template, copy, self.postgres)
                self._write(connection, [(rows, columns[rows.table], constants[rows.table])
                                         for rows in tables])
                for rows in tables:
                    counts[rows.table] += len(rows.constants)
        return tuple(counts[table] for table in JOB_TABLES)

    def _connection(self):
        raise NotImplementedError

    def _constants(self, frame: pd.DataFrame) -> list:
        raise NotImplementedError

    def _write(self, connection, tables: list[tuple[_Rows, list[str], list]]) -> None:
        raise NotImplementedError

    def analyze(self) -> None:
        """Bring the planner's statistics up to date where the database would do so itself."""

    def secondary_indexes(self) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the job tables' indexes that back no constraint."""
        raise NotImplementedError

    def run(self, statements: list[str]) -> None:
        """Run these statements in one transaction."""
        with self.store.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)


class _PostgresLoader(_Loader):
    """COPY in text format: each template row's constant tail is rendered once."""

    postgres = True

    def _connection(self):
        return self.store.engine.raw_connection()

    def _constants(self, frame: pd.DataFrame) -> list[str]:
        columns = [_copy_text(frame[name]) for name in frame.columns]
        return ["\t".join(values) for values in zip(*columns)]

    def _write(self, connection, tables) -> None:
        raw = connection.driver_connection
        with raw.cursor() as cursor:
            for rows, columns, tails in tables:
                target = _qualified(self.store, rows.table)
                column_list = ", ".join(f'"{c}"' for c in columns)
                varying = [values if not values or isinstance(values[0], str)
                           else list(map(str, values)) for values in rows.varying]
                with cursor.copy(f"COPY {target} ({column_list}) FROM STDIN") as copy:
                    copy.write("".join(
                        "\t".join(values) + "\t" + tails[position] + "\n"
                        for *values, position in zip(*varying, rows.constants.tolist())))
        raw.commit()

    def secondary_indexes(self) -> list[tuple[str, str]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(x.relname), "
                "pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relname = ANY(:tables) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"),
                {"schema": self.store.config.db_schema,
                 "tables": [t.name for t in JOB_TABLES]}).all()
        # A partitioned table's index reads "ON ONLY": built again, it must reach the partitions.
        return [(name, definition.replace(" ON ONLY ", " ON ")) for name, definition in rows]

    def analyze(self) -> None:
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in JOB_TABLES:
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {_qualified(self.store, table)}")


class _SqliteLoader(_Loader):
    """executemany of tuples, synchronous=OFF, one transaction per copy."""

    def _connection(self):
        connection = sqlite3.connect(self.store.url.database, isolation_level=None,
                                     timeout=60)
        connection.execute("PRAGMA synchronous=OFF")
        return _Closing(connection)

    def _constants(self, frame: pd.DataFrame) -> list[tuple]:
        values = frame.astype(object).where(frame.notna(), None)
        return list(values.itertuples(index=False, name=None))

    def secondary_indexes(self) -> list[tuple[str, str]]:
        tables = [t.name for t in JOB_TABLES]
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({', '.join(repr(t) for t in tables)})")).all()
        return [(f'"{name}"', definition) for name, definition in rows]

    def _write(self, connection, tables) -> None:
        connection.execute("BEGIN")
        for rows, columns, constants in tables:
            column_list = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            connection.executemany(
                f'INSERT INTO "{rows.table.name}" ({column_list}) VALUES ({marks})',
                ((*values, *constants[position])
                 for *values, position in zip(*rows.varying, rows.constants.tolist())))
        connection.execute("COMMIT")


class _Closing:
    """A sqlite3 connection as a context manager that closes it (sqlite3's own only commits)."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, *exc_info) -> None:
        self.connection.close()


def _qualified(store: Store, table: sa.Table) -> str:
    return f'"{store.config.db_schema}"."{table.name}"'


def _copy_text(column: pd.Series) -> list[str]:
    """A column in COPY's text format: NULL as \\N, booleans t/f, text escaped."""
    if column.dtype == bool:
        return np.where(column.to_numpy(), "t", "f").tolist()
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.astype(str).tolist()
    if pd.api.types.is_float_dtype(column.dtype):
        return ["\\N" if value != value else repr(value) for value in column.tolist()]
    return ["\\N" if value is None or value != value else _escaped(value)
            if isinstance(value, str) else repr(value) if isinstance(value, float)
            else str(value) for value in column.tolist()]


def _escaped(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def _timestamps(epoch_us: np.ndarray, postgres: bool) -> list[str]:
    """Microsecond epoch times as text each driver stores as a UTC timestamp."""
    moments = np.asarray(epoch_us, dtype=np.int64).astype("datetime64[us]")
    if postgres:
        return np.datetime_as_string(moments, unit="us", timezone="UTC").tolist()
    text = np.datetime_as_string(moments, unit="us").astype("S26")
    text.view("S1").reshape(-1, 26)[:, 10] = b" "      # SQLAlchemy's SQLite format
    return text.astype("U26").tolist()
