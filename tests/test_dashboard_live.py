"""The live dashboard: its one JSON payload and the page in headless Chromium, on a simulated
farm in a known state (4 GPUs on 2 hosts, 2 running jobs, 5 queued, one high alert)."""
from __future__ import annotations

import json
import math
import re
from statistics import median
import warnings
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from perflib.config import Settings
from perflib.serve import create_app
from perflib.sim.demo_live import HOSTS, QUEUED, RUNNING, gpu_name, seed_live_farm
from perflib.store import Store
from tools.screenshots import CHROMIUM, chromium, serving
from tests.conftest import missing_program, row_counts

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
TOKEN = "wall-screen-token"
DURATION_CASES = Path(__file__).with_name("duration_cases.json")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("farm")
    settings = Settings(spool_dir=folder / "spool", api_token=TOKEN, heartbeat_seconds=0)
    store = Store(f"sqlite:///{folder / 'farm.db'}", settings)
    return store, settings, seed_live_farm(store)


@pytest.fixture(scope="module")
def site(farm):
    store, settings, planted = farm
    with serving(create_app(store, settings)) as url:
        yield url, store, planted


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing_program(f"{CHROMIUM} not installed (apt-get install chromium)")
    with chromium() as browser:
        yield browser


def expected_starts(generated_at: str, planted_at: datetime) -> list[float]:
    """The FIFO simulation by hand: four GPUs, two of them busy for the rest of their jobs."""
    elapsed = (datetime.fromisoformat(generated_at) - planted_at).total_seconds()
    (_, *_, anim_seconds, anim_done), (_, *_, sheet_seconds, sheet_done) = RUNNING.values()
    free = sorted([0.0, 0.0, anim_seconds * (1 - anim_done) - elapsed,
                   sheet_seconds * (1 - sheet_done) - elapsed])
    starts = []
    for *_, seconds in QUEUED:
        starts.append(free.pop(0))
        free = sorted(free + [starts[-1] + seconds])
    return starts


# -- the payload ------------------------------------------------------------------------------
def test_the_payload_holds_the_farm_as_it_is(farm):
    store, settings, planted = farm
    before = row_counts(store)
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        live = client.get(f"{API}/dashboard/live").json()
    assert row_counts(store) == before  # polling never writes
    check_farm(live, planted)


@pytest.mark.postgres
def test_the_payload_reads_the_same_on_postgres(pg_url, tmp_path):
    settings = Settings(spool_dir=tmp_path / "spool", heartbeat_seconds=0)
    store = Store(pg_url, settings)
    planted = seed_live_farm(store)
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        live = client.get(f"{API}/dashboard/live").json()
    check_farm(live, planted)
    assert {series["pipeline_type"] for series in live["trends"]} == {"image", "video"}
    assert live["estimates"]["jobs"] == 100


def check_farm(live: dict, planted) -> None:
    """The payload shows the planted lanes, running jobs, queue and high alert."""
    lanes = {(lane["hostname"], lane["gpu_index"]): lane for lane in live["gpus"]}
    assert list(lanes) == [(host, index) for host in HOSTS for index in (0, 1)]
    for key, lane in lanes.items():
        assert lane["gpu_name"] == gpu_name(*key)
        assert [job["job_id"] for job in lane["running"]] == (
            [planted.running[key]] if key in planted.running else [])
        assert lane["reading"]["stale"] is False
        assert lane["reading"]["gpu_util_pct"] == (97 if key in planted.running else 0)
        assert 0 <= lane["idle_seconds_today"] <= 86_400
    anim = lanes[("render-01", 1)]["running"][0]
    assert anim["predicted_seconds"] == 540 and 0.39 < anim["progress"] < 0.5
    assert [job["job_id"] for job in live["queue"]] == list(planted.queued)
    assert [job["position"] for job in live["queue"]] == [1, 2, 3, 4, 5]
    starts = [job["expected_start_seconds"] for job in live["queue"]]
    assert starts == pytest.approx(expected_starts(live["generated_at"], planted.now), abs=0.01)
    assert live["queue_gpus"] == 4
    assert [(a["id"], a["severity"]) for a in live["alerts"] if a["severity"] == "high"] == [
        (planted.high_alert_id, "high")]


