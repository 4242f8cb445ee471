"""Jobs far slower than expected: found on real stragglers, grouped into one contention alert,
raised only by analysis runs, shown by the report, and kept out of the predictor's drift."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from perflib.analysis import PerformanceAnalyzer
from perflib.analysis import anomalies
from perflib.analysis.anomalies import far_slower_than_expected, straggler_alerts
from perflib.config import Settings
from perflib.prediction.features import build_features, outcome_seconds
from perflib.prediction.models import CostModel
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store
from perflib.store.importer import import_jobs
from tests.conftest import REAL_DATA, row_counts

DATA = REAL_DATA / "diffusion-jobs.csv"
WINDOW = (datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))


@pytest.fixture
def unet_store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'perflib.db'}", Settings(spool_dir=tmp_path / "spool"))
    import_jobs(DATA, store)
    return store


def _reference_stragglers(store: Store) -> set[str]:
    """The issue's reference: jobs whose time is at least 3× what a cost model fitted robustly
    (trimmed non-negative least squares on relative error, per GPU and model) on the whole file
    expects for their settings."""
    jobs = PerformancePredictor(store).training_data()
    features = build_features(jobs)
    seconds = outcome_seconds(jobs)
    ratio = seconds / CostModel().fit(features, seconds).predict(features)
    return set(jobs.job_id[ratio >= 3])


def _precision_recall(found: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


@pytest.mark.parametrize("stored_model", [False, True], ids=["fitted-on-the-jobs",
                                                              "stored-model"])
@pytest.mark.slow
def test_real_stragglers_are_found_with_precision_and_recall(unet_store, stored_model):
    truth = _reference_stragglers(unet_store)
    assert len(truth) >= 5  # the file's contention episode
    if stored_model:
        predictor = PerformancePredictor(unet_store)
        predictor.train_model(None, "linear_regression")
        predictor.save_model_to_db(None, "linear_regression")
    slow = far_slower_than_expected(unet_store, *WINDOW)
    precision, recall = _precision_recall(set(slow.job_id), truth)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert (slow.factor >= 3).all() and (slow.expected_seconds < slow.actual_seconds).all()


@pytest.mark.slow
def test_the_burst_is_one_alert_naming_the_gpu_and_the_window(unet_store):
    truth = _reference_stragglers(unet_store)
    jobs = unet_store.jobs_frame().set_index("job_id").loc[sorted(truth)]
    (alert,) = straggler_alerts(unet_store, *WINDOW)  # a burst: no slow_job alert too
    first, last = jobs.started_at.min(), jobs.finished_at.max()
    assert alert["alert_type"] == "slow_job_contention"
    assert alert["message"].startswith(f"contention on cpu-2t: {len(truth)} jobs ")
    assert f"between {first:%Y-%m-%d %H:%M} and {last:%H:%M} UTC" in alert["message"]
    assert set(alert["evidence"]["job_ids"]) == truth
    assert alert["evidence"]["min_factor"] >= 3


def test_alerts_are_raised_by_analysis_runs_and_shown_by_the_report_without_writing(
        unet_store):
    analyzer = PerformanceAnalyzer(unet_store)
    before = row_counts(unet_store)
    report = analyzer.generate_performance_report(days_back=7)
    assert row_counts(unet_store) == before  # a report only reads
    shown = [a for a in report["alerts"] if a["alert_type"] == "slow_job_contention"]
    assert len(shown) == 1 and shown[0]["id"] is None
    stored = [a for a in analyzer.detect_alerts(days_back=7)
              if a["alert_type"] == "slow_job_contention"]
    assert len(stored) == 1 and stored[0]["message"] == shown[0]["message"]
    analyzer.detect_alerts(days_back=7)  # again: the open alert is refreshed, not duplicated
    assert len([a for a in analyzer.alerts() if a["alert_type"] == "slow_job_contention"]) == 1


@pytest.mark.slow
def test_scattered_stragglers_are_alerted_each_on_its_own(unet_store):
    """Single slow jobs far apart are not contention: each is a slow_job alert with its job id,
    factor, expected and actual seconds, its severity by the factor."""
    truth = sorted(_reference_stragglers(unet_store))
    keep = {truth[0], truth[-1]}
    with unet_store.engine.begin() as conn:
        from perflib.store.schema import generation_performance as jobs
        conn.execute(jobs.delete().where(jobs.c.job_id.in_(set(truth) - keep)))
    slow = far_slower_than_expected(unet_store, *WINDOW).set_index("job_id")
    assert set(slow.index) == keep
    alerts = straggler_alerts(unet_store, *WINDOW)
    assert {a["alert_type"] for a in alerts} == {"slow_job"}
    assert {a["evidence"]["job_id"] for a in alerts} == keep
    for alert in alerts:
        job = slow.loc[alert["evidence"]["job_id"]]
        assert alert["evidence"]["factor"] == pytest.approx(job.factor, abs=0.01)
        assert alert["evidence"]["expected_seconds"] == pytest.approx(job.expected_seconds,
                                                                      abs=1e-3)
        assert alert["evidence"]["actual_seconds"] == pytest.approx(job.actual_seconds, abs=1e-3)
        assert alert["severity"] == anomalies.slow_job_severity(job.factor)
        assert alert["fingerprint"] == f"slow_job|{job.name}"


def test_a_slow_jobs_severity_grows_with_its_factor():
    labels = [anomalies.slow_job_severity(f) for f in (3.0, 9.9, 10.0, 29.0, 50.0, 150.0)]
    assert labels == ["low", "low", "medium", "medium", "high", "critical"]


@pytest.mark.slow
def test_a_burst_of_slow_jobs_does_not_drag_the_drift(unet_store):
    predictor = PerformancePredictor(unet_store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    model = predictor.active_model("image")
    jobs = unet_store.recent_jobs("cpu-2t", "tiny-unet-b", 50)
    calm_drift, _ = model.recent_behaviour(jobs)
    latest = jobs.finished_at.nlargest(12).index  # 12 of the 20 latest, 10× slower
    burst = jobs.assign(processing_seconds=jobs.processing_seconds.where(
        ~jobs.index.isin(latest), jobs.processing_seconds * 10),
        total_seconds=jobs.total_seconds.where(~jobs.index.isin(latest),
                                               jobs.total_seconds * 10))
    burst_drift, burst_spread = model.recent_behaviour(burst)
    assert abs(burst_drift - calm_drift) < 0.1, (burst_drift, calm_drift)
    assert np.isfinite(burst_spread)


def test_training_drift_skips_the_burst():
    """The drift a trained model stores for a group ignores its far-slower jobs."""
    from perflib.prediction.features import far_slower_jobs, history_keys, latest_median

    start = datetime(2025, 1, 6, tzinfo=timezone.utc)
    finished = [start + timedelta(minutes=i) for i in range(60)]
    jobs = pd.DataFrame({"status": "success", "gpu_name": "g", "model_name": "m",
                         "submitted_at": [f - timedelta(seconds=30) for f in finished],
                         "finished_at": finished})
    ratio = np.r_[np.zeros(48), np.full(12, np.log(10.0))]
    keys = history_keys(jobs)
    usual = ~far_slower_jobs(jobs, keys, ratio)[0]
    assert not usual[48:].any() and usual[:48].all()
    assert latest_median(jobs, keys, ratio, window=20, known=usual)["g|m"] == 0.0


@pytest.mark.parametrize("stored_model", [False, True], ids=["fitted-on-a-sample",
                                                              "stored-model"])
@pytest.mark.slow
def test_the_sql_screen_finds_what_reading_the_whole_window_finds(unet_store, monkeypatch,
                                                                   stored_model):
    """A fleet's window is screened in SQL (anomalies.SCAN_JOBS): same stragglers, same alert."""
    if stored_model:
        predictor = PerformancePredictor(unet_store)
        predictor.train_model(None, "linear_regression")
        predictor.save_model_to_db(None, "linear_regression")
    exact = far_slower_than_expected(unet_store, *WINDOW)
    (alert,) = straggler_alerts(unet_store, *WINDOW)
    monkeypatch.setattr(anomalies, "SCAN_JOBS", 0)
    screened = far_slower_than_expected(unet_store, *WINDOW)
    assert set(screened.job_id) == set(exact.job_id)
    assert screened.factor.to_numpy() == pytest.approx(exact.factor.to_numpy(), rel=0.05)
    assert straggler_alerts(unet_store, *WINDOW) == [alert]


@pytest.mark.postgres
@pytest.mark.slow
def test_the_sql_screen_on_postgresql(pg_url, tmp_path, monkeypatch):
    """The screen's sample is a TABLESAMPLE there: the same stragglers as reading the window."""
    store = Store(pg_url, Settings(spool_dir=tmp_path / "spool"))
    import_jobs(DATA, store)
    exact = far_slower_than_expected(store, *WINDOW)
    monkeypatch.setattr(anomalies, "SCAN_JOBS", 0)
    monkeypatch.setattr(anomalies, "SAMPLE_JOBS", 200)  # of the window's ~670 jobs
    assert set(far_slower_than_expected(store, *WINDOW).job_id) == set(exact.job_id)
