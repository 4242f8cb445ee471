"""Fast scale data: millions of realistic simulated jobs in minutes, for `make bench-scale`.

A template of realistic jobs (:func:`perflib.sim.simulate.generate_jobs` over the whole span, with
the default incidents) is tiled: each copy is the same history on another slice of a bigger
fleet (its own hosts and GPUs), each job moved by up to half an hour, with fresh job ids
(``scale-<seed>-<copy>-<n>``, marked ``simulated``). So the hour-of-week arrival shape and the
planted incidents stay where they were, at any density. The derived cost terms are computed once
per template job (:func:`perflib.prediction.work_terms.stored_terms`). On PostgreSQL the template goes
in once (``COPY`` into temporary tables) and each copy is an ``INSERT ... SELECT`` per job table, so
rows never travel twice (about twice as fast as a ``COPY`` of every row); SQLite gets
``executemany`` in one transaction per copy with ``synchronous=OFF``. The job tables' secondary
indexes are dropped during the load and built again after it. Each job gets its phases; resource
samples are thinned: only `sample_share` of the jobs (1% by default) carry them.
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
from perflib.prediction.work_terms import stored_terms
from perflib.sim.simulate import default_incidents, generate_jobs, history_window
from perflib.store import Store, partitions, schema

TEMPLATE_JOBS = 40_000
JITTER_SECONDS = 1800           # each job moves by up to this much, either way
GPUS_PER_HOST = 8
JOBS_PER_GPU_DAY = 160          # template fleet size: busy, with queues at peak hours
MAX_SAMPLES_PER_JOB = 120
JOB_TABLES = (schema.generation_performance, schema.generation_phases, schema.resource_samples)
JOB_STARTED_AT = "job_started_at"     # phases and samples of time-partitioned job tables
# Job columns each copy gives its own values (and the template's working columns).
_PER_COPY = {"job_id", "hostname", "gpu_index", "submitted_at", "queued_at", "started_at",
             "finished_at", "gpu", "submit_us", "start_us", "finish_us"}
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
                         template_jobs: int = TEMPLATE_JOBS, sample_share: float = 0.01
                         ) -> BuildResult:
    """Fill the empty database at `url` with `jobs` simulated jobs submitted over the `days`
    before `end` (default: this hour), fast; see the module docstring for how."""
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
    indexes = loader.secondary_indexes()
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
    """PostgreSQL job tables partitioned by time need their day partitions before the load
    routes rows into them."""
    if not store.is_postgres:
        return
    with store.engine.connect() as conn:
        if partitions.table_kind(conn) != "partitioned":
            return
    partitions.ensure_partitions(store.engine, partitions.days_between(start.date(), end.date()))


# -- the template -----------------------------------------------------------------------------
@dataclasses.dataclass
class _Copy:
    """One copy of the template (or of a random part of it, the last one)."""

    number: int
    rows: np.ndarray            # the template rows in this copy
    shift_us: np.ndarray        # per template row: how far its job moves in time
    id_prefix: str              # a job's id is this and its template row
    first_gpu: int              # the copy's GPUs are these many places into the fleet


class _Template:
    """Realistic simulated jobs as arrays, ready to be tiled."""

    def __init__(self, frame: pd.DataFrame, phases: pd.DataFrame, samples: pd.DataFrame,
                 start: datetime, end: datetime, gpus: int):
        self.frame, self.phases, self.samples = frame, phases, samples
        self.start, self.end, self.gpus = start, end, gpus
        self.constant_columns = [c for c in frame.columns if c not in _PER_COPY]

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
        for number in range(math.ceil(jobs / self.size)):
            left = jobs - number * self.size
            rows = (np.arange(self.size) if left >= self.size
                    else np.sort(rng.choice(self.size, left, replace=False)))
            shift = rng.integers(-JITTER_SECONDS * _US, JITTER_SECONDS * _US, self.size)
            shift[(submit + shift < first) | (finish + shift > last)] = 0
            yield _Copy(number, rows, shift, f"scale-{seed}-{number}-", number * self.gpus)


def new_hour_records(jobs: int, start: datetime, days: int = 90, seed: int = 0,
                     template_jobs: int = TEMPLATE_JOBS) -> list[dict]:
    """Job records (for :meth:`Store.write_jobs`) of an hour of new jobs from `start`: as many
    as an average hour of a :func:`build_scale_database` history of `jobs` over `days` holds,
    drawn from its template (any hour, so the mix is the history's), moved into the hour, on
    its fleet, with fresh ids. The new jobs a daily run finds on top of the history."""
    size = min(jobs, template_jobs)
    gpus = _template_gpus(size, days)
    weeks = math.ceil(days / 7)
    template = list(generate_jobs(weeks, gpus, seed, start,
                                  default_incidents(start.date(), weeks), size / days,
                                  GPUS_PER_HOST))
    rng = np.random.default_rng([seed, 3, int(start.timestamp())])
    count = max(1, round(jobs / days / 24))
    picks = rng.integers(0, len(template), count).tolist()
    arrivals = (start.timestamp() + 3600 * np.sort(rng.random(count))).tolist()
    copies = rng.integers(0, math.ceil(jobs / size), count).tolist()
    records = []
    for n, (pick, arrival, copy) in enumerate(zip(picks, arrivals, copies)):
        record = template[pick]
        moved = timedelta(seconds=arrival - record["submitted_at"].timestamp())
        host, index = _fleet_slot(copy * gpus + _template_gpu(record["hostname"],
                                                              record["gpu_index"]))
        records.append({**record, "job_id": f"scale-{seed}-{start:%Y%m%d%H}-{n}",
                        "hostname": host, "gpu_index": index,
                        **{name: record[name] + moved for name in
                           ("submitted_at", "queued_at", "started_at", "finished_at")},
                        "phases": [{**phase, "started_at": phase["started_at"] + moved}
                                   for phase in record["phases"]]})
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
class _Staged:
    """One job table's rows in the template: per row, its job's template row (and, for jobs,
    GPU), its times (microseconds since the epoch, before any shift) and its other values."""

    table: sa.Table
    rows: np.ndarray
    gpu: np.ndarray | None
    times: dict[str, np.ndarray]
    constants: pd.DataFrame

    @property
    def columns(self) -> list[str]:
        """The columns written, in order: the job id, the GPU, the times, the rest."""
        gpu = ["hostname", "gpu_index"] if self.gpu is not None else []
        return ["job_id", *gpu, *self.times, *self.constants.columns]


def _staged(template: _Template) -> list[_Staged]:
    """The template's jobs, phases and samples as the loaders write them."""
    frame, phases, samples = template.frame, template.phases, template.samples
    job_start = frame["start_us"].to_numpy()
    submit = frame["submit_us"].to_numpy()
    jobs = _Staged(schema.generation_performance, np.arange(template.size),
                   frame["gpu"].to_numpy(),
                   {"submitted_at": submit, "queued_at": submit, "started_at": job_start,
                    "finished_at": frame["finish_us"].to_numpy(),
                    # written when it finished, as a tracker does (not all at build time)
                    "recorded_at": frame["finish_us"].to_numpy()},
                   frame[[c for c in template.constant_columns
                          if c in schema.generation_performance.c]])
    children = []
    for table, child, time_column, at_us in (
            (schema.generation_phases, phases, "started_at", phases["start_us"].to_numpy()),
            (schema.resource_samples, samples, "sampled_at",
             job_start[samples["row"].to_numpy()] + samples["offset_us"].to_numpy())):
        rows = child["row"].to_numpy()
        times = {time_column: at_us.astype(np.int64)}
        if JOB_STARTED_AT in table.c:
            times[JOB_STARTED_AT] = job_start[rows]
        values = child.drop(columns=[c for c in child.columns if c not in table.c
                                     or c in times or c == "job_id"])
        children.append(_Staged(table, rows, None, times, values))
    return [jobs, *children]


class _Loader:
    """Writes the copies of a template into the job tables."""

    def __init__(self, store: Store):
        self.store = store

    def load(self, template: _Template, copies: Iterator[_Copy]) -> tuple[int, int, int]:
        """Write every copy, one transaction each; return the jobs, phases and samples."""
        raise NotImplementedError

    def secondary_indexes(self) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the job tables' indexes that back no constraint."""
        raise NotImplementedError

    def run(self, statements: list[str]) -> None:
        """Run these statements in one transaction."""
        with self.store.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def analyze(self) -> None:
        """Bring the planner's statistics up to date where the database would do so itself."""


class _PostgresLoader(_Loader):
    """The template goes once into temporary tables (COPY); each copy is then its table of job
    shifts (COPY, two numbers a job) and one INSERT ... SELECT per job table that gives the rows
    their copy's job ids, GPUs and times, so the rows never travel again."""

    def load(self, template: _Template, copies: Iterator[_Copy]) -> tuple[int, int, int]:
        counts = [0, 0, 0]
        raw = self.store.engine.raw_connection()
        try:
            connection = raw.driver_connection
            with connection.cursor() as cursor:
                inserts = [self._stage(cursor, staged) for staged in _staged(template)]
                cursor.execute("CREATE TEMP TABLE perflib_scale_shift "
                               "(row integer PRIMARY KEY, shift_us bigint)")
                connection.commit()
                for copy in copies:
                    cursor.execute("TRUNCATE perflib_scale_shift")
                    with cursor.copy("COPY perflib_scale_shift (row, shift_us) FROM STDIN") as out:
                        out.write("".join(f"{row}\t{shift}\n" for row, shift in zip(
                            copy.rows.tolist(), copy.shift_us[copy.rows].tolist())))
                    for number, insert in enumerate(inserts):
                        cursor.execute(insert, {"prefix": copy.id_prefix,
                                                "first_gpu": copy.first_gpu})
                        counts[number] += cursor.rowcount
                    connection.commit()
        finally:
            raw.close()
        return tuple(counts)

    def _stage(self, cursor, staged: _Staged) -> str:
        """Copy one table's template rows into a temporary table; return the INSERT ... SELECT
        that writes one copy of them."""
        staging = f"perflib_scale_{staged.table.name}"
        times, values = list(staged.times), list(staged.constants.columns)
        cursor.execute(f"CREATE TEMP TABLE {staging} AS SELECT {_names(times + values)} "
                       f"FROM {_qualified(self.store, staged.table)} WITH NO DATA")
        cursor.execute(f"ALTER TABLE {staging} ADD COLUMN row integer, ADD COLUMN gpu integer")
        columns = ([_timestamps(staged.times[name], postgres=True) for name in times]
                   + [_copy_text(staged.constants[name]) for name in values]
                   + [staged.rows.astype(str).tolist(),
                      (staged.gpu if staged.gpu is not None else staged.rows).astype(str).tolist()])
        with cursor.copy(f"COPY {staging} ({_names(times + values)}, row, gpu) FROM STDIN") as out:
            out.write("".join("\t".join(row) + "\n" for row in zip(*columns)))
        cursor.execute(f"ANALYZE {staging}")
        gpu = []
        if staged.gpu is not None:     # named as _fleet_slot names them
            fleet_gpu = "(%(first_gpu)s::integer + t.gpu)"
            host = f"({fleet_gpu} / {GPUS_PER_HOST} + 1)::text"
            gpu = [f"'render-' || lpad({host}, greatest(4, length({host})), '0')",
                   f"{fleet_gpu} %% {GPUS_PER_HOST}"]
        selected = [*gpu, *(f"t.{name} + s.shift_us * interval '1 microsecond'" for name in times),
                    *(f't."{name}"' for name in values)]
        return (f"INSERT INTO {_qualified(self.store, staged.table)} ({_names(staged.columns)}) "
                f"SELECT %(prefix)s::text || t.row, {', '.join(selected)} "
                f"FROM {staging} t JOIN perflib_scale_shift s ON s.row = t.row")

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
        """VACUUM ANALYZE what autovacuum would have by now: each plain table or partition.
        Autovacuum never analyzes a partitioned parent, so neither does this."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            partitioned = partitions.table_kind(conn) == "partitioned"
            for table in JOB_TABLES:
                names = ([p.name for p in partitions.list_partitions(conn, table.name)]
                         if partitioned else [table.name])
                for name in names:
                    conn.exec_driver_sql(
                        f'VACUUM (ANALYZE) "{self.store.config.db_schema}"."{name}"')


class _SqliteLoader(_Loader):
    """executemany of tuples built per copy, synchronous=OFF, one transaction per copy."""

    def load(self, template: _Template, copies: Iterator[_Copy]) -> tuple[int, int, int]:
        tables = _staged(template)
        constants = [list(staged.constants.astype(object).where(staged.constants.notna(), None)
                          .itertuples(index=False, name=None)) for staged in tables]
        inserts = [f'INSERT INTO "{staged.table.name}" ({_names(staged.columns)}) '
                   f'VALUES ({", ".join("?" for _ in staged.columns)})' for staged in tables]
        counts = [0, 0, 0]
        connection = sqlite3.connect(self.store.url.database, isolation_level=None, timeout=60)
        try:
            connection.execute("PRAGMA synchronous=OFF")
            for copy in copies:
                in_copy = np.zeros(template.size, dtype=bool)
                in_copy[copy.rows] = True
                connection.execute("BEGIN")
                for number, staged in enumerate(tables):
                    chosen = np.flatnonzero(in_copy[staged.rows])
                    varying = _sqlite_varying(staged, chosen, copy)
                    values = constants[number]
                    connection.executemany(inserts[number], (
                        (*row, *values[position])
                        for *row, position in zip(*varying, chosen.tolist())))
                    counts[number] += len(chosen)
                connection.execute("COMMIT")
        finally:
            connection.close()
        return tuple(counts)

    def secondary_indexes(self) -> list[tuple[str, str]]:
        tables = [t.name for t in JOB_TABLES]
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({', '.join(repr(t) for t in tables)})")).all()
        return [(f'"{name}"', definition) for name, definition in rows]


def _sqlite_varying(staged: _Staged, chosen: np.ndarray, copy: _Copy) -> list[list]:
    """The job ids, GPUs (for jobs) and shifted times of the `chosen` rows in `copy`."""
    rows = staged.rows[chosen]
    varying = [[copy.id_prefix + str(row) for row in rows.tolist()]]
    if staged.gpu is not None:
        slots = [_fleet_slot(copy.first_gpu + gpu) for gpu in staged.gpu[chosen].tolist()]
        varying += [[host for host, _ in slots], [index for _, index in slots]]
    shift = copy.shift_us[rows]
    return varying + [_timestamps(times[chosen] + shift, postgres=False)
                      for times in staged.times.values()]


def _names(columns: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


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
