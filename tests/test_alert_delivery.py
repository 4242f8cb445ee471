"""Alerts delivered to a real Alertmanager (the Debian package's binary, started per test):
`perflib maintain` on a simulated history delivers its open alerts with stable labels and the
annotations people read, a second run duplicates nothing, acknowledging resolves, an
Alertmanager that is down neither fails maintenance nor loses an alert; the retries keep to
their deadline (on an injected clock) and the credentials are never logged."""
from __future__ import annotations

import logging
import sqlite3
import time
import urllib.error
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from perflib.analysis import PerformanceAnalyzer
from perflib.cli import main
from perflib.config import ConfigError, Settings, get_settings
from perflib.ops import alert_delivery
from perflib.ops.alert_delivery import (alert_labels, alertname, deliver_alerts,
                                        send_with_retries)
from perflib.ops.alerts import save_alerts
from perflib.serve import create_app
from perflib.sim.simulate import default_incidents, generate_jobs
from perflib.store import Store
from perflib.store.schema import performance_alerts
from tests.conftest import missing_program
from tools.alertmanager import Alertmanager, find_alertmanager

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
DASHBOARD = "https://perflib.example.com"
TOKEN = "am-token-never-shown"


@pytest.fixture
def alertmanager():
    binary = find_alertmanager()
    if binary is None:
        missing_program("prometheus-alertmanager not installed "
                        "(apt-get install prometheus-alertmanager)")
    server = Alertmanager(binary).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def history_db(tmp_path_factory) -> Path:
    """Three simulated weeks with the default incidents, ending at 23:00 yesterday (UTC), so
    the last week's alerts are the same whatever the hour (copied per use)."""
    path = tmp_path_factory.mktemp("history") / "perflib.db"
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) \
        - timedelta(hours=1)
    Store(f"sqlite:///{path}").write_jobs(list(generate_jobs(
        weeks=3, gpus=2, seed=0, end=end, incidents=default_incidents(end.date(), 3))))
    return path


def delivering(tmp_path: Path, url: str, **changes) -> Settings:
    return Settings(**{"spool_dir": tmp_path / "spool", "alertmanager_url": (url,),
                       "external_url": DASHBOARD, "alertmanager_deadline_seconds": 2.0,
                       **changes})


def history_store(history_db: Path, tmp_path: Path, settings: Settings) -> Store:
    target = tmp_path / "perflib.db"
    with sqlite3.connect(history_db) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return Store(f"sqlite:///{target}", settings)


def by_id(alerts: list[dict]) -> dict[str, dict]:
    found = {a["labels"]["alert_id"]: a for a in alerts}
    assert len(found) == len(alerts), "one alert held twice"
    return found


