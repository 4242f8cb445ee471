"""The monitoring files in deploy/: the Prometheus alerting rules pass `promtool check rules`
and their unit tests (`promtool test rules`), the Prometheus Operator's PrometheusRule holds the
same groups, and every metric and label the rules and the Grafana dashboard query is on the
service's real /metrics (after it has recorded jobs, a live queue and an estimate)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from perflib.config import Settings
from perflib.serve import create_app
from tests.conftest import missing_program
from tests.test_serve import ESTIMATE, job

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "perflib-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "perflib-rules.test.yml"
OPERATOR_RULE = DEPLOY / "autoscaling" / "perflib-prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "perflib-dashboard.json"
API = "/api/anime/performance"
TARGET_LABELS = {"job", "instance"}  # Prometheus adds them to every scraped series
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        missing_program("promtool not installed (apt-get install prometheus)")
    return binary


@pytest.mark.parametrize("command, path", [("check", RULES), ("test", RULE_TESTS)])
def test_promtool_passes_the_rules_and_their_tests(command, path):
    done = subprocess.run([promtool(), command, "rules", path.name], cwd=path.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_operator_rule_holds_the_same_groups():
    rule = yaml.safe_load(OPERATOR_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


# -- every metric and label a query names is on /metrics ---------------------------------------
@pytest.fixture(scope="module")
def metrics_text(tmp_path_factory) -> str:
    """/metrics after the service has taken finished jobs with estimates (15 of 25 within
    ±20%), a queued and a running job, and answered an estimate."""
    folder = tmp_path_factory.mktemp("metrics")
    settings = Settings(spool_dir=folder / "spool", alertmanager_url=("http://127.0.0.1:9",),
                        alert_check_seconds=0)
    records = [job(f"done-{n}", seconds=100.0 + n if n < 15 else 200.0, predicted_seconds=100.0,
                   minutes_ago=90 + n) for n in range(25)]
    records += [job("waiting", "queued", minutes_ago=1, predicted_seconds=100.0),
                job("busy", "running", minutes_ago=1, predicted_seconds=100.0)]
    app = create_app(f"sqlite:///{folder / 'perflib.db'}", settings)
    with TestClient(base_url="http://127.0.0.1", app=app) as client:
        assert client.post(f"{API}/record-metrics", json=records).status_code == 200
        assert client.post(f"{API}/estimate-time", json=ESTIMATE).status_code == 200
        return client.get("/metrics").text


@pytest.fixture(scope="module")
def exposed(metrics_text) -> dict[str, set[str]]:
    """Each sample name on /metrics with the labels it carries."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def unknown_names(expr: str, exposed: dict[str, set[str]], legend: str = "") -> list[str]:
    """The metrics and labels `expr` (PromQL) and its `legend` name that /metrics lacks."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values say nothing
    metrics = set(re.findall(r"\b(perflib_[a-zA-Z0-9_]+|up)\b(?!\s*\()", bare))
    labels = {name for selector in re.findall(r"\{([^}]*)\}", bare)
              for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)}
    labels |= {name.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare)
               for name in group.split(",") if name.strip()}
    labels |= set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", bare))
    labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    missing = sorted(m for m in metrics if m not in exposed and m not in PROMETHEUS_OWN)
    known = set(TARGET_LABELS)
    for metric in metrics:
        known |= exposed.get(metric, set())
    return missing + sorted(labels - known)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    queries = [(t["expr"], t.get("legendFormat", "")) for panel in board["panels"]
               for t in panel.get("targets", [])]
    queries += [(v["definition"], "") for v in board["templating"]["list"]
                if v["type"] == "query"]
    return queries


def test_the_check_finds_a_metric_or_label_that_is_not_there(exposed):
    assert unknown_names('rate(perflib_nothing_total[5m])', exposed) == ["perflib_nothing_total"]
    assert unknown_names('max by (gpu) (perflib_desired_gpus)', exposed) == ["gpu"]
    assert unknown_names('perflib_queue_jobs', exposed, "{{pipeline_type}}") == ["pipeline_type"]
    assert unknown_names('max by (pipeline_type) (perflib_desired_gpus{gpu_name="x"})',
                         exposed, "{{gpu_name}}") == []


def test_every_dashboard_query_uses_metrics_and_labels_on_metrics(exposed):
    queries = dashboard_queries()
    assert len(queries) >= 10
    used = set()
    for expr, legend in queries:
        assert unknown_names(expr, exposed, legend) == [], expr
        used |= set(re.findall(r"perflib_[a-z_]+", expr))
    for wanted in ("perflib_backlog_predicted_seconds", "perflib_desired_gpus",
                   "perflib_estimate_accuracy", "perflib_api_records_total",
                   "perflib_dead_letter_records_total", "perflib_estimate_seconds_bucket"):
        assert wanted in used


def test_every_rule_uses_metrics_and_labels_on_metrics(exposed):
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            legend = rule["annotations"]["summary"].replace("$labels.", "")
            assert unknown_names(rule["expr"], exposed, legend) == [], rule["alert"]


def test_live_accuracy_is_the_share_of_the_latest_estimated_jobs_within_20_percent(
        metrics_text):
    values = {(s.name, s.labels.get("pipeline_type")): s.value
              for family in text_string_to_metric_families(metrics_text)
              for s in family.samples}
    assert values[("perflib_estimate_accuracy", "video")] == pytest.approx(15 / 25)
    assert values[("perflib_estimate_accuracy_jobs", "video")] == 25
    assert ("perflib_estimate_accuracy", "image") not in values  # no estimated image jobs
