"""Which model answers for each pipeline type, and why the others do not: the stored versions
passed over, those that left jobs to the next one, and the latest automatic retraining."""
from __future__ import annotations

from perflib.prediction.estimating import Estimator
from perflib.prediction.priced import HEURISTIC
from perflib.prediction.training import MIN_JOBS_FOR_MODEL, iso
from perflib.record import PIPELINE_TYPES
from perflib.store.model_registry import StoredVersion


def model_status(estimator: Estimator) -> dict:
    """See PerformancePredictor.model_status."""
    stored = estimator.stored
    status = {}
    for pipeline in PIPELINE_TYPES:
        answering = next(estimator.answering(pipeline), (None, None))[0]
        versions = stored.versions(pipeline)
        active = next((version for version in versions if version.is_active), None)
        status[pipeline] = {
            "model_used": answering.label if answering else HEURISTIC,
            "heuristic_in_use": answering is None,
            "model_pipeline_type": answering.pipeline_type if answering else None,
            "family": answering.family if answering else None,
            "version": answering.version if answering else None,
            "trained_at": iso(answering.created_at) if answering else None,
            "n_rows": answering.n_rows if answering else 0,
            "metrics": answering.metrics if answering else None,
            "active": active.identity() if active else None,
            "refused": [{**version.identity(), "reason": reason} for version in versions
                        if (reason := _passed_over(estimator, version, pipeline))],
            "estimate_fallbacks": [
                {**version.identity(), "count": noted[0], "last_reason": noted[1]}
                for version in versions if (noted := stored.fallbacks(version))],
            "last_retraining": _last_retraining(versions),
        }
    return status


def _passed_over(estimator: Estimator, version: StoredVersion, pipeline_type: str
                 ) -> str | None:
    """Why `version` does not answer for `pipeline_type`, if it was tried and does not."""
    model = estimator.stored.loaded(version)
    if model is not None and model.pipeline_counts.get(pipeline_type, 0) < \
            MIN_JOBS_FOR_MODEL:
        return (f"trained on {model.pipeline_counts.get(pipeline_type, 0)} {pipeline_type} "
                f"jobs, fewer than {MIN_JOBS_FOR_MODEL}")
    return estimator.stored.refusal(version)


def _last_retraining(versions: list[StoredVersion]) -> dict | None:
    """The newest version an automatic retraining stored: why it was trained, and whether it
    was kept as the active one (see :mod:`perflib.ops.auto_retrain`)."""
    made = [v for v in versions if isinstance(v.metrics, dict) and "retrain_reason" in v.metrics]
    if not made:
        return None
    latest = max(made, key=lambda version: version.id)
    return {**latest.identity(), "trained_at": iso(latest.created_at),
            **{key: latest.metrics.get(key) for key in
               ("retrain_reason", "retrain_detail", "kept", "compared_on")}}
