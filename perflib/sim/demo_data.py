"""Demo data, written only when asked: ``perflib simulate --if-empty`` (which ``make report`` runs).

An empty database gets a simulated production history with one incident of each kind, models
trained on it and its daily aggregates, so a fresh clone shows a full report. A database that
holds any job is left alone; nothing else in perflib ever writes simulated data.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from perflib.analysis import PerformanceAnalyzer
from perflib.prediction.predictor import MIN_JOBS_FOR_MODEL, PerformancePredictor
from perflib.sim.simulate import SimulationResult, default_incidents, simulate_history
from perflib.store import Store

@dataclass
class DemoData:
    """What seeding wrote: the simulation, and the pipelines a model was trained for."""

    simulation: SimulationResult
    trained: dict[str, str]  # pipeline → chosen model family
    trend_rows: int


def seed_if_empty(store: Store, weeks: int = 8, gpus: int = 2, gpus_per_host: int = 1,
                  seed: int = 0, jobs_per_day: float = 180.0,
                  ground_truth_path: str | Path | None = None) -> DemoData | None:
    """Simulate `weeks` ending now with the default incidents, train and save a model per
    pipeline that has enough jobs, and build the daily aggregates — only when `store` holds no
    job; None otherwise."""
    if store.count() > 0:
        return None
    now = datetime.now(timezone.utc)
    simulation = simulate_history(store, weeks=weeks, gpus=gpus, gpus_per_host=gpus_per_host,
                                  seed=seed, end=now, jobs_per_day=jobs_per_day,
                                  incidents=default_incidents(now.date(), weeks),
                                  ground_truth_path=ground_truth_path)
    predictor = PerformancePredictor(store)
    trained = {}
    for pipeline in ("image", "video"):
        if len(predictor.training_data(pipeline)) >= MIN_JOBS_FOR_MODEL:
            result = predictor.train_model(pipeline, "auto")
            predictor.save_model_to_db(pipeline, result["model_type"])
            trained[pipeline] = result["model_type"]
    trend_rows = PerformanceAnalyzer(store).aggregate_daily(days_back=None)
    return DemoData(simulation, trained, trend_rows)
