"""Retraining through the store: `perflib maintain` and the service's schedule retrain a model
that is due, keep the new version only if it beats the active one, and record why."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from fastapi.testclient import TestClient

from perflib.analysis import PerformanceAnalyzer
from perflib.cli import main as cli_main
from perflib.config import RetrainRule
from perflib.ops.auto_retrain import retrain_due
from perflib.prediction.features import outcome_seconds
from perflib.prediction.predictor import PerformancePredictor
from perflib.serve import create_app
from perflib.sim.simulate import simulate_history
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_prediction_models as models

API = "/api/anime/performance"
FAST = "linear_regression"


def _history_with_model(store: Store, family: str = FAST, age_days: float = 8) -> None:
    """A week of simulated jobs and an image model stored `age_days` ago (the simulator's own
    estimates are dropped: no job was estimated by that model, so only its age counts)."""
    simulate_history(store, weeks=1, jobs_per_day=60, seed=1)
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs).values(predicted_seconds=None))
    predictor = PerformancePredictor(store)
    chosen = predictor.train_model("image", family)["model_type"]
    predictor.save_model_to_db("image", chosen)
    with store.engine.begin() as conn:
        conn.execute(sa.update(models).values(
            created_at=datetime.now(timezone.utc) - timedelta(days=age_days)))


def _versions(store: Store) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(models.c.version, models.c.is_active, models.c.metrics)
                            .order_by(models.c.version)).all()


def test_a_week_old_model_is_retrained_once_with_its_reason_recorded(store):
    _history_with_model(store)
    (outcome,) = retrain_due(store, model_type=FAST)
    assert outcome.pipeline_type == "image" and outcome.decision.reason == "age"
    assert outcome.version == 2 and outcome.compared_on > 0 and outcome.kept is not None
    first, second = _versions(store)
    assert second.metrics["retrain_reason"] == "age" and second.metrics["kept"] is outcome.kept
    assert second.metrics["compared_on"] == outcome.compared_on
    assert (second.is_active, first.is_active) == (outcome.kept, not outcome.kept)
    shown = PerformancePredictor(store).model_status()["image"]["last_retraining"]
    assert shown["retrain_reason"] == "age" and shown["kept"] is outcome.kept
    assert shown["version"] == 2
    # The attempt restarts the week: checking again retrains nothing.
    assert not retrain_due(store, model_type=FAST)[0].decision
    assert len(_versions(store)) == 2


def test_a_candidate_that_loses_is_stored_inactive_and_the_active_one_stays(store):
    _history_with_model(store)
    predictor = PerformancePredictor(store)
    # Make the active model (trained on every job) look perfect on the latest jobs: the
    # candidates, trained on fewer by rolling origin, cannot beat it.
    from perflib.ops import auto_retrain
    from perflib.prediction import retraining_choice

    real, every = retraining_choice.held_out_estimates, len(predictor.training_data("image"))

    def priced(model, jobs, rows):
        return outcome_seconds(jobs)[rows] if model.n_rows == every else \
            real(model, jobs, rows)

    retraining_choice.held_out_estimates = priced
    try:
        decision = auto_retrain.RetrainDecision("accuracy", "planted")
        outcome = auto_retrain.retrain(predictor, "image", decision, FAST)
    finally:
        retraining_choice.held_out_estimates = real
    assert outcome.kept is False and outcome.active_within_20 == 1.0
    first, second = _versions(store)
    assert first.is_active and not second.is_active
    assert second.metrics["kept"] is False and second.metrics["retrain_reason"] == "accuracy"
    assert PerformancePredictor(store).model_status()["image"]["version"] == 1


def test_maintain_dry_run_names_what_is_due_and_stores_nothing(sqlite_url, settings, capsys):
    store = Store(sqlite_url, settings)
    _history_with_model(store)
    plan = PerformanceAnalyzer(store).maintain(dry_run=True)
    (outcome,) = plan.retrained
    assert outcome.decision.reason == "age" and outcome.version is None
    assert "image: retrain (age: " in plan.describe() and "dry run" in plan.describe()
    assert len(_versions(store)) == 1
    assert cli_main(["--database-url", sqlite_url, "maintain", "--dry-run"]) == 0
    assert "image: retrain (age: " in capsys.readouterr().out
    assert cli_main(["--database-url", sqlite_url, "maintain", "--no-retrain"]) == 0
    assert "retrain" not in capsys.readouterr().out and len(_versions(store)) == 1


def test_the_service_checks_the_rule_on_its_own_schedule(sqlite_url, tmp_path):
    from perflib.config import Settings

    settings = Settings(spool_dir=tmp_path / "spool",
                        retrain_rule=RetrainRule(check_seconds=0.2))
    store = Store(sqlite_url, settings)
    _history_with_model(store, family="auto")
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)) as client:
        deadline = time.monotonic() + 120
        while (shown := client.get(f"{API}/model-status").json()["image"]
               ["last_retraining"]) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shown is not None and shown["retrain_reason"] == "age"
    assert len(_versions(store)) == 2  # checked again and again, retrained once


def test_no_scheduled_check_when_it_is_off(sqlite_url, tmp_path):
    from perflib.config import Settings

    settings = Settings(spool_dir=tmp_path / "spool", retrain_rule=RetrainRule(check_seconds=0))
    store = Store(sqlite_url, settings)
    _history_with_model(store)
    with TestClient(base_url="http://127.0.0.1", app=create_app(store, settings)):
        time.sleep(0.5)
    assert len(_versions(store)) == 1
