"""Backtests replay history as production saw it; online conformal intervals hold their coverage."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from perflib.cli import main
from perflib.config import ModelProfile, Settings
from perflib.prediction.backtest import reliability_table, run_backtest
from perflib.prediction.conformal import (OnlineConformal, adjusted_confidence,
                                          normalised_scores)
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store
from perflib.store.importer import import_jobs

WAN_PROFILE = {"tiny-wan-dit-s": ModelProfile(vae_spatial_factor=8, vae_temporal_factor=4,
                                              patch_size=2, full_attention=True)}


def _history(count: int = 160, seed: int = 0) -> pd.DataFrame:
    """Jobs on one GPU, one every 10 s, each finishing before the next starts."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(10, 40, count)
    seconds = (0.5 + 0.1 * steps) * np.exp(rng.normal(0, 0.05, count))
    started = pd.Timestamp("2026-01-05T10:00:00Z") + pd.to_timedelta(np.arange(count) * 10,
                                                                        unit="s")
    return pd.DataFrame({
        "job_id": [f"j{i}" for i in range(count)], "pipeline_type": "image",
        "job_type": "character", "status": "success", "width": 512, "height": 512,
        "frame_count": 1, "steps": steps, "batch_size": 1, "guidance_scale": 7.5,
        "sampler": "euler", "model_name": "m", "gpu_name": "g", "started_at": started,
        "finished_at": started + pd.to_timedelta(seconds, unit="s"), "total_seconds": seconds})


@pytest.fixture
def predictor(tmp_path) -> PerformancePredictor:
    return PerformancePredictor(Store(f"sqlite:///{tmp_path / 'b.db'}",
                                      Settings(spool_dir=tmp_path / "spool")))


def test_late_slow_jobs_never_change_estimates_made_before_they_finished(predictor):
    jobs = _history()
    planted = np.arange(124, 132)  # in the replayed part; they finish long after
    finish = jobs.started_at[planted[-1]] + pd.Timedelta(seconds=200)
    jobs.loc[planted, "finished_at"] = finish
    slow = jobs.copy()
    slow.loc[planted, "total_seconds"] = 1.6 * jobs.total_seconds[planted]
    normal, outlier = (run_backtest(predictor, frame, start=0.7).estimates.set_index("job_id")
                       for frame in (jobs, slow))
    columns = ["predicted_seconds", "low_seconds", "high_seconds", "confidence"]
    before = jobs.job_id[(jobs.started_at <= finish) & (jobs.index >= 112)
                         & ~jobs.index.isin(planted)]
    after = jobs.job_id[jobs.started_at > finish]
    assert len(before) > 10 and len(after) > 5
    pd.testing.assert_frame_equal(normal.loc[before, columns], outlier.loc[before, columns])
    # Once they have finished they are seen: the drift and the intervals after them grow.
    assert (outlier.loc[after, "predicted_seconds"] > normal.loc[after, "predicted_seconds"]
            ).all()
    assert (outlier.loc[after, "widen"] > normal.loc[after, "widen"]).all()


def test_replay_trains_only_on_the_past_and_reports_per_group(predictor):
    result = run_backtest(predictor, _history(), start=0.75)
    assert len(result.estimates) == 40 and result.retrains == []
    table = result.table()
    assert table.loc[("all", "all", "all"), "jobs"] == 40
    assert table.loc[("image", "g", "m"), "within_20_percent"] == 1.0
    assert set(table.columns) == {"jobs", "within_10_percent", "within_20_percent", "mape",
                                  "median_ape", "interval_coverage", "mean_relative_width"}


def test_a_daily_schedule_retrains_once_a_day_has_passed(predictor):
    jobs = _history(200)
    later = jobs.index >= 170
    for column in ("started_at", "finished_at"):
        jobs.loc[later, column] = jobs.loc[later, column] + pd.Timedelta(days=1)
    result = run_backtest(predictor, jobs, start=0.7, retrain="daily")
    assert [r["reason"] for r in result.retrains] == ["schedule"]
    assert result.retrains[0]["jobs"] == 170
    assert set(result.estimates.model_version) == {1, 2}


