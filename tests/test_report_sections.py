"""The weekly report renders every section whatever optional fields the jobs left out (no job
type, model, GPU or phases; one job; one day), and recorded names reach its HTML inert, behind a
Content-Security-Policy that forbids script."""
from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import IPython.display
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from nbconvert.filters import markdown2html

from perflib import track_generation_job
from perflib.config import Settings
from perflib.report import plots
from perflib.report.data import busiest_gpus
from perflib.report.presentation import MAX_CATEGORIES, OTHER, people_table, safe_text
from perflib.report.summary import summary_markdown
from perflib.report.tables import bottleneck_table, gpu_table
from perflib.serve import create_app
from perflib.store import Store, flush_all
from tests import report_values as made

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

matplotlib.use("Agg")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "10-weekly-report.ipynb"
PAYLOAD = "<img src=x onerror=alert(document.domain)>"
LINK = "[x](javascript:alert(1))"
SECTIONS = 10  # the notebook's "## " headings, each followed by what it shows


def readme_history(store: Store, jobs: int) -> None:
    """The README's tracker example (no job type, no GPU on this machine), `jobs` times."""
    for n in range(jobs):
        with track_generation_job(f"job-{n}", "video", {
                "resolution": "768x768", "frame_count": 60, "steps": 25,
                "model_name": "animatediff"}, db=store) as job:
            job.mark_queued()
            job.mark_processing_start()
            job.mark_initialized()
            with job.mark_phase("denoise", "UNet loop"):
                time.sleep(0.01)
            job.mark_success()
    flush_all()


def bare_job(job_id: str = "bare", **fields) -> dict:
    """A finished job with only the fields a record needs: no job type, model, GPU, phases."""
    return {"job_id": job_id, "pipeline_type": "image", "status": "success",
            "resolution": "512x512", "steps": 20, "started_at": "2026-01-05T10:00:00Z",
            "finished_at": "2026-01-05T10:00:30Z", "total_seconds": 30.0, **fields}


HISTORIES = {
    "the README's tracker example, three jobs": lambda store: readme_history(store, 3),
    "one tracked job": lambda store: readme_history(store, 1),
    "one job with no optional field": lambda store: store.write_jobs([bare_job()]),
    "jobs with a model but no GPU or phases": lambda store: store.write_jobs(
        [bare_job(f"m-{n}", model_name="sd15", job_type=None) for n in range(4)]),
}


def notebook_pieces(database_url: str, monkeypatch) -> list[str]:
    """Run the weekly notebook's code cells in this process, as papermill would, and return
    what each display() showed, rendered (tables as HTML, Markdown as text)."""
    shown: list[str] = []

    def display(*objects, **_):
        for item in objects:
            render = getattr(item, "_repr_html_", None) or getattr(item, "_repr_markdown_")
            shown.append(render())

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(plots, "display", display)
    namespace: dict = {}
    for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), namespace)
            if "parameters" in cell["metadata"].get("tags", []):
                namespace["database_url"] = database_url
    return shown


@pytest.mark.parametrize("history", list(HISTORIES))
def test_every_section_renders_whatever_the_jobs_left_out(history, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'perflib.db'}"
    store = Store(url, Settings(spool_dir=tmp_path / "spool", sample_interval=0.05))
    HISTORIES[history](store)
    monkeypatch.chdir(tmp_path)
    pieces = notebook_pieces(url, monkeypatch)
    figures = [piece for piece in pieces if piece.startswith('<img src="data:image/png')]
    assert len(figures) >= 8  # every chart drew, none raised
    assert len(pieces) >= 2 * SECTIONS
    assert not any("Nothing to summarise" in piece for piece in pieces)


def test_recorded_text_is_inert_in_markdown_and_in_tables():
    report = made.report(bottlenecks=(made.bottleneck(
        "low_gpu_utilization", 0.9, "image", 3, {}, {"job_type": PAYLOAD, "model_name": LINK}),))
    html = markdown2html(summary_markdown(report))
    assert "<img" not in html and "<a" not in html, html
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in html
    table = people_table(pd.DataFrame({"Where": [PAYLOAD, LINK]}), caption=PAYLOAD).to_html()
    assert "<img" not in table and safe_text(PAYLOAD) in table
    assert "<img" not in markdown2html(f"*{safe_text(PAYLOAD + LINK)}*")


def test_the_served_report_shows_names_as_text_under_a_policy_without_script(tmp_path,
                                                                               monkeypatch):
    url = f"sqlite:///{tmp_path / 'perflib.db'}"
    store = Store(url, Settings(spool_dir=tmp_path / "spool"))
    store.write_jobs([bare_job(f"x-{n}", job_type=PAYLOAD, model_name=LINK, gpu_name=PAYLOAD,
                               gpu_util_avg_pct=5.0, cpu_avg_pct=95.0) for n in range(12)])
    monkeypatch.chdir(tmp_path)
    with TestClient(base_url="http://127.0.0.1",
                    app=create_app(url, Settings(spool_dir=tmp_path / "spool"))) as client:
        answer = client.get("/api/anime/performance/weekly-report", params={"format": "html"})
    assert answer.status_code == 200, answer.text
    policy = answer.headers["content-security-policy"]
    assert "script-src 'none'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in re.search(r"script-src[^;]*", policy).group(0)
    assert "<img src=x" not in answer.text and 'href="javascript' not in answer.text
    assert "&lt;img src=x onerror" in answer.text or "&#60;img src=x onerror" in answer.text
    assert len(re.findall(r"<img [^>]*src=\"data:image/png", answer.text)) >= 8  # the charts


def test_charts_and_tables_show_at_most_the_category_cap():
    many = 3 * MAX_CATEGORIES
    jobs = pd.DataFrame({"status": "success", "pipeline_type": "image",
                         "job_type": [f"type {n % many}" for n in range(4 * many)],
                         "processing_seconds": 10.0, "cpu_avg_pct": 50.0,
                         "gpu_util_avg_pct": 50.0})
    figure, axes = plt.subplots(1, 3)
    plots.time_distribution(jobs, axes[0])
    types = [label.get_text() for label in axes[0].get_xticklabels()]
    assert len(types) == MAX_CATEGORIES + 1 and OTHER in types
    shares = pd.DataFrame({"pipeline_type": "image", "job_type": jobs.job_type,
                           "phase": [f"phase {n}" for n in range(len(jobs))], "seconds": 1.0,
                           "share": 0.1})
    plots.phase_shares(shares, axes[1])
    assert len(axes[1].get_yticklabels()) == MAX_CATEGORIES + 1
    assert len(axes[1].get_legend().get_texts()) == MAX_CATEGORIES + 1
    plt.close(figure)
    gpus = pd.DataFrame({"hostname": [f"host {n}" for n in range(many)], "gpu_index": 0,
                         "gpu_name": PAYLOAD, "jobs": 1, "failed": 0,
                         "busy_seconds": [float(n) for n in range(many)], "busy_share": 0.1,
                         "gpu_util_pct": None, "relative_time": 1.0})
    folded = busiest_gpus(gpus)
    assert len(folded) == MAX_CATEGORIES + 1 and folded.hostname.iloc[-1] == OTHER
    assert folded.busy_seconds.sum() == gpus.busy_seconds.sum()
    assert gpu_table(folded).to_html().count("<tr") == MAX_CATEGORIES + 2  # with the header
    bottlenecks = [made.bottleneck("slow_generation", 0.5, "image", 1, {})] * many
    assert bottleneck_table(bottlenecks).to_html().count("<tr") == MAX_CATEGORIES + 1
