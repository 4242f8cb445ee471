"""Estimating: each job row priced by the preferred stored model that can, with its GPU and
model's fresh drift, spread and interval widening, else by the heuristic; a request's answer
with its recommendations."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.cache import TtlCache
from perflib.prediction.conformal import MIN_GROUP_JOBS as MIN_WIDEN_JOBS
from perflib.prediction.conformal import POOLED as POOLED_GROUP
from perflib.prediction.conformal import Adjustment, OnlineConformal
from perflib.prediction.features import JobRows, job_columns, row_count
from perflib.prediction.heuristic import Heuristic, History
from perflib.prediction.priced import HEURISTIC, PricedJobs
from perflib.prediction.recommendations import cheaper_variants, recommendations
from perflib.prediction.stored import load_version
from perflib.prediction.trained import RECENT_JOBS, TrainedModel
from perflib.prediction.training import MIN_JOBS_FOR_MODEL
from perflib.record import estimate_params
from perflib.store import Store, parse_timestamp
from perflib.store.model_registry import StoredModels, StoredVersion

RECENT_CACHE_SECONDS = 30.0
# The online conformal widening of an interval is replayed over a group's latest finished jobs
# (or, for a group with fewer than MIN_WIDEN_JOBS of them, over its pipeline's latest jobs).
WIDEN_JOBS = 100
POOLED_WIDEN_JOBS = 200


class Estimator:
    """Prices job rows for a predictor: the stored versions (re-read at most every
    `check_seconds`), each group's recent behaviour (at most `cache_size` kept a short while)
    and the heuristic, fitted on `history`."""

    def __init__(self, store: Callable[[], Store], history: History, check_seconds: float,
                 cache_size: int):
        self.store = store
        self.stored = StoredModels(store, load_version, check_seconds)
        self.recent_cache = TtlCache(RECENT_CACHE_SECONDS, cache_size)
        self.heuristic = Heuristic(store, history, self.recent_cache)

    def answering(self, pipeline_type: str):
        """(version, model) of each stored model that may price jobs of `pipeline_type`, in
        order of preference: loaded, checked, and trained on enough jobs of that type."""
        for version, model in self.stored.usable(pipeline_type):
            if model.pipeline_counts.get(pipeline_type, 0) >= MIN_JOBS_FOR_MODEL:
                yield version, model

    def estimate_many(self, requests: list[Mapping[str, Any]], as_of: Any = None
                      ) -> list[dict | ValueError]:
        """See PerformancePredictor.estimate_many."""
        as_of = moment(as_of)
        answers: list[dict | ValueError] = []
        priced: dict[str, list[tuple[int, list, dict]]] = {}  # per pipeline: answer, variants, job
        for params in requests:
            try:
                job = estimate_params(dict(params))
            except ValueError as exc:
                answers.append(exc)
                continue
            answers.append({})
            priced.setdefault(job["pipeline_type"], []).append(
                (len(answers) - 1, cheaper_variants(job), job))
        for pipeline, entries in priced.items():
            # Each job and its cheaper variants, as columns: one model pass prices them all,
            # and one model prices each request.
            rows = [row for _, variants, job in entries
                    for row in [job] + [variant for _, _, variant in variants]]
            requests_of_rows = np.repeat(np.arange(len(entries)),
                                         [1 + len(variants) for _, variants, _ in entries])
            estimates, labels = self.price(pipeline, job_columns(rows, as_of), requests_of_rows,
                                           as_of)
            first = 0
            for position, variants, _ in entries:
                mine = slice(first, first + 1 + len(variants))
                first = mine.stop
                answers[position] = _answer(estimates.rows(mine), labels[mine.start], variants)
        return answers

    def price(self, pipeline_type: str, rows: JobRows, groups: np.ndarray | None = None,
              as_of: datetime | None = None) -> tuple[PricedJobs, np.ndarray]:
        """Estimates of rows of one pipeline type, and each row's model label: the preferred
        stored model with each GPU and model's fresh drift, spread and interval widening (as of
        `as_of`, else now). Rows it cannot price (an error, or a value that is not finite and
        positive — and with them every row of the same `groups` entry) go to the next stored
        model, and what is left to the heuristic."""
        count = row_count(rows)
        rows = _submitted_at(rows, as_of)
        groups = np.arange(count) if groups is None else groups
        estimates = PricedJobs.unpriced(count)
        labels = np.full(count, HEURISTIC, dtype=object)
        pending = np.arange(count)
        if not count:
            return estimates, labels
        for version, model in self.answering(pipeline_type):
            priced = self._model_price(version, model, _take(rows, pending, count),
                                       pipeline_type, as_of)
            sound = priced.sound()
            if not sound.all():
                sound &= ~np.isin(groups[pending], groups[pending][~sound])
            estimates.fill(pending[sound], priced.rows(sound))
            labels[pending[sound]] = version.label
            pending = pending[~sound]
            if not len(pending):
                return estimates, labels
        estimates.fill(pending, self.heuristic.price(pipeline_type, _take(rows, pending, count),
                                                     as_of))
        return estimates, labels

    def _model_price(self, version: StoredVersion, model: TrainedModel, rows: JobRows,
                     pipeline_type: str, as_of: datetime | None) -> PricedJobs:
        """What `model` prices rows at, NaN where it fails; a failure is noted with why, for
        model_status."""
        try:
            recent = dict(self._fresh_behaviour(version, model, pipeline_type,
                                                _text_or_none(gpu), _text_or_none(name), as_of)
                          for gpu, name in set(zip(_column(rows, "gpu_name"),
                                                   _column(rows, "model_name"))))
            priced = PricedJobs(*(np.asarray(part, dtype=float)
                                  for part in model.predict(rows, recent)),
                                speed_source=np.asarray(model.speed_sources(rows, recent),
                                                        dtype=object),
                                geometry_source=model.geometry_sources_of(rows))
        except sa.exc.SQLAlchemyError:
            raise  # the database, not the model: the caller reports it
        except Exception as exc:  # a model that passed its checks may still fail on a job
            self.stored.note_fallback(version, f"{type(exc).__name__}: {exc}")
            return PricedJobs.unpriced(row_count(rows))
        unsound = int((~priced.sound()).sum())
        if unsound:
            self.stored.note_fallback(version, f"priced {unsound} of {len(priced)} job "
                                               "rows at a non-finite or non-positive value")
        return priced

    def _fresh_behaviour(self, version: StoredVersion, model: TrainedModel,
                         pipeline_type: str, gpu: str | None, name: str | None,
                         as_of: datetime | None) -> tuple[str, tuple[float, float, Adjustment]]:
        """How much slower than the cost model a GPU and model ran in their latest jobs, how
        scattered those were, and how much their intervals widen (online conformal, replayed
        over those jobs) — ("gpu|model", (drift, spread, widen)), from the store as of `as_of`
        (else now), cached per stored version and `as_of` for a short while; drift and spread
        NaN where there are too few jobs."""
        key = f"{gpu or 'unknown'}|{name or 'unknown'}"
        behaviour = self.recent_cache.get((version.id, key, as_of))
        if behaviour is None:
            jobs = self.store().recent_jobs(gpu, name, RECENT_JOBS + WIDEN_JOBS, as_of)
            behaviour = (*model.recent_behaviour(jobs.head(RECENT_JOBS)),
                         self.widening(version, model, pipeline_type, jobs, as_of))
            self.recent_cache.put((version.id, key, as_of), behaviour)
        return key, behaviour

    def widening(self, version: StoredVersion, model: TrainedModel, pipeline_type: str,
                  jobs: pd.DataFrame, as_of: datetime | None) -> Adjustment:
        """A group's online adjustment of interval tails and confidence: adaptive conformal
        inference replayed over its latest WIDEN_JOBS finished `jobs` (each re-priced by `model`
        as it would have been at its submission, see :meth:`TrainedModel.replay_scores`), started
        afresh — a sliding window, as no state survives between estimates; a group with fewer
        than MIN_WIDEN_JOBS of them takes its pipeline's pooled adjustment."""
        coverage = model.calibration.coverage
        replay = model.replay_scores(jobs, WIDEN_JOBS) if len(jobs) >= MIN_WIDEN_JOBS \
            else ((),) * 4
        if len(replay[1]) >= MIN_WIDEN_JOBS:
            # One group's jobs only: the pooled tracker is the group's own.
            return OnlineConformal.replayed(*replay, coverage=coverage).adjustment(POOLED_GROUP)
        pooled = self.recent_cache.get((version.id, pipeline_type, POOLED_GROUP, as_of))
        if pooled is None:
            latest = self.store().latest_jobs(pipeline_type, POOLED_WIDEN_JOBS, as_of)
            pooled = OnlineConformal.replayed(*model.replay_scores(latest, POOLED_WIDEN_JOBS),
                                              coverage=coverage).adjustment(POOLED_GROUP)
            self.recent_cache.put((version.id, pipeline_type, POOLED_GROUP, as_of), pooled)
        return pooled