def test_the_payload_has_trends_with_the_change_point_and_estimate_accuracy(farm):
    store, settings, planted = farm
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        live = client.get(f"{API}/dashboard/live").json()
    trends = {series["pipeline_type"]: series for series in live["trends"]}
    assert set(trends) == {"image", "video"}
    video = trends["video"]
    assert 10 <= len(video["days"]) <= 14
    [change] = video["change_points"]
    assert change["change_pct"] > 15  # the planted 30% driver regression
    before = [d["normalised_seconds"] for d in video["days"] if d["day"] < change["day"]]
    after = [d["normalised_seconds"] for d in video["days"] if d["day"] >= change["day"]]
    assert median(after) > 1.15 * median(before)  # the series steps up where the mark is
    estimates = live["estimates"]
    assert estimates["jobs"] == len(estimates["recent"]) == 100
    pairs = estimates["recent"]
    within = sum(abs(p["predicted_seconds"] - p["actual_seconds"]) <= 0.2 * p["actual_seconds"]
                 for p in pairs) / len(pairs)
    assert estimates["within_20_pct"] == pytest.approx(within)


def test_an_empty_database_gives_an_empty_payload(sqlite_url, settings):
    with TestClient(base_url="http://127.0.0.1", app=create_app(sqlite_url, settings)) as client:
        live = client.get(f"{API}/dashboard/live").json()
    assert live["gpus"] == [] and live["queue"] == [] and live["alerts"] == []
    assert live["trends"] == [] and live["estimates"] == {"jobs": 0, "within_20_pct": None,
                                                          "recent": []}


