"""Estimates do not move with the clock time they are asked at (issue 20, item 6): a feature seen
over too narrow a range (the hour of day of jobs that all ran within one hour) is neutralised,
every other numeric input of a correction is clamped to its training range, and rows asked
about as of a moment are priced as submitted then."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import perflib.prediction.features as features_module
from perflib.config import Settings
from perflib.prediction.estimating import _submitted_at
from perflib.prediction.features import feature_columns
from perflib.prediction.models import MODEL_COLUMNS, MatrixEncoder
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store
from perflib.store.importer import import_jobs
from tests.conftest import REAL_DATA

HOUR = MODEL_COLUMNS.index("hour_of_day")
STEPS = MODEL_COLUMNS.index("steps")
CLOCKS = ["2026-11-25T19:45:00Z", "2026-11-25T20:00:00Z", "2026-11-25T21:30:00Z",
          "2026-11-26T03:00:00Z", "2026-11-26T15:00:00Z"]


def _matrix(hours, steps) -> np.ndarray:
    matrix = np.zeros((len(hours), len(MODEL_COLUMNS)), dtype=object)
    matrix[:, HOUR], matrix[:, STEPS] = hours, steps
    return matrix


def test_an_hour_seen_within_one_evening_is_neutral_and_other_values_are_clamped():
    encoder = MatrixEncoder(cyclic={HOUR: 24}).fit(_matrix([19, 20, 20, 21], [4, 10, 20, 30]))
    asked = encoder.transform(_matrix([3, 15, 19, 21], [1, 10, 30, 90]))
    assert (asked[:, HOUR] == 0).all()
    assert list(asked[:, STEPS]) == [4, 10, 30, 30]


def test_an_hour_seen_around_the_clock_is_kept():
    hours = np.arange(48) % 24
    encoder = MatrixEncoder(cyclic={HOUR: 24}).fit(_matrix(hours, hours + 1))
    assert list(encoder.transform(_matrix([3, 15], [1, 1]))[:, HOUR]) == [3, 15]


def test_too_little_of_the_cycle_is_neutral_even_over_several_values():
    encoder = MatrixEncoder(cyclic={HOUR: 24}).fit(_matrix(np.arange(12), np.arange(12)))
    assert (encoder.transform(_matrix([3, 15], [1, 1]))[:, HOUR] == 0).all()


@pytest.fixture(scope="module")
def cold_start(tmp_path_factory):
    """The video transformer's UniPC jobs renamed a new model; history: the original model's
    jobs and the new one's first 10, a neural network (the family an hour swings most)."""
    folder = tmp_path_factory.mktemp("cold")
    jobs = pd.read_csv(REAL_DATA / "video-dit-jobs.csv")
    new = (jobs.sampler == "unipc").to_numpy()
    jobs.loc[new, "model_name"] = "tiny-wan-dit-s-unipc"
    pd.concat([jobs[~new], jobs[new].head(10)]).to_csv(folder / "history.csv", index=False)
    store = Store(f"sqlite:///{folder / 'p.db'}", Settings(spool_dir=folder / "spool"))
    import_jobs(folder / "history.csv", store)
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "neural_network")
    predictor.save_model_to_db(None, "neural_network")
    later = jobs[new].iloc[10:]
    sides = later.resolution.str.split("x", expand=True).astype(int)
    yield store, later.assign(width=sides[0], height=sides[1]).drop(
        columns=["started_at", "finished_at"])
    store.engine.dispose()


@pytest.mark.slow
def test_the_same_cold_start_asked_at_different_hours_gives_the_same_estimates(
        cold_start, monkeypatch):
    """Before: 0.543, 0.614, 0.642, 0.346 and 0.346 within 20% at these five clocks."""
    store, later = cold_start
    answers = []
    for clock in CLOCKS:
        instant = pd.Timestamp(clock).timestamp()
        monkeypatch.setattr(features_module, "time", SimpleNamespace(time=lambda: instant))
        priced = PerformancePredictor(store).estimate_batch(later, "video")
        answers.append(priced.predicted_time_seconds.to_numpy())
    for other in answers[1:]:
        np.testing.assert_array_equal(other, answers[0])


def test_rows_asked_about_as_of_a_moment_are_priced_as_submitted_then(monkeypatch):
    """A row without a submission time, asked about as of 03:00, has the hour 3 whatever the
    clock says; a row with its own submission time keeps it."""
    monkeypatch.setattr(features_module, "time", SimpleNamespace(time=lambda: 0.0))
    asked = {"width": [512], "height": [512], "steps": [20]}
    as_of = pd.Timestamp("2026-11-26T03:00:00Z").to_pydatetime()
    assert feature_columns(_submitted_at(asked, as_of))["hour_of_day"][0] == 3
    assert feature_columns(_submitted_at(pd.DataFrame(asked), as_of))["hour_of_day"][0] == 3
    own = pd.DataFrame({**asked, "started_at": ["2026-11-25T19:34:00"]})
    assert feature_columns(_submitted_at(own, as_of))["hour_of_day"][0] == 19
    assert feature_columns(asked)["hour_of_day"][0] == 0  # no moment: the clock's
