"""Job records as the driver's rows: a table's columns and one tuple of driver values per record.

The write path's hot loop (:mod:`perflib.store.inserts`). Values are taken with one itemgetter per
record and converted a whole column at a time; the stored cost terms are computed once per job
shape and appended to each job's row as one shared tuple, so no record is copied.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from itertools import compress
from operator import attrgetter, is_not, itemgetter, methodcaller
from typing import Any, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from perflib.config import ModelProfile
from perflib.prediction.work_terms import STORED_TERMS, stored_terms
from perflib.store import schema
from perflib.store.timestamps import MAX_YEAR, MIN_YEAR, UtcDateTime, parse_timestamp

# What a job's stored cost terms depend on, besides its passes (perflib.prediction.workload).
_SHAPE_COLUMNS = ("width", "height", "frame_count", "batch_size", "steps", "guidance_scale",
                  "model_name")
_TERMS_OF = itemgetter(*STORED_TERMS)
_PASSES = methodcaller("get", "passes")
_GIVEN = partial(is_not, None)
_TZINFO = attrgetter("tzinfo")
DATETIME_COLUMNS = {table.name: {c.name for c in table.columns
                                 if isinstance(c.type, (UtcDateTime, sa.DateTime))}
                    for table in schema.metadata.tables.values()}
_JSON_COLUMNS = {table.name: {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
                 for table in schema.metadata.tables.values()}


@dataclass(frozen=True)
class Rows:
    """One table's rows as the driver takes them."""

    table: sa.Table
    columns: list[str]
    values: list[tuple]

    def column(self, name: str) -> list[Any]:
        """Every row's value of `name` (None throughout when no record had it)."""
        if name not in self.columns:
            return [None] * len(self.values)
        return list(map(itemgetter(self.columns.index(name)), self.values))

    def only(self, keep: Sequence[bool]) -> Rows:
        return Rows(self.table, self.columns, list(compress(self.values, keep)))


@dataclass(frozen=True)
class Batch:
    """A batch of job records as rows of the three job tables (no phases or samples: None)."""

    jobs: Rows
    phases: Rows | None
    samples: Rows | None

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]], profiles: Mapping[str, ModelProfile],
           aware: bool) -> Batch:
        """`records` with their cost terms; timestamps aware UTC datetimes for PostgreSQL
        (`aware`), else SQLAlchemy's SQLite text."""
        keys = set().union(*records)
        terms = cost_terms(records, profiles, "passes" in keys)
        jobs = table_rows(schema.generation_performance, records, keys, aware,
                          (STORED_TERMS, terms))
        phases, samples = (_children(table, records, field, aware) if field in keys else None
                           for table, field in ((schema.generation_phases, "phases"),
                                                (schema.resource_samples, "samples")))
        return cls(jobs, phases, samples)

    @property
    def children(self) -> list[Rows]:
        return [rows for rows in (self.phases, self.samples) if rows is not None]

    def of_jobs(self, keep: Sequence[bool]) -> Batch:
        """The jobs whose `keep` is true, with only their phases and samples."""
        jobs = self.jobs.only(keep)
        ids = set(jobs.column("job_id"))
        return Batch(jobs, *(None if rows is None else
                             rows.only([job in ids for job in rows.column("job_id")])
                             for rows in (self.phases, self.samples)))


def cost_terms(records: Sequence[Mapping[str, Any]], profiles: Mapping[str, ModelProfile],
               passes: bool = True) -> list[tuple]:
    """Each record's stored cost terms (:mod:`perflib.prediction.work_terms`), in
    ``STORED_TERMS`` order, computed once per distinct job shape: a batch repeats few.
    `passes`: whether any record may list its passes."""
    shapes = _job_shapes(records, passes)
    try:
        one_of_each = None if shapes is None else dict(zip(shapes, records))
    except TypeError:  # a value that cannot key a dict
        one_of_each = None
    if one_of_each is None:
        return list(map(_TERMS_OF, stored_terms(records, profiles)))
    by_shape = dict(zip(one_of_each, map(_TERMS_OF, stored_terms(list(one_of_each.values()),
                                                                  profiles))))
    return list(map(by_shape.__getitem__, shapes))


def _job_shapes(records: Sequence[Mapping[str, Any]], passes: bool) -> list[tuple] | None:
    """Per record, the inputs its cost terms depend on; None when a record lists its passes
    (then each record's terms are computed on their own)."""
    if passes and any(map(_PASSES, records)):
        return None
    take = itemgetter(*_SHAPE_COLUMNS)
    try:
        return list(map(take, records))
    except KeyError:
        return [tuple(map(record.get, _SHAPE_COLUMNS)) for record in records]


