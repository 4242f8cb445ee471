"""The weekly report as a person sees it in headless Chromium, rendered once from a simulated
history with a known video driver regression: the summary names it with its date, tables read
as words and percentages, the contents link to their sections, every figure has a caption; and
a one-pipeline report speaks of that pipeline only."""
from __future__ import annotations

import re
import subprocess
from html import unescape
from pathlib import Path

import pytest

from perflib.config import Settings
from perflib.report.render import render_report
from perflib.sim.simulate import Incident, simulate_history
from perflib.store import Store
from tests.conftest import missing_program
from tests.test_report_data import END, REGRESSION, html_text

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> str:
    """Four weeks on four GPUs over two hosts; video 30% slower from REGRESSION on."""
    folder = tmp_path_factory.mktemp("report-page")
    url = f"sqlite:///{folder / 'perflib.db'}"
    simulate_history(Store(url, Settings(spool_dir=folder / "spool")), weeks=4, gpus=4,
                     gpus_per_host=2, seed=3, end=END, jobs_per_day=120,
                     incidents=[Incident("driver_regression", REGRESSION, None, "video",
                                         magnitude=0.3)])
    return url


@pytest.fixture(scope="module")
def page(history, tmp_path_factory) -> str:
    """The rendered report's DOM after Chromium loaded it."""
    if not CHROMIUM.exists():
        missing_program(f"{CHROMIUM} not installed (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("rendered")
    html = render_report(1, history, end_date=END.date().isoformat(), output_dir=folder)
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={folder / 'chromium'}", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout


def _section(dom: str, heading_id: str) -> str:
    """The DOM from the heading with `heading_id` to the next second-level heading."""
    start = dom.index(f'id="{heading_id}"')
    end = dom.find("<h2", start)
    return dom[start:end if end > 0 else len(dom)]


def test_summary_names_the_regression_with_its_date(page):
    summary = html_text(_section(page, "Summary"))
    match = re.search(r"Video got (\d+)% slower on (\d+ \w{3}) \((\d+) s → (\d+) s per job of "
                      r"the same work\)\.", summary)
    assert match, summary
    assert 20 <= int(match[1]) <= 40 and match[2] == f"{REGRESSION.day} {REGRESSION:%b}"
    assert int(match[4]) > int(match[3])
    assert re.search(r"[\d,]+ jobs ran this week, [▲▼] \d+% on the week before", summary)
    assert "Top bottleneck: slow generation in video jobs" in summary
    assert 3 <= summary.count(". ") + 1 <= 6


def test_tables_read_as_words_and_percentages(page):
    tables = re.findall(r"<table.*?</table>", page, flags=re.DOTALL)
    assert len(tables) >= 7
    text = html_text("".join(tables))
    for raw in ("{", "}", "…", "_", "nan", "None"):
        assert raw not in text, raw
    assert re.search(r"Succeeded \d+\.\d% \d+\.\d% [▲▼] \d+\.\d points", text)
    assert re.search(r"\d{1,2} \w{3}: \+\d+% \(\d+ s → \d+ s\)", text)  # a change-point
    for host, index in (("render-01", 0), ("render-01", 1), ("render-02", 0), ("render-02", 1)):
        assert f"{host} {index} NVIDIA" in text  # one row per GPU


def test_contents_link_to_sections_and_figures_have_captions(page):
    contents = re.search(r"<strong>Contents:</strong>(.*?)</p>", page, flags=re.DOTALL)[1]
    targets = re.findall(r'href="#([^"]+)"', contents)
    assert len(targets) == 10
    for target in targets:
        assert f'id="{target}"' in page, target
    figures = re.findall(r"<img [^>]*>", page)
    captions = re.findall(r"<em>([^<]+)</em>", page)
    assert figures and len(captions) >= len(figures)
    alternatives = [re.search(r'alt="([^"]*)"', f) for f in figures]
    assert all(a and len(a[1]) > 20 and "No description" not in a[1] for a in alternatives)
    assert "This report shows simulated data" in unescape(page)


def test_one_pipeline_report_speaks_of_that_pipeline_only(history, tmp_path):
    html = render_report(1, history, end_date=END.date().isoformat(), pipeline_type="video",
                         output_dir=tmp_path)
    assert html.name.endswith("-video.html")
    dom = html.read_text()
    summary = html_text(_section(dom, "Summary"))
    assert "video jobs ran this week" in summary and "Video got" in summary
    assert "image" not in summary.lower()
    assert "video jobs only" in html_text(dom)
    assert "image" not in html_text(_section(dom, "Against-the-period-before")).lower()
