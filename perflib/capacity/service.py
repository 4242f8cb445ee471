"""Service times: how long each job holds a GPU, as the stored model predicts it.

A bounded random sample of the window's successful jobs keeps the real mix of work (service
times are far from exponential: a wide video takes a hundred times an icon); each is priced by
the pipeline's active model, or, without one, by the processing seconds it was observed to take.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from perflib.analysis.sql import sampled_jobs
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store

SAMPLE_ROWS = 20_000
OBSERVED = "observed processing seconds"


@dataclass(frozen=True)
class ServiceSample:
    """Service seconds of sampled jobs, and per pipeline what priced them."""

    seconds: np.ndarray
    sources: dict[str, str]  # pipeline -> model label, or OBSERVED

    @property
    def mean_seconds(self) -> float:
        return float(self.seconds.mean())

    @property
    def variation(self) -> float:
        """Coefficient of variation (1 for exponential service times)."""
        return float(self.seconds.std() / self.seconds.mean())

    def describe(self) -> str:
        return "; ".join(f"{pipeline}: {source}" for pipeline, source in
                         sorted(self.sources.items()))


def service_sample(store: Store, start: datetime, end: datetime, window_rows: int,
                   pipeline_type: str | None = None, limit: int = SAMPLE_ROWS,
                   predictor: PerformancePredictor | None = None) -> ServiceSample:
    """About `limit` successful jobs of [start, end) (which holds about `window_rows` jobs of
    the pool), drawn evenly at a cost that does not grow with history, each with its predicted
    service seconds (model) or its observed processing seconds (no model)."""
    sampled, _ = sampled_jobs(store, start, end, window_rows, limit)
    conditions = [sampled.c.status == "success", sampled.c.processing_seconds > 0]
    if pipeline_type:
        conditions.append(sampled.c.pipeline_type == pipeline_type)
    rows = store.frame(sa.select(sampled).where(*conditions).order_by(sampled.c.id))
    if rows.empty:
        raise ValueError(f"no successful {pipeline_type or ''} job between {start:%Y-%m-%d} "
                         f"and {end:%Y-%m-%d}: no service time to plan with".replace("  ", " "))
    predictor = predictor or PerformancePredictor(store)
    status = predictor.model_status()
    seconds = rows.processing_seconds.to_numpy(dtype=float, copy=True)
    sources = {}
    for pipeline, group in rows.groupby("pipeline_type"):
        pipeline = str(pipeline)
        if status.get(pipeline, {}).get("heuristic_in_use", True):
            sources[pipeline] = OBSERVED
            continue
        predicted = predictor.estimate_batch(group, pipeline).predicted_time_seconds
        seconds[rows.index.get_indexer(group.index)] = predicted.to_numpy(dtype=float)
        sources[pipeline] = f"predicted by {status[pipeline]['model_used']}"
    return ServiceSample(seconds=seconds, sources=sources)