def table_rows(table: sa.Table, records: Sequence[Mapping[str, Any]], keys: set[str],
               aware: bool, derived: tuple[Sequence[str], list[tuple]] | None = None) -> Rows:
    """The table's columns among the records' `keys` and each record as a tuple of driver
    values; `derived` names columns computed for each record (a tuple per record), which
    stand after the others and win over a record's own values of them.

    Timestamps become UTC (aware for PostgreSQL; SQLAlchemy's text format for SQLite), JSON
    columns become text, so the driver's own executemany/COPY does the rest.
    """
    names, extra = derived or ((), None)
    wanted = [c for c in table.columns.keys() if c in keys and c not in names]
    # In the first record's order: a dict gives up its values about twice as fast so.
    columns = sorted(wanted, key=_order_in(records[0]))
    take = itemgetter(*columns) if len(columns) > 1 else (lambda record: (record[columns[0]],))
    try:
        rows = list(map(take, records))
    except KeyError:  # records with different keys: the missing ones are NULL
        rows = [tuple(map(record.get, columns)) for record in records]
    rows = _converted(table.name, columns, rows, aware)
    if extra is not None:
        rows = list(map(tuple.__add__, rows, extra))
    return Rows(table, columns + list(names), rows)


def _converted(table: str, columns: list[str], rows: list[tuple], aware: bool) -> list[tuple]:
    """`rows` with their timestamp and JSON columns in driver form, converted a column at a
    time; PostgreSQL takes UTC datetimes as they are, so a column of them is left alone."""
    converters = [(index, (_timestamps_aware if aware else _timestamps_sqlite)
                   if name in DATETIME_COLUMNS[table] else _json_texts)
                  for index, name in enumerate(columns)
                  if name in DATETIME_COLUMNS[table] or name in _JSON_COLUMNS[table]]
    if aware:
        converters = [(index, convert) for index, convert in converters
                      if convert is not _timestamps_aware
                      or not _all_utc(map(itemgetter(index), rows))]
    if not converters:
        return rows
    values = list(zip(*rows))
    for index, convert in converters:
        values[index] = convert(values[index])
    return list(zip(*values))


def _order_in(record: Mapping[str, Any]) -> Callable[[str], int]:
    """Sort key: a key's position in `record` (keys it lacks after the others)."""
    position = {key: index for index, key in enumerate(record)}
    return lambda key: position.get(key, len(position))


def _children(table: sa.Table, records: Sequence[Mapping[str, Any]], field: str, aware: bool
              ) -> Rows | None:
    """The `field` lists (phases, samples) of the records as rows of `table`, each with its
    job's id and start (the partition key on PostgreSQL); None when no record has any."""
    children = [{**child, "job_id": record["job_id"], "job_started_at": record.get("started_at")}
                for record in records if record.get(field) for child in record[field]]
    return table_rows(table, children, set().union(*children), aware) if children else None


def _all_utc(values: Iterable[Any]) -> bool:
    """Whether every value is None or a UTC datetime within the years allowed: values the
    driver takes as they are (the writer's common case). Checked without a Python loop."""
    given = list(filter(_GIVEN, values))
    return (not given or set(map(type, given)) == {datetime}
            and set(map(_TZINFO, given)) == {timezone.utc}
            and MIN_YEAR <= min(given).year and max(given).year <= MAX_YEAR)


def _timestamps_aware(values: Sequence[Any]) -> list[datetime | None]:
    """UTC-aware datetimes; those that already are and lie within the years allowed pass as
    they are."""
    utc = timezone.utc
    return [value if value is None or (type(value) is datetime and value.tzinfo is utc
                                       and MIN_YEAR <= value.year <= MAX_YEAR)
            else parse_timestamp(value) for value in values]


def _timestamps_sqlite(values: Sequence[Any]) -> list[str | None]:
    """The storage format SQLAlchemy's SQLite DateTime reads back: naive UTC with microseconds
    (an aware UTC datetime's ISO text less its ``+00:00``)."""
    return [None if value is None else value.isoformat(" ", "microseconds")[:-6]
            for value in _timestamps_aware(values)]


def _json_texts(values: Sequence[Any]) -> list[str | None]:
    return [None if value is None else json.dumps(value, default=str) for value in values]