def _answer(estimates: PricedJobs, label: str, variants: list) -> dict:
    """The answer to one request: its job's estimate (the first row) and the advice its
    cheaper variants' (the other rows) give."""
    return {
        "predicted_time_seconds": round(float(estimates.seconds[0]), 3),
        "confidence": round(float(estimates.confidence[0]), 3),
        "prediction_method": HEURISTIC if label == HEURISTIC else "ml_model",
        "speed_source": str(estimates.speed_source[0]),
        "geometry_source": str(estimates.geometry_source[0]),
        "model_used": label,
        "uncertainty_range": [round(float(estimates.low[0]), 3),
                              round(float(estimates.high[0]), 3)],
        "recommendations": recommendations(variants, estimates.seconds),
    }


def moment(as_of: Any) -> datetime | None:
    """`as_of` as an aware UTC datetime (None stays None: now); ValueError naming as_of."""
    if as_of is None:
        return None
    try:
        return parse_timestamp(as_of)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"as_of: {exc}") from None


def _submitted_at(rows: JobRows, as_of: datetime | None) -> JobRows:
    """Rows without a submission (or start) time, asked about as of `as_of`, are priced as
    submitted then rather than at the clock time of asking."""
    if as_of is None or "submitted_at" in rows or "started_at" in rows:
        return rows
    if isinstance(rows, pd.DataFrame):
        return rows.assign(submitted_at=pd.Timestamp(as_of))
    return {**rows, "submitted_at": [as_of] * row_count(rows)}


def _take(rows: JobRows, positions: np.ndarray, count: int) -> JobRows:
    """The job rows at `positions` (all `count` of them as they are)."""
    if len(positions) == count:
        return rows
    if isinstance(rows, pd.DataFrame):
        return rows.iloc[positions]
    return {name: [column[i] for i in positions] for name, column in rows.items()}


def _column(rows: JobRows, name: str) -> list:
    return list(rows[name]) if name in rows else [None] * row_count(rows)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value != value else str(value)
