"""`perflib import`: real shared data lands, bad rows are named by line and field, no duplicates."""
from __future__ import annotations

import json

from perflib.cli import main
from perflib.store.importer import REQUIRED_COLUMNS, import_jobs

HEADER = ",".join(REQUIRED_COLUMNS)
GOOD = "ok-{n},image,character,success,512x768,1,20,1,7.5,ddim,sd15,rtx4090,2026-11-01T10:00:0{n},2026-11-01T10:00:09,1.5"


def test_import_shared_real_data_twice(store, real_data, capsys):
    path = real_data / "diffusion-jobs.csv"
    report = import_jobs(path, store)
    assert report.rows_read == 667 and report.inserted == 667 and not report.errors
    again = import_jobs(path, store)
    assert again.inserted == 0 and again.duplicates == 667
    assert store.count() == 667
    frame = store.jobs_frame()
    first = frame[frame.job_id == "dj-7-0"].iloc[0]
    assert (first.width, first.height, first.gpu_name) == (512, 768, "cpu-2t")
    assert first.total_seconds == 0.8865
    phases = store.phases_frame(["dj-7-0"])
    assert list(phases.name) == ["preprocessing", "generation", "decoding"]
    assert main(["--database-url", store.db, "import", str(path)]) == 0
    assert "0 jobs added, 667 already stored" in capsys.readouterr().out


def test_bad_rows_are_reported_by_line_and_field_and_skipped(store, tmp_path, capsys):
    lines = [HEADER + ",vae",
             GOOD.format(n=1) + ",kl-f8",
             GOOD.format(n=2).replace("512x768", "512by768") + ",",
             GOOD.format(n=3).replace(",20,", ",-5,") + ",",
             GOOD.format(n=4).replace(",image,", ",audio,") + ",",
             GOOD.format(n=5).replace("2026-11-01T10:00:05", "yesterday") + ",",
             GOOD.format(n=6).replace(",1.5", ",") + ",",
             GOOD.format(n=7) + ","]
    path = tmp_path / "jobs.csv"
    path.write_text("\n".join(lines) + "\n")
    report = import_jobs(path, store)
    assert [(e.line, e.field) for e in report.errors] == [
        (3, "resolution"), (4, "steps"), (5, "pipeline_type"), (6, "started_at"),
        (7, "total_seconds")]
    assert report.inserted == 2
    frame = store.jobs_frame()
    assert list(frame.job_id) == ["ok-1", "ok-7"]
    assert frame.extra_params.iloc[0] == {"vae": "kl-f8"}
    assert main(["--database-url", store.db, "import", "--strict", str(path)]) == 1
    assert "line 3: resolution" in capsys.readouterr().err


def test_missing_column_is_named(store, tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text(HEADER.replace(",gpu_name", "") + "\n" + GOOD.format(n=1).replace(
        ",rtx4090", "") + "\n")
    report = import_jobs(path, store)
    assert [(e.line, e.field, e.message) for e in report.errors] == [
        (2, "gpu_name", "column is missing")]


def test_import_jsonl(store, tmp_path):
    rows = [dict(zip(REQUIRED_COLUMNS, GOOD.format(n=n).split(","))) for n in (1, 2)]
    rows[1]["steps"] = 25
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    report = import_jobs(path, store)
    assert report.inserted == 2
    assert [(e.line, e.field) for e in report.errors] == [(3, "row")]
    assert sorted(store.jobs_frame().steps) == [20, 25]
