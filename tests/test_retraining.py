"""The retraining rule (a pure function) and retraining through the store."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from perflib.config import ConfigError, ModelProfile, RetrainRule, Settings, get_settings
from perflib.ops.auto_retrain import _change_points, retrain
from perflib.prediction.predictor import PerformancePredictor
from perflib.prediction.retraining_choice import held_out_estimates
from perflib.prediction.retraining_rule import ModelInfo, should_retrain
from perflib.sim.simulate import default_incidents, simulate_history
from perflib.store import Store

T0 = datetime(2025, 1, 6, tzinfo=timezone.utc)
RULE = RetrainRule()


def _jobs(actual: float, count: int = 30, start: datetime = T0, predicted: float = 10.0):
    submitted = [start + timedelta(hours=i) for i in range(count)]
    return pd.DataFrame({"predicted_seconds": predicted, "processing_seconds": actual,
                         "status": "success", "submitted_at": submitted,
                         "finished_at": [s + timedelta(minutes=1) for s in submitted]})


MODEL = ModelInfo(trained_at=T0 - timedelta(hours=1), train_end=T0 - timedelta(hours=2))


def test_an_accurate_recent_model_is_not_retrained():
    decision = should_retrain(MODEL, _jobs(10.5), [], T0 + timedelta(days=2), RULE)
    assert not decision and decision.reason is None
    assert decision.live_accuracy == 1.0 and decision.live_jobs == 30


def test_live_accuracy_below_the_threshold_retrains():
    decision = should_retrain(MODEL, _jobs(13.0), [], T0 + timedelta(days=2), RULE)
    assert decision.reason == "accuracy" and decision.live_accuracy == 0.0
    assert "30 estimated jobs" in decision.detail


def test_too_few_estimated_jobs_do_not_judge_accuracy():
    decision = should_retrain(MODEL, _jobs(13.0, count=RULE.min_accuracy_jobs - 1), [],
                              T0 + timedelta(days=2), RULE)
    assert decision.live_accuracy is None  # ... though ten are enough to show a bias
    assert decision.reason == "bias"


def test_jobs_estimated_before_the_model_or_the_last_attempt_do_not_count():
    old_misses = _jobs(13.0, start=T0 - timedelta(days=3))
    assert not should_retrain(MODEL, old_misses, [], T0 + timedelta(days=2), RULE)
    tried = ModelInfo(MODEL.trained_at, MODEL.train_end, last_attempt_at=T0 + timedelta(days=2))
    assert not should_retrain(tried, _jobs(13.0), [], T0 + timedelta(days=3), RULE)


def test_a_persistent_bias_retrains_where_the_jobs_still_land_within_20_percent():
    """A ×1.25 step sits on the accuracy rule's boundary (1/1.25 = 0.8 of the estimate): every
    job is still within ±20%, yet all are off one way."""
    decision = should_retrain(MODEL, _jobs(12.3), [], T0 + timedelta(days=2), RULE)
    assert decision.reason == "bias" and decision.live_accuracy == 1.0
    assert "×1.23" in decision.detail
    faster = should_retrain(MODEL, _jobs(8.5), [], T0 + timedelta(days=2), RULE)
    assert faster.reason == "bias"
    assert not should_retrain(MODEL, _jobs(10.9), [], T0 + timedelta(days=2), RULE)
    few = _jobs(12.3, count=RULE.bias_jobs - 1)
    assert not should_retrain(MODEL, few, [], T0 + timedelta(days=2), RULE)


def test_jobs_finished_after_now_are_not_seen():
    assert not should_retrain(MODEL, _jobs(13.0), [], T0, RULE)


def test_a_week_old_model_is_retrained_and_an_attempt_restarts_the_week():
    now = T0 + timedelta(days=7)
    assert should_retrain(MODEL, _jobs(10.0), [], now, RULE).reason == "age"
    tried = ModelInfo(MODEL.trained_at, MODEL.train_end, last_attempt_at=T0 + timedelta(days=3))
    assert not should_retrain(tried, _jobs(10.0), [], now, RULE)


def test_a_change_point_after_the_training_window_retrains():
    after = SimpleNamespace(day=T0.date())
    before = SimpleNamespace(day=date(2024, 12, 1))
    now = T0 + timedelta(days=2)
    decision = should_retrain(MODEL, _jobs(10.0), [before, after], now, RULE)
    assert decision.reason == "change_point" and T0.date().isoformat() in decision.detail
    assert not should_retrain(MODEL, _jobs(10.0), [before], now, RULE)


def test_no_model_is_not_retrained():
    assert not should_retrain(None, _jobs(13.0), [], T0, RULE)


def test_rule_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PERFLIB_RETRAIN_MIN_ACCURACY", "0.6")
    monkeypatch.setenv("PERFLIB_RETRAIN_CHECK_SECONDS", "0")
    rule = get_settings().retrain_rule
    assert rule.min_accuracy == 0.6 and rule.check_seconds == 0
    monkeypatch.setenv("PERFLIB_RETRAIN_MIN_ACCURACY", "1.5")
    with pytest.raises(ConfigError, match="PERFLIB_RETRAIN_MIN_ACCURACY"):
        get_settings()
    monkeypatch.setenv("PERFLIB_RETRAIN_MIN_ACCURACY", "0.7")
    monkeypatch.setenv("PERFLIB_RETRAIN_ACCURACY_JOBS", "many")
    with pytest.raises(ConfigError, match="PERFLIB_RETRAIN_ACCURACY_JOBS"):
        get_settings()


# -- retraining on simulated history with a driver regression ---------------------------------
REPLAY_END = datetime(2025, 3, 3, tzinfo=timezone.utc)
REPLAY_WEEKS = 5
FAST = "linear_regression"  # the rule is under test, not the family


@pytest.fixture(scope="module")
def regression_history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retraining")
    profiles = {name: ModelProfile() for name in ("animatediff-v3", "wan2.1-1.3b")}
    store = Store(f"sqlite:///{folder / 'perflib.db'}",
                  Settings(spool_dir=folder / "spool", model_profiles=profiles))
    incidents = default_incidents(REPLAY_END.date(), REPLAY_WEEKS)
    simulate_history(store, weeks=REPLAY_WEEKS, seed=3, end=REPLAY_END, incidents=incidents)
    (driver,) = [i for i in incidents if i.kind == "driver_regression"]
    return store, datetime.combine(driver.start, datetime.min.time(), timezone.utc)


def _replay(store: Store, first_day: datetime, rule: RetrainRule):
    """Run the rule every hour, as the service does: the video jobs submitted in each hour are
    estimated by the model active then, with the drift of the jobs finished before each was
    submitted; a due retraining trains on the jobs finished by then. Returns per day its MAPE
    and the retrainings, each with when it was decided."""
    predictor = PerformancePredictor(store)
    jobs = predictor.training_data("video")
    finished = jobs.finished_at
    past = jobs[finished < first_day]
    predictor.train_model("video", FAST, jobs=past)
    predictor.save_model_to_db("video", FAST)
    info = ModelInfo(trained_at=first_day, train_end=past.started_at.max())
    predicted = pd.Series(np.nan, index=jobs.index)
    retrained, change_points = [], {}
    for hour in pd.date_range(first_day, REPLAY_END - timedelta(hours=1), freq="h"):
        now = hour + timedelta(hours=1)
        submitted = np.flatnonzero((jobs.submitted_at >= hour) & (jobs.submitted_at < now))
        if len(submitted):
            predicted.iloc[submitted] = held_out_estimates(_active(store), jobs, submitted)
        if now.date() not in change_points:  # trend analysis works on whole days
            change_points[now.date()] = _change_points(store, "video", now)
        seen = jobs[finished < now].assign(predicted_seconds=predicted[finished < now])
        decision = should_retrain(info, seen, change_points[now.date()], now, rule)
        if decision:
            outcome = retrain(predictor, "video", decision, FAST, rule.compare_jobs,
                              jobs=seen.drop(columns="predicted_seconds"))
            info = ModelInfo(now, seen.started_at.max() if outcome.kept else info.train_end,
                             last_attempt_at=now)
            retrained.append((now, outcome))
    error = (predicted - jobs.processing_seconds).abs() / jobs.processing_seconds
    daily = error.groupby(jobs.submitted_at.dt.floor("D")).mean().dropna()
    return daily, retrained


def _active(store: Store):
    from perflib.ops.auto_retrain import _active_model
    return _active_model(store, "video")


@pytest.mark.slow
def test_a_driver_regression_is_retrained_within_a_day_and_error_recovers(regression_history):
    store, change = regression_history
    daily, retrained = _replay(store, REPLAY_END - timedelta(weeks=3), RetrainRule())
    assert all(outcome.version for _, outcome in retrained)
    first_after = next(when for when, _ in retrained if when > change)
    assert first_after <= change + timedelta(days=1), retrained
    before = daily[daily.index < change].mean()
    assert daily[change] > 1.3 * before  # the regression is visible
    after = daily[daily.index >= change + timedelta(days=2)].mean()
    assert after <= 1.2 * before, (before, after)
