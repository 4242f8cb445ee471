"""Delivery of alerts to Prometheus' Alertmanager (``POST /api/v2/alerts``).

Each check (``perflib maintain``, the service's periodic check) sends the open alerts it raised,
and those a failed try left pending, as firing until ``now + PERFLIB_ALERT_RESOLVE_SECONDS``: an
alert no check raises again resolves by itself. An acknowledged alert that was delivered is sent
once more, resolved. Labels come only from what identifies an alert (its kind, pipeline, scope
and id), never from its changing sentence, so Alertmanager deduplicates a re-sent alert.

A delivery tries every configured Alertmanager at once, each with retries and backoff, all
within ``PERFLIB_ALERTMANAGER_DEADLINE_SECONDS``; it never raises. What did not arrive stays
``pending`` in ``performance_alerts`` and goes again at the next check. The standard library's
urllib does the HTTP, so ``perflib maintain`` delivers on the core install.
"""
from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

from perflib.config import Settings
from perflib.ops.alerts import mark_delivery
from perflib.store import Store, parse_timestamp
from perflib.store.schema import performance_alerts as alerts_table

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
# perflib's alert kinds and the alertname each goes by; a kind not named here (a new one)
# goes by "Perflib" + its name in CamelCase, so it still arrives.
ALERTNAMES = {
    "queue_backlog": "PerflibQueueBacklog",
    "trend_change_point": "PerflibSlowdown",
    "failure_rate_spike": "PerflibFailureSpike",
    "slow_job": "PerflibSlowJob",
    "slow_job_contention": "PerflibContention",
    "slower_than_estimated": "PerflibSlowerThanEstimated",
    "high_failure_rate": "PerflibHighFailureRate",
    "gpu_underuse": "PerflibGpuUnderuse",
    "vram_pressure": "PerflibVramPressure",
    "high_cpu_usage": "PerflibHighCpu",
    "slow_generation": "PerflibSlowGeneration",
    "initialization_overhead": "PerflibInitializationOverhead",
    "phase_imbalance": "PerflibPhaseImbalance",
}
# Scope labels, read from the alert's fingerprint ("kind|pipeline|gpu_name=…|…"): the parts
# that identify it, which a re-check cannot change.
SCOPE_LABELS = ("gpu_name", "hostname", "model_name", "job_type", "phase")
TRY_SECONDS = 5.0  # one try's timeout, at most
FIRST_BACKOFF = 0.5  # seconds before the first retry; doubles
DESCRIPTION_CHARS = 1000


def alertname(kind: str) -> str:
    """The Alertmanager alertname of an alert kind."""
    return ALERTNAMES.get(kind) or "Perflib" + "".join(
        part.capitalize() for part in kind.split("_") if part.isalnum())


def alert_labels(alert: dict, severity: str | None = None) -> dict[str, str]:
    """The labels Alertmanager deduplicates on: stable for as long as the alert is open."""
    labels = {"alertname": alertname(alert["alert_type"]),
              "severity": severity or alert["severity"], "service": "perflib",
              "alert_id": str(alert["id"])}
    if alert.get("pipeline_type"):
        labels["pipeline_type"] = str(alert["pipeline_type"])
    for part in alert["fingerprint"].split("|")[1:]:
        key, equals, value = part.partition("=")
        if equals and key in SCOPE_LABELS and value not in ("", "None"):
            labels[key] = value
    if alert["alert_type"] == "slow_job_contention":
        labels["place"] = alert["fingerprint"].split("|")[1]
    return labels


def describe_evidence(evidence: dict | None) -> str:
    """The evidence in words: "name: value" for each number or short text, bounded."""
    words = [f"{key.replace('_', ' ')}: {value}" for key, value in (evidence or {}).items()
             if isinstance(value, (int, float, str)) and not isinstance(value, bool)
             and len(str(value)) <= 200]
    text = "; ".join(words)
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS - 1] + "…"


def dashboard_url(settings: Settings) -> str:
    base = settings.external_url.rstrip("/") or f"http://{settings.host}:{settings.port}"
    return f"{base}/dashboard"


