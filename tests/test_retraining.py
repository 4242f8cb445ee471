"""The retraining rule (a pure function) and retraining through the store."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import pytest

from perflib.analysis.retraining import ModelInfo, should_retrain
from perflib.config import ConfigError, RetrainRule, get_settings

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
    assert not decision and decision.live_accuracy is None


def test_jobs_estimated_before_the_model_or_the_last_attempt_do_not_count():
    old_misses = _jobs(13.0, start=T0 - timedelta(days=3))
    assert not should_retrain(MODEL, old_misses, [], T0 + timedelta(days=2), RULE)
    tried = ModelInfo(MODEL.trained_at, MODEL.train_end, last_attempt_at=T0 + timedelta(days=2))
    assert not should_retrain(tried, _jobs(13.0), [], T0 + timedelta(days=3), RULE)


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
