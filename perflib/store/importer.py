"""Import past jobs from CSV or JSONL into the store.

Required columns: ``job_id, pipeline_type, job_type, status, resolution, frame_count, steps,
batch_size, guidance_scale, sampler, model_name, gpu_name, started_at, finished_at,
total_seconds``. Other ``generation_performance`` columns are taken as typed values; a column
``<phase>_seconds`` that is not a table column becomes a phase of the job; anything else is kept in
``extra_params``. Bad rows are reported by line and field and skipped; good rows land; job_id is
unique, so importing a file twice adds nothing the second time.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from perflib.store import schema
from perflib.store.database import Store, parse_timestamp
from perflib.validation import (PIPELINE_TYPES, normalise_status, parse_resolution,
                                positive_int)

REQUIRED_COLUMNS = ("job_id", "pipeline_type", "job_type", "status", "resolution",
                    "frame_count", "steps", "batch_size", "guidance_scale", "sampler",
                    "model_name", "gpu_name", "started_at", "finished_at", "total_seconds")
BATCH_ROWS = 5000

_TYPED_COLUMNS = {c.name: c.type.python_type for c in schema.generation_performance.columns
                  if c.name not in ("id", "recorded_at", "extra_params")}


@dataclass
class RowError:
    """One rejected row: where it is, which field, and why."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ImportReport:
    """What an import did: rows read, jobs added, duplicates skipped, rows rejected."""

    rows_read: int = 0
    inserted: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.rows_read - len(self.errors) - self.inserted


def import_jobs(path: str | Path, store: Store) -> ImportReport:
    """Load a CSV or JSONL file of past jobs into `store`."""
    path = Path(path)
    report = ImportReport()
    batch: list[dict] = []
    for line, raw in _read_rows(path):
        report.rows_read += 1
        try:
            batch.append(job_record_from_row(raw))
        except FieldError as exc:
            report.errors.append(RowError(line, exc.field, exc.message))
            continue
        if len(batch) >= BATCH_ROWS:
            report.inserted += store.write_jobs(batch)
            batch = []
    report.inserted += store.write_jobs(batch)
    return report


class FieldError(ValueError):
    """A value that cannot be taken, with the field it belongs to."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def job_record_from_row(raw: Mapping[str, Any]) -> dict:
    """Validate one imported row and turn it into a job record."""
    if "__invalid__" in raw:
        raise FieldError("row", raw["__invalid__"])
    row = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
    if "resolution" not in row and row.get("width") and row.get("height"):
        row["resolution"] = f"{row.pop('width')}x{row.pop('height')}"
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise FieldError(missing[0], "column is missing")
    record: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    phases: list[dict] = []
    for name, value in row.items():
        if value in ("", None):
            continue
        if name == "resolution":
            _guard(name, lambda: record.update(zip(("width", "height"), parse_resolution(value))))
        elif name in ("extra_params",):
            extra.update(json.loads(value) if isinstance(value, str) else value)
        elif name in _TYPED_COLUMNS:
            record[name] = _guard(name, lambda: _typed(name, value))
        elif name.endswith("_seconds"):
            seconds = _guard(name, lambda: _non_negative(value))
            phases.append({"seq": len(phases), "name": name[: -len("_seconds")],
                           "seconds": seconds})
        else:
            extra[name] = value
    for name in ("job_id", "pipeline_type", "status", "started_at", "total_seconds"):
        if record.get(name) is None:
            raise FieldError(name, "value is required")
    if record["pipeline_type"] not in PIPELINE_TYPES:
        raise FieldError("pipeline_type", f"must be one of {', '.join(PIPELINE_TYPES)}")
    record["status"] = _guard("status", lambda: normalise_status(record["status"]))
    if record.get("finished_at") and record["finished_at"] < record["started_at"]:
        raise FieldError("finished_at", "is before started_at")
    for name in ("frame_count", "steps", "batch_size"):
        if name in record:
            record[name] = _guard(name, lambda: positive_int(record[name], name))
    record.setdefault("submitted_at", record["started_at"])
    record.setdefault("processing_seconds", record["total_seconds"])
    if extra:
        record["extra_params"] = extra
    if phases:
        record["phases"] = phases
    return record


def _guard(field_name: str, convert):
    try:
        return convert()
    except FieldError:
        raise
    except (ValueError, TypeError) as exc:
        raise FieldError(field_name, str(exc)) from None


def _typed(name: str, value: Any) -> Any:
    kind = _TYPED_COLUMNS[name]
    if kind is str:
        return str(value)
    if kind is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    if kind is float:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        if name.endswith("_seconds") and number < 0:
            raise ValueError(f"{value!r} is negative")
        return number
    return parse_timestamp(value)


def _non_negative(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not a non-negative number of seconds")
    return number


def _read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) pairs from a CSV file or a JSON Lines file (``.jsonl``/``.ndjson``)."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    row = {"__invalid__": str(exc)}
                yield number, row if isinstance(row, dict) else {"__invalid__": "not an object"}
        return
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, row