def as_posted(alert: dict, settings: Settings, now: datetime, resolved: bool = False,
              severity: str | None = None) -> dict:
    """One alert as the v2 API takes it; `resolved` ends it now."""
    started = min(parse_timestamp(alert["first_seen"]), now)
    ends = now if resolved else now + timedelta(seconds=settings.alert_resolve_seconds)
    dashboard = dashboard_url(settings)
    return {"labels": alert_labels(alert, severity),
            "annotations": {"summary": alert["message"],
                            "description": describe_evidence(alert.get("evidence")),
                            "dashboard": dashboard},
            "startsAt": _iso(started), "endsAt": _iso(ends), "generatorURL": dashboard}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def shown_url(url: str) -> str:
    """An Alertmanager URL as it may be logged or labelled: without any user or password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclass
class DeliveryOutcome:
    """What one delivery sent, and to which Alertmanagers it could not."""

    firing: int = 0
    resolved: int = 0
    delivered: bool = True
    failures: dict[str, str] = field(default_factory=dict)  # shown URL → why

    def describe(self) -> str:
        if not self.firing and not self.resolved:
            return "no alerts to deliver to Alertmanager"
        sent = f"{self.firing} firing and {self.resolved} resolved alerts"
        failed = "; ".join(f"{url}: {why}" for url, why in self.failures.items())
        if not self.delivered:
            return f"could not deliver {sent} to Alertmanager ({failed}); they go again at " \
                   "the next check"
        return f"delivered {sent} to Alertmanager" + (f" (failed: {failed})" if failed else "")


Counter = Callable[[str, bool], None]  # (shown URL, delivered) per Alertmanager per delivery


def deliver_alerts(store: Store, settings: Settings, raised: list[dict],
                   now: datetime | None = None, count: Counter | None = None,
                   post: Callable | None = None) -> DeliveryOutcome:
    """Send the alerts this check `raised`, those still pending and the resolutions due to
    every configured Alertmanager; record what arrived. Never raises."""
    now = now or datetime.now(timezone.utc)
    try:
        firing, resolving = _due(store, [a["id"] for a in raised if a.get("id")])
    except sa.exc.SQLAlchemyError as exc:
        log.warning("alert delivery: cannot read the alerts (%s)", type(exc).__name__)
        return DeliveryOutcome(delivered=False, failures={"database": type(exc).__name__})
    body = _payload(firing, resolving, settings, now)
    outcome = DeliveryOutcome(firing=len(firing), resolved=len(resolving))
    if not body:
        return outcome
    outcome.failures = send_everywhere(settings, json.dumps(body).encode(), count, post)
    outcome.delivered = len(outcome.failures) < len(settings.alertmanager_url)
    try:
        _record(store, outcome.delivered, firing, resolving, now)
    except sa.exc.SQLAlchemyError as exc:  # sent again at the next check: deduplicated there
        log.warning("alert delivery: cannot record it (%s)", type(exc).__name__)
    return outcome


def _due(store: Store, raised_ids: list[int]) -> tuple[list[dict], list[dict]]:
    """(open alerts to send firing, acknowledged alerts to send resolved)."""
    table = alerts_table
    open_ = table.c.acknowledged.is_(False) & (table.c.id.in_(raised_ids)
                                                | (table.c.delivery == "pending"))
    acknowledged = table.c.acknowledged.is_(True) & table.c.delivered_at.is_not(None) \
        & (table.c.delivery != "resolved")
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table).where(open_ | acknowledged)
                                              .order_by(table.c.id)).mappings()]
    return [r for r in rows if not r["acknowledged"]], [r for r in rows if r["acknowledged"]]


def _payload(firing: list[dict], resolving: list[dict], settings: Settings,
             now: datetime) -> list[dict]:
    """Firing alerts (with their earlier severity's labels resolved, where it changed) and
    resolutions."""
    body = [as_posted(a, settings, now) for a in firing]
    body += [as_posted(a, settings, now, resolved=True, severity=a["delivered_severity"])
             for a in firing if a["delivered_at"] is not None and a["delivered_severity"]
             and a["delivered_severity"] != a["severity"]]
    body += [as_posted(a, settings, now, resolved=True,
                       severity=a["delivered_severity"] or a["severity"]) for a in resolving]
    return body


def _record(store: Store, delivered: bool, firing: list[dict], resolving: list[dict],
            now: datetime) -> None:
    if not delivered:
        mark_delivery(store, [a["id"] for a in firing], "pending")
        return
    mark_delivery(store, [a["id"] for a in firing], "firing", now,
                  {a["id"]: a["severity"] for a in firing})
    mark_delivery(store, [a["id"] for a in resolving], "resolved", now,
                  {a["id"]: a["delivered_severity"] for a in resolving})


def send_everywhere(settings: Settings, body: bytes, count: Counter | None = None,
                    post: Callable | None = None) -> dict[str, str]:
    """POST `body` to every configured Alertmanager at once, each with retries, all within the
    deadline; returns why each that did not take it failed (by shown URL)."""
    urls = settings.alertmanager_url
    deadline = time.monotonic() + settings.alertmanager_deadline_seconds
    headers = {"Content-Type": "application/json", **_auth_headers(settings)}
    with ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="perflib-am") as pool:
        errors = list(pool.map(lambda url: send_with_retries(
            url, body, headers, deadline, post or post_once), urls))
    failures = {}
    for url, error in zip(urls, errors):
        if count is not None:
            count(shown_url(url), error is None)
        if error is not None:
            failures[shown_url(url)] = error
            log.warning("alert delivery to %s failed: %s", shown_url(url), error)
    return failures


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The Authorization header (never logged): a bearer token or basic auth."""
    if settings.alertmanager_token:
        return {"Authorization": "Bearer " + settings.alertmanager_token.get_secret_value()}
    if settings.alertmanager_user and settings.alertmanager_password:
        pair = f"{settings.alertmanager_user}:" \
               f"{settings.alertmanager_password.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def send_with_retries(url: str, body: bytes, headers: dict, deadline: float,
                      post: Callable, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Try until one POST succeeds, a refusal that a retry cannot change (4xx), or the
    deadline (monotonic seconds); None on success, else why it failed."""
    backoff, error = FIRST_BACKOFF, "no time left to try"
    while (left := deadline - clock()) > 0:
        try:
            post(url + API_PATH, body, headers, min(TRY_SECONDS, left))
            return None
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                return error
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out
            error = _reason(exc)
        if deadline - clock() <= backoff:
            break
        sleep(backoff)
        backoff *= 2
    return error


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def post_once(url: str, body: bytes, headers: dict, timeout: float) -> None:
    """One POST; raises for anything but a 2xx answer."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(65536)