def wait_for(condition, seconds: float = 20.0):
    """Poll until `condition()` is truthy (an event in another thread), failing after
    `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def sample(client, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for metric in family.samples:
            if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                return metric.value
    return None


# -- labels and retries, no Alertmanager needed ------------------------------------------------
def test_labels_come_from_what_identifies_an_alert():
    alert = {"id": 7, "alert_type": "vram_pressure", "severity": "high", "pipeline_type": "image",
             "message": "VRAM peaks at 97%", "evidence": {"gpu_name": "changing"},
             "fingerprint": "vram_pressure|image|gpu_name=RTX 4090|model_name=sdxl"}
    labels = alert_labels(alert)
    assert labels == {"alertname": "PerflibVramPressure", "severity": "high",
                      "service": "perflib", "alert_id": "7", "pipeline_type": "image",
                      "gpu_name": "RTX 4090", "model_name": "sdxl"}
    assert alert_labels({**alert, "message": "VRAM peaks at 99%",
                         "evidence": {"gpu_name": "other"}}) == labels
    contention = {**alert, "alert_type": "slow_job_contention", "pipeline_type": None,
                  "fingerprint": "slow_job_contention|render-03|2026-01-01T10:00"}
    assert alert_labels(contention)["place"] == "render-03"
    assert "pipeline_type" not in alert_labels(contention)
    assert [alertname(k) for k in ("queue_backlog", "trend_change_point", "failure_rate_spike",
                                   "slow_job", "slow_job_contention", "some_new_kind")] == [
        "PerflibQueueBacklog", "PerflibSlowdown", "PerflibFailureSpike", "PerflibSlowJob",
        "PerflibContention", "PerflibSomeNewKind"]


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retries_back_off_and_keep_to_the_deadline():
    clock, tries = FakeClock(), []

    def refused(url, body, headers, timeout):
        tries.append(timeout)
        clock.now += 0.1  # each try costs a little
        raise ConnectionRefusedError(111, "Connection refused")

    error = send_with_retries("http://am", b"[]", {}, clock.now + 10, refused, clock,
                              clock.sleep)
    assert "Connection refused" in error
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]  # the next (8 s) would pass the deadline
    assert clock.now <= 100 + 10 and len(tries) == 5 and max(tries) <= 5.0


def test_a_refusal_is_not_retried_but_a_busy_alertmanager_is():
    clock, codes = FakeClock(), [503, 400]

    def answers(url, body, headers, timeout):
        raise urllib.error.HTTPError(url, codes.pop(0), "no", {}, None)

    assert send_with_retries("http://am", b"[]", {}, clock.now + 10, answers, clock,
                             clock.sleep) == "HTTP 400"
    assert clock.sleeps == [0.5] and not codes


def test_credentials_come_from_the_environment_and_are_never_logged(tmp_path, caplog,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_URL", "http://127.0.0.1:9/, http://127.0.0.1:9/b")
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_TOKEN", TOKEN)
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_DEADLINE_SECONDS", "0.5")
    settings = get_settings()
    assert settings.alertmanager_url == ("http://127.0.0.1:9", "http://127.0.0.1:9/b")
    assert TOKEN not in repr(settings)
    assert alert_delivery._auth_headers(settings) == {"Authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.DEBUG):
        failures = alert_delivery.send_everywhere(settings, b"[]")
    assert set(failures) == {"http://127.0.0.1:9", "http://127.0.0.1:9/b"}
    assert TOKEN not in caplog.text and "127.0.0.1:9" in caplog.text
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_URL", "http://admin:pw@am:9093")
    with pytest.raises(ConfigError, match="PERFLIB_ALERTMANAGER_URL") as refused:
        get_settings()
    assert "pw" not in str(refused.value)
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_URL", "http://am:9093")
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_USER", "perflib")
    with pytest.raises(ConfigError, match="exclude each other"):
        get_settings()
    monkeypatch.delenv("PERFLIB_ALERTMANAGER_TOKEN")
    with pytest.raises(ConfigError, match="PERFLIB_ALERTMANAGER_PASSWORD go together"):
        get_settings()
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_PASSWORD", "pw")
    basic = alert_delivery._auth_headers(get_settings())["Authorization"]
    assert basic == "Basic cGVyZmxpYjpwdw=="  # perflib:pw
    monkeypatch.setenv("PERFLIB_ALERT_RESOLVE_SECONDS", "0")
    with pytest.raises(ConfigError, match="PERFLIB_ALERT_RESOLVE_SECONDS"):
        get_settings()


# -- a real Alertmanager -----------------------------------------------------------------------
def test_maintain_delivers_once_and_acknowledging_resolves(alertmanager, history_db, tmp_path):
    settings = delivering(tmp_path, alertmanager.url)
    store = history_store(history_db, tmp_path, settings)
    plan = PerformanceAnalyzer(store, settings).maintain(retrain=False)
    open_alerts = {str(a["id"]): a for a in PerformanceAnalyzer(store, settings).alerts(
        acknowledged=False)}
    assert len(open_alerts) >= 3 and plan.delivery.delivered
    assert f"delivered {len(open_alerts)} firing and 0 resolved alerts" in plan.describe()
    held = by_id(alertmanager.alerts())
    assert held.keys() == open_alerts.keys()
    for alert_id, alert in held.items():
        stored = open_alerts[alert_id]
        assert alert["labels"] == alert_labels(stored)
        assert alert["labels"]["pipeline_type"] == stored["pipeline_type"]
        assert alert["annotations"]["summary"] == stored["message"]
        assert alert["annotations"]["dashboard"] == f"{DASHBOARD}/dashboard"
        assert alert["annotations"]["description"]
        assert alert["status"]["state"] == "active"
    assert any("gpu_name" in a["labels"] for a in held.values())
    ends = {k: a["endsAt"] for k, a in held.items()}

    PerformanceAnalyzer(store, settings).maintain(retrain=False)  # the next check
    again = by_id(alertmanager.alerts())
    assert {k: a["fingerprint"] for k, a in again.items()} == \
        {k: a["fingerprint"] for k, a in held.items()}  # same alerts, none added
    assert all(again[k]["endsAt"] > ends[k] for k in ends)  # endsAt refreshed

    acknowledged = next(iter(open_alerts))
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        assert client.post(f"{API}/alerts/{acknowledged}/acknowledge").status_code == 200
        wait_for(lambda: acknowledged not in by_id(alertmanager.alerts()))
        wait_for(lambda: sample(client, "perflib_alert_deliveries_total",
                                outcome="delivered") == 1.0)
        assert sample(client, "perflib_alerts_undelivered") == 0.0
    assert by_id(alertmanager.alerts()).keys() == open_alerts.keys() - {acknowledged}


def test_alertmanager_down_neither_fails_maintenance_nor_loses_alerts(
        alertmanager, history_db, tmp_path, monkeypatch, capsys):
    settings = delivering(tmp_path, alertmanager.url, alertmanager_deadline_seconds=1.0)
    store = history_store(history_db, tmp_path, settings)
    alertmanager.stop()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_URL", alertmanager.url)
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_DEADLINE_SECONDS", "1")
    monkeypatch.setenv("PERFLIB_ALERTMANAGER_TOKEN", TOKEN)
    assert main(["--database-url", str(store.url), "maintain", "--no-retrain"]) == 0
    printed = capsys.readouterr()
    assert "they go again at the next check" in printed.out
    assert f"{alertmanager.url}: URLError" in printed.out or "Connection refused" in printed.out
    assert TOKEN not in printed.out + printed.err
    raised = len(PerformanceAnalyzer(store, settings).alerts(acknowledged=False))
    assert raised >= 3, printed.out
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        assert sample(client, "perflib_alerts_undelivered") == raised
        client.app.state.services.alert_checks.check().result(60)  # the service's own check
        assert sample(client, "perflib_alert_deliveries_total", outcome="failed",
                      alertmanager=alertmanager.url) == 1.0

        alertmanager.start()  # up again, empty: the next check sends what waits
        outcome = deliver_alerts(store, settings, raised=[])
        assert outcome.delivered and outcome.firing == raised
        assert len(by_id(alertmanager.alerts())) == raised
        assert sample(client, "perflib_alerts_undelivered") == 0.0


def alert(name: str, severity: str = "high") -> dict:
    return {"alert_type": "failure_rate_spike", "pipeline_type": "video", "severity": severity,
            "message": f"{name}: 30% of video jobs failed", "evidence": {"failure_rate": 0.3},
            "fingerprint": f"failure_rate_spike|{name}"}


def test_a_new_severity_replaces_the_old_and_state_is_kept_per_database(alertmanager, store,
                                                                       tmp_path):
    settings = delivering(tmp_path, alertmanager.url)
    now = datetime.now(timezone.utc)
    first = save_alerts(store, [alert("a"), alert("b")], now - timedelta(days=1))
    assert deliver_alerts(store, settings, first, now).firing == 2
    changed = save_alerts(store, [alert("a", "critical")], now)
    assert deliver_alerts(store, settings, changed, now).delivered
    held = alertmanager.alerts()
    assert sorted(a["labels"]["severity"] for a in held) == ["critical", "high"]
    assert len(held) == 2  # the "high" labels of alert a were resolved, not left beside it
    PerformanceAnalyzer(store, settings).acknowledge_alert(changed[0]["id"])
    outcome = deliver_alerts(store, settings, [], now)
    assert (outcome.firing, outcome.resolved) == (0, 1)
    assert [a["labels"]["alert_id"] for a in alertmanager.alerts()] == [str(first[1]["id"])]
    assert deliver_alerts(store, settings, [], now).describe() == \
        "no alerts to deliver to Alertmanager"  # the resolution went once
    with store.engine.connect() as conn:
        states = dict(conn.execute(performance_alerts.select().with_only_columns(
            performance_alerts.c.id, performance_alerts.c.delivery)).all())
    assert states == {first[0]["id"]: "resolved", first[1]["id"]: "firing"}
