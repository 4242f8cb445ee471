"""Import past jobs from CSV or JSONL into the store.

Required columns: ``job_id, pipeline_type, job_type, status, resolution, frame_count, steps,
batch_size, guidance_scale, sampler, model_name, gpu_name, started_at, finished_at,
total_seconds``. Other ``generation_performance`` columns are taken as typed values
(``extra_params``, ``passes`` and ``tags`` as JSON text); a column ``<phase>_seconds`` that is
not a table column becomes a phase of the job; anything else is kept in ``extra_params``. Bad
rows are reported by line and field and skipped; good rows land; job_id is unique, so importing
a file twice adds nothing the second time.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from perflib.record import JobRecord, RecordError, job_record
from perflib.store.database import Store

REQUIRED_COLUMNS = ("job_id", "pipeline_type", "job_type", "status", "resolution",
                    "frame_count", "steps", "batch_size", "guidance_scale", "sampler",
                    "model_name", "gpu_name", "started_at", "finished_at", "total_seconds")
BATCH_ROWS = 5000


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
        except RecordError as exc:
            report.errors.append(RowError(line, exc.field, exc.message))
            continue
        if len(batch) >= BATCH_ROWS:
            report.inserted += store.write_jobs(batch)
            batch = []
    report.inserted += store.write_jobs(batch)
    return report


def job_record_from_row(raw: Mapping[str, Any]) -> dict:
    """Validate one imported row and turn it into a job record (the job record's own checks,
    as every other way into the store); raises :class:`RecordError` naming the field."""
    if "__invalid__" in raw:
        raise RecordError("row", raw["__invalid__"])
    row = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()
           if isinstance(k, str) and k.strip()}
    missing = [c for c in REQUIRED_COLUMNS if c not in row and not _split_resolution(c, row)]
    if missing:
        raise RecordError(missing[0], "column is missing")
    row = {name: value for name, value in row.items() if value not in ("", None)}
    phases = [{"seq": seq, "name": name[: -len("_seconds")], "seconds": row.pop(name)}
              for seq, name in enumerate([n for n in row if n.endswith("_seconds")
                                          and n not in JobRecord.model_fields])]
    if phases:
        row["phases"] = phases
    for name in ("extra_params", "passes", "tags"):
        if isinstance(row.get(name), str):
            row[name] = _json_cell(name, row[name])
    for name in ("started_at", "total_seconds"):
        if name not in row:
            raise RecordError(name, "value is required")
    return job_record(row)


def _split_resolution(column: str, row: Mapping[str, Any]) -> bool:
    """A row may give width and height instead of resolution."""
    return column == "resolution" and "width" in row and "height" in row


def _json_cell(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError(name, f"is not valid JSON ({exc})") from None


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