# -- the page in Chromium ---------------------------------------------------------------------
def open_dashboard(browser, url: str, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{url}/dashboard")
    page.wait_for_selector("#gpus .lane")  # drawn with the queue and the alerts
    return page


def test_one_lane_per_gpu_with_the_job_running_on_it(site, browser):
    url, _, planted = site
    page = open_dashboard(browser, url)
    lanes = page.query_selector_all("#gpus .lane")
    assert [(lane.get_attribute("data-host"), lane.get_attribute("data-gpu-index"))
            for lane in lanes] == [(host, str(index)) for host in HOSTS for index in (0, 1)]
    for lane in lanes:
        key = (lane.get_attribute("data-host"), int(lane.get_attribute("data-gpu-index")))
        text = lane.inner_text()
        assert gpu_name(*key) in text
        running = [job.get_attribute("data-job-id")
                   for job in lane.query_selector_all(".job.running")]
        assert running == ([planted.running[key]] if key in planted.running else [])
        if key in planted.running:
            assert re.search(r"util 97%.*VRAM [\d.]+ GB / [\d.]+ GB.*power 405 W.*temp 71 °C",
                             text.replace("\n", " ")), text
            assert re.search(r" of ~(\d+ s|[\d.]+ min)", text), text
        else:
            assert re.search(r"no job · idle [\d.]+ (s|min|h) today", text), text
    width = page.eval_on_selector('.lane[data-host="render-01"][data-gpu-index="1"] '
                                  '.progress div', "bar => bar.style.width")
    assert 38 <= int(width.rstrip("%")) <= 50  # 40% of its 9-minute estimate is done
    page.close()


def test_the_queue_in_order_with_start_times(site, browser):
    url, _, planted = site
    page = open_dashboard(browser, url)
    rows = page.query_selector_all("#queue li[data-job-id]")
    assert [row.get_attribute("data-job-id") for row in rows] == list(planted.queued)
    texts = [row.inner_text().replace("\n", " ") for row in rows]
    assert [text.split()[0] for text in texts] == ["#1", "#2", "#3", "#4", "#5"]
    assert "starts now" in texts[0] and "starts now" in texts[1]
    waits = [re.search(r"starts in (\d+) s \(", text) for text in texts[2:]]
    assert all(waits), texts
    seconds = [int(match.group(1)) for match in waits]
    assert seconds == sorted(seconds) and 15 <= seconds[0] <= 29 and 75 <= seconds[1] <= 89
    assert seconds[2] == 96  # behind queue-01 (96 s), which started at once
    assert len(page.query_selector_all("#queue-timeline rect.job")) == 5
    assert "5 waiting on 4 GPUs" in page.inner_text("#queue-summary")
    page.close()


def test_the_high_alert_is_listed_and_acknowledged_with_the_token(site, browser):
    url, store, planted = site
    page = open_dashboard(browser, url)
    alert = page.query_selector(f'#alerts li[data-alert-id="{planted.high_alert_id}"]')
    assert "high" in alert.inner_text().lower() and "Video jobs waited 14 min" in alert.inner_text()
    prompts = []

    def answer(dialog):
        prompts.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    alert.query_selector("button").click()
    page.wait_for_selector(f'#alerts li[data-alert-id="{planted.high_alert_id}"]',
                           state="detached")
    assert len(prompts) == 1 and "token" in prompts[0].lower()
    assert page.evaluate("sessionStorage.getItem('perflib-api-token')") == TOKEN
    acknowledged = httpx.get(f"{url}{API}/alerts", params={"acknowledged": True}).json()
    assert [a["id"] for a in acknowledged["alerts"]] == [planted.high_alert_id]
    # The next acknowledgement uses the kept token: no second question.
    other = page.query_selector("#alerts li[data-alert-id] button")
    other_id = other.get_attribute("data-alert-id")
    other.click()
    page.wait_for_selector(f'#alerts li[data-alert-id="{other_id}"]', state="detached")
    assert len(prompts) == 1
    assert "No open alerts." in page.inner_text("#alerts")
    page.close()


def test_a_wrong_token_is_refused_said_and_forgotten(tmp_path, browser):
    settings = Settings(spool_dir=tmp_path / "spool", api_token=TOKEN, heartbeat_seconds=0)
    store = Store(f"sqlite:///{tmp_path / 'farm.db'}", settings)
    planted = seed_live_farm(store)
    with serving(create_app(store, settings)) as url:
        page = open_dashboard(browser, url)
        page.on("dialog", lambda dialog: dialog.accept("guess"))
        page.click(f'#alerts button[data-alert-id="{planted.high_alert_id}"]')
        page.wait_for_selector("#alerts-message.error")
        assert "a valid bearer token is required" in page.inner_text("#alerts-message")
        assert page.evaluate("sessionStorage.getItem('perflib-api-token')") is None
        assert page.query_selector(f'#alerts li[data-alert-id="{planted.high_alert_id}"]')
        alerts = httpx.get(f"{url}{API}/alerts").json()["alerts"]
        page.close()
    assert alerts and not any(alert["acknowledged"] for alert in alerts)


def test_trends_estimates_and_the_day_are_drawn(site, browser):
    url, _, _ = site
    page = open_dashboard(browser, url)
    page.wait_for_selector("#jobs-per-hour rect.bar", state="attached")
    video = page.query_selector('#trends .trend[data-pipeline="video"]')
    assert video.query_selector("polyline") and video.query_selector("line.change")
    assert re.search(r"video \d+ \w{3}: \+\d+% \(\d+ s → \d+ s\)", page.inner_text("#trends"))
    assert re.fullmatch(r"\d+%", page.inner_text("#within-20"))
    assert len(page.query_selector_all("#estimates-chart circle")) == 100
    assert page.query_selector_all("#jobs-per-hour text")  # the axis says how many
    text = page.inner_text("body")
    assert not re.search(r"(?<![\d.])0(\.0)? (min|h)\b|NaN|undefined|null", text), text
    page.close()


def test_readable_on_a_phone(site, browser):
    url, _, _ = site
    page = open_dashboard(browser, url, width=390)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 390  # nothing pushes the page sideways
    page.close()


# -- one duration rule in Python and in the page -----------------------------------------------
def duration_cases() -> list[tuple[float | None, str]]:
    return [tuple(case) for case in json.loads(DURATION_CASES.read_text())]


def test_the_page_formats_durations_as_the_report_does(site, browser):
    from perflib.units import format_duration

    url, _, _ = site
    page = open_dashboard(browser, url)
    cases = duration_cases()
    shown = page.evaluate("cases => cases.map(([seconds]) => formatDuration(seconds))", cases)
    assert shown == [expected for _, expected in cases]
    assert [format_duration(seconds) for seconds, _ in cases] == shown
    page.close()


def test_duration_cases_cover_every_unit_boundary():
    seconds = [value for value, _ in duration_cases() if value is not None]
    for boundary in (1, 10, 180, 600, 5400, 36000):
        assert any(math.isclose(value, boundary) for value in seconds)
        assert any(boundary - 1 < value < boundary for value in seconds)
    assert {text.split()[-1] for _, text in duration_cases()} >= {"s", "min", "h", "–"}