def test_bad_options_are_refused_by_name(predictor):
    with pytest.raises(ValueError, match="retrain"):
        run_backtest(predictor, _history(), retrain="hourly")
    with pytest.raises(ValueError, match="protocol"):
        run_backtest(predictor, _history(), protocol="random")
    with pytest.raises(ValueError, match="start"):
        run_backtest(predictor, _history(), start=1.5)


def test_cli_backtest_of_a_file_prints_json(tmp_path, capsys):
    path = tmp_path / "jobs.csv"
    _history().to_csv(path, index=False)
    assert main(["backtest", str(path), "--start", "70%", "--model-type",
                 "linear_regression", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "online" and result["groups"][0]["jobs"] == 48


# -- online conformal ---------------------------------------------------------------------
def test_online_conformal_follows_a_machine_that_turns_noisy():
    rng = np.random.default_rng(1)
    sigma = np.r_[np.full(1500, 0.05), np.full(1500, 0.2)]  # calibrated on the calm spell
    log_error = rng.normal(0, sigma)
    half = 1.2816 * 0.05  # the calm spell's 80% half-width
    conformal, inside = OnlineConformal(0.8), []
    for error in log_error:
        state = conformal.adjustment("g|m")
        inside.append(-half * state.low <= error <= half * state.high)
        conformal.update("g|m", error / half)
    noisy = np.array(inside[1700:])
    assert 0.75 <= noisy.mean() <= 0.85  # a fixed interval would cover about 0.25
    assert np.mean(np.abs(log_error[1700:]) <= half) < 0.3


def test_each_tail_is_calibrated_apart():
    """Errors skewed as a shared machine skews them (rarely faster, often much slower): a
    symmetric interval misses 6.6% below and 13.4% above; each tail widened apart misses about 10%
    on each side."""
    rng = np.random.default_rng(2)
    log_error = rng.gamma(2.0, 0.05, 4000) - 0.1
    half = np.quantile(np.abs(log_error), 0.8)
    assert np.mean(log_error < -half) < 0.07 and np.mean(log_error > half) > 0.13
    conformal, below, above = OnlineConformal(0.8), [], []
    for error in log_error:
        state = conformal.adjustment("g|m")
        below.append(error < -half * state.low)
        above.append(error > half * state.high)
        conformal.update("g|m", error / half)
    assert 0.08 <= np.mean(below[500:]) <= 0.12 and 0.08 <= np.mean(above[500:]) <= 0.12


def test_stated_confidence_is_recalibrated_on_the_replay():
    """A confidence that states 0.9 where 0.98 land within ±20% is shifted up until they agree;
    one that states 0.9 where 0.7 do, down."""
    for observed in (0.98, 0.7):
        rng = np.random.default_rng(3)
        conformal, stated = OnlineConformal(0.8), []
        for hit in rng.random(3000) < observed:
            stated.append(adjusted_confidence(0.9, conformal.adjustment("g|m").log_odds))
            conformal.update("g|m", 0.0, 0.9, bool(hit))
        assert np.mean(stated[500:]) == pytest.approx(observed, abs=0.02)


def test_a_new_group_uses_the_pooled_widening_until_it_has_its_own():
    conformal = OnlineConformal(0.8, min_group_jobs=30)
    for _ in range(40):
        conformal.update("a|m", 3.0)  # every job far above: the upper tail widens
    assert conformal.adjustment("new|m") == conformal.adjustment("a|m")
    assert conformal.adjustment("a|m").high > 1 > conformal.adjustment("a|m").low
    for _ in range(29):
        conformal.update("new|m", 0.0)
    conformal.update("a|m", 3.0)
    assert conformal.adjustment("new|m") == conformal.adjustment("*")  # 29: still pooled
    conformal.update("new|m", 0.0)
    conformal.update("a|m", 3.0)
    assert conformal.adjustment("new|m").high < conformal.adjustment("*").high  # its own
    conformal.update("a|m", float("nan"))  # ignored, not a crash


def test_normalised_scores_are_one_on_each_edge_of_the_interval():
    assert normalised_scores([12.0, 10.0, 5.0], [10.0] * 3, [5.0] * 3, [12.0] * 3) == \
        pytest.approx([1, 0, -1])


# -- the team's real jobs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_predictors(tmp_path_factory):
    from tests.conftest import REAL_DATA

    predictors = {}
    for name, profiles in (("diffusion-jobs.csv", {}), ("video-dit-jobs.csv", WAN_PROFILE)):
        folder = tmp_path_factory.mktemp("backtest")
        store = Store(f"sqlite:///{folder / 'b.db'}",
                      Settings(spool_dir=folder / "spool", model_profiles=profiles))
        import_jobs(REAL_DATA / name, store)
        predictors[name] = PerformancePredictor(store)
    return predictors


# (file, protocol, retrain, family): within-20% and within-10% at least. The UNet's anchor
# alone is enough; the video transformer's small jobs need the boosted correction for 10%
# (0.832; 0.857 while the correction could split on the hour of day, which here only told the
# file's two clock hours apart — issue 20, item 6).
REAL_SPLITS = [("diffusion-jobs.csv", "time", "never", "linear_regression", 0.97, 0.85),
               ("diffusion-jobs.csv", "online", "auto", "linear_regression", 0.97, 0.85),
               ("diffusion-jobs.csv", "size", "never", "linear_regression", 0.95, 0.85),
               ("video-dit-jobs.csv", "time", "never", "gradient_boosting", 0.95, 0.80),
               ("video-dit-jobs.csv", "size", "never", "gradient_boosting", 0.95, 0.75)]


@pytest.mark.slow
@pytest.mark.parametrize("data,protocol,retrain,family,within_20,within_10", REAL_SPLITS)
def test_real_backtests_hold_their_interval(real_predictors, data, protocol, retrain, family,
                                            within_20, within_10):
    result = run_backtest(real_predictors[data], protocol=protocol, retrain=retrain,
                          model_type=family)
    overall = result.table().loc[("all", "all", "all")]
    assert overall.within_20_percent >= within_20
    assert overall.within_10_percent >= within_10
    assert 0.75 <= overall.interval_coverage <= 0.85


@pytest.mark.slow
def test_real_confidence_is_honest(real_predictors):
    estimates = run_backtest(real_predictors["video-dit-jobs.csv"], protocol="time").estimates
    table = reliability_table(estimates)
    well_filled = table[table.jobs >= 20]
    assert len(well_filled) >= 2
    # Within sampling noise of the bin's size (2.5 standard errors, plus a little).
    stated = well_filled.stated_confidence
    noise = 2.5 * np.sqrt(stated * (1 - stated) / well_filled.jobs) + 0.03
    assert (abs(stated - well_filled.observed_within_20_percent) <= noise).all()


@pytest.mark.slow
@pytest.mark.parametrize("data", ["diffusion-jobs.csv", "video-dit-jobs.csv"])
def test_real_backtest_misses_each_tail_about_equally(data):
    """`perflib backtest` of each shared file: coverage 0.75–0.85 with each tail's misses 7–13%
    (before the tails were apart: 7.0% / 13.0% on the UNet, 2.9% / 19.8% on the video
    transformer); the stated confidence within 0.02 of the share within ±20%."""
    from perflib.prediction.backtest import backtest_file
    from tests.conftest import REAL_DATA

    estimates = backtest_file(REAL_DATA / data, Settings()).estimates
    below = np.mean(estimates.actual_seconds < estimates.low_seconds)
    above = np.mean(estimates.actual_seconds > estimates.high_seconds)
    assert 0.75 <= 1 - below - above <= 0.85
    assert 0.07 <= below <= 0.13 and 0.07 <= above <= 0.13, (below, above)
    within = np.mean(np.abs(estimates.predicted_seconds / estimates.actual_seconds - 1) <= 0.2)
    assert estimates.confidence.mean() == pytest.approx(within, abs=0.02)


def test_drift_follows_a_step_within_six_jobs():
    """After a ×1.5 step the 20-job median would lag ten jobs; the level moves once the latest
    STEP_JOBS (six) all sit off one side of it — and a lone slow job moves nothing."""
    from perflib.prediction.features import STEP_JOBS, level, past_median

    jobs = _history(40)
    ratio = np.r_[np.zeros(30), np.full(10, np.log(1.5))]
    keys = np.full(40, "g|m")
    median = past_median(jobs, keys, ratio, window=20, min_periods=5)
    stepped = past_median(jobs, keys, ratio, window=20, min_periods=5, statistic="level")
    first_after = 30 + STEP_JOBS  # STEP_JOBS new-level jobs finished before it was submitted
    assert median[first_after] == 0.0
    assert stepped[first_after] == pytest.approx(np.log(1.5))
    assert stepped[first_after - 1] == 0.0 and (np.nan_to_num(stepped[:30]) == 0).all()
    assert level(np.r_[np.zeros(19), np.log(3.0)]) == 0.0
    assert level(np.r_[np.zeros(14), np.full(STEP_JOBS, np.log(1.5))]) == pytest.approx(np.log(1.5))
    assert level(np.r_[np.zeros(15), np.full(STEP_JOBS - 1, np.log(1.5))]) == 0.0


def test_auto_retraining_replays_productions_keep_or_reject(predictor, monkeypatch):
    """The replay's `--retrain auto` keeps a candidate only as `perflib maintain` would: here
    the active model is made to look perfect on the compared jobs, so the candidate is not
    kept and the first model goes on answering."""
    from perflib.prediction import retraining_choice

    jobs = _history(240)
    late = np.arange(240) >= 150
    jobs.loc[late, "total_seconds"] *= 1.5
    jobs["finished_at"] = jobs.started_at + pd.to_timedelta(jobs.total_seconds, unit="s")
    real = retraining_choice.held_out_estimates

    def priced(model, rows_of, rows):  # the first model, trained on 120 jobs: exact
        return rows_of.total_seconds.to_numpy()[rows] if model.n_rows == 120 else \
            real(model, rows_of, rows)

    result = run_backtest(predictor, jobs, start=0.5, retrain="auto",
                          model_type="linear_regression")
    assert result.retrains and result.retrains[0]["compared_on"] > 0
    assert result.estimates.model_version.max() == 1 + sum(r["kept"] for r in result.retrains)
    monkeypatch.setattr(retraining_choice, "held_out_estimates", priced)
    kept_not = run_backtest(predictor, jobs, start=0.5, retrain="auto",
                            model_type="linear_regression")
    assert kept_not.retrains and not any(r["kept"] for r in kept_not.retrains)
    assert (kept_not.estimates.model_version == 1).all()


@pytest.mark.slow
def test_real_backtest_after_a_step_learns_the_new_level(tmp_path):
    """The shared UNet jobs ×1.5 from 60% of the history on: `perflib backtest --start 60%
    --retrain auto`, replaying production's rule and keep-or-reject, lands ≥ 0.93 within ±20%
    (0.910 when drift lagged ten jobs and every candidate was adopted; 0.940 measured)."""
    from perflib.prediction.backtest import backtest_file
    from tests.conftest import REAL_DATA

    jobs = pd.read_csv(REAL_DATA / "diffusion-jobs.csv")
    step = int(round(len(jobs) * 0.6))
    for column in ("total_seconds", "preprocessing_seconds", "generation_seconds",
                   "decoding_seconds"):
        jobs.loc[step:, column] *= 1.5
    started = pd.to_datetime(jobs.started_at)
    jobs["finished_at"] = (started + pd.to_timedelta(jobs.total_seconds, unit="s")).dt.strftime(
        "%Y-%m-%dT%H:%M:%S.%f")
    jobs.to_csv(tmp_path / "stepped.csv", index=False)
    result = backtest_file(tmp_path / "stepped.csv", Settings(), start=0.6, retrain="auto")
    estimates = result.estimates
    assert result.retrains and all("kept" in r for r in result.retrains)
    assert np.mean(np.abs(estimates.predicted_seconds / estimates.actual_seconds - 1)
                   <= 0.2) >= 0.93
