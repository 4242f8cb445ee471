"""The weekly report: papermill runs ``notebooks/10-weekly-report.ipynb``, nbconvert renders it
to ``reports/weekly-<ISO week>.html`` with the code hidden. Rendering only reads the database: an
empty one gives a report that says so (``perflib simulate --if-empty`` writes demo data).

A failed run raises :class:`ReportError` and keeps the executed notebook, with its traceback,
beside where the HTML would have gone. Files are named by :func:`report_stem`, which the service
uses too to find a report already rendered.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from perflib.analysis import PerformanceAnalyzer
from perflib.config import database_in_environment, project_root
from perflib.store import Store

log = logging.getLogger(__name__)

NOTEBOOK = Path("notebooks") / "10-weekly-report.ipynb"


class ReportError(RuntimeError):
    """The report notebook failed; ``executed`` is the notebook kept with its traceback."""

    def __init__(self, message: str, executed: Path):
        super().__init__(message)
        self.executed = executed


def iso_week(end: datetime) -> str:
    """``2026-W48`` for the ISO week holding the report period's last moment."""
    year, week, _ = (end - timedelta(microseconds=1)).isocalendar()
    return f"{year}-W{week:02d}"


def report_stem(end: datetime, weeks_back: int = 1, pipeline_type: str | None = None) -> str:
    """The report's file name without suffix: ``weekly-2026-W48``, plus ``-2w`` for a two-week
    period and ``-video`` for one pipeline. The renderer and the service both name files by it."""
    return (f"weekly-{iso_week(end)}" + (f"-{weeks_back}w" if weeks_back != 1 else "")
            + (f"-{pipeline_type}" if pipeline_type else ""))


def render_report(weeks_back: int = 1, database_url: str | None = None,
                  end_date: str | None = None, pipeline_type: str | None = None,
                  output_dir: str | Path = "reports") -> Path:
    """Run the weekly notebook and render it to HTML; returns the HTML path.

    The database reaches the notebook through the environment, never as a parameter, so a
    password cannot end up in the executed notebook kept after a failure.
    """
    root = project_root(Path(__file__).resolve().parents[1])
    _, end = PerformanceAnalyzer(Store(database_url)).window(7 * weeks_back, end_date)
    output = root / output_dir
    output.mkdir(parents=True, exist_ok=True)
    stem = report_stem(end, weeks_back, pipeline_type)
    executed = output / f"{stem}.ipynb"
    parameters = {"weeks_back": weeks_back, "pipeline_type": pipeline_type,
                  "end_date": end_date}
    try:
        with database_in_environment(database_url):
            papermill.execute_notebook(str(root / NOTEBOOK), str(executed),
                                       parameters=parameters, cwd=str(root),
                                       progress_bar=False, kernel_name="python3")
    except papermill.PapermillExecutionError as exc:
        raise ReportError(f"the report notebook failed ({exc.ename}: {exc.evalue}); the "
                          f"executed notebook is kept at {executed}", executed) from None
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = output / f"{stem}.html"
    partial = html.with_suffix(".html.partial")  # renamed into place: never a half-written report
    partial.write_text(body, encoding="utf-8")
    partial.replace(html)
    executed.unlink()
    return html
