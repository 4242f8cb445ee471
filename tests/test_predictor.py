"""The predictor on the team's real measured jobs, and its failure paths."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import skops.io
import sqlalchemy as sa

from perflib.config import ModelProfile, Settings
from perflib.prediction import predictor as predictor_module
from perflib.prediction.features import (FEATURE_DESCRIPTIONS, build_features, feature_columns,
                              past_median)
from perflib.prediction.geometry import infer_profiles
from perflib.prediction.models import FAMILIES, Calibration, MatrixEncoder, make_family
from perflib.prediction.predictor import (IncompatibleModelError, PerformancePredictor,
                               UntrustedModelError, load_model_blob)
from perflib.store import Store
from perflib.store.importer import import_jobs
from perflib.store.schema import performance_prediction_models

WAN_PROFILE = {"tiny-wan-dit-s": ModelProfile(vae_spatial_factor=8, vae_temporal_factor=4,
                                              patch_size=2, full_attention=True)}
VIDEO_REQUEST = {"pipeline_type": "video", "resolution": "512x512", "frame_count": 16,
                 "steps": 20, "job_type": "scene", "model_name": "tiny-unet-b",
                 "gpu_name": "cpu-2t", "guidance_scale": 7.5}


def _store_with(tmp_path_factory, data: str, profiles=None) -> Store:
    folder = tmp_path_factory.mktemp("predictor")
    store = Store(f"sqlite:///{folder / 'perflib.db'}",
                  Settings(spool_dir=folder / "spool", model_profiles=profiles or {}))
    import_jobs(data, store)
    return store


@pytest.fixture(scope="module")
def diffusion_store(tmp_path_factory, request) -> Store:
    from tests.conftest import REAL_DATA

    return _store_with(tmp_path_factory, REAL_DATA / "diffusion-jobs.csv")


@pytest.fixture(scope="module")
def dit_store(tmp_path_factory) -> Store:
    from tests.conftest import REAL_DATA

    return _store_with(tmp_path_factory, REAL_DATA / "video-dit-jobs.csv", WAN_PROFILE)


# -- acceptance on real data ---------------------------------------------------------------
@pytest.mark.slow
def test_diffusion_time_split_accuracy_and_calibrated_interval(diffusion_store):
    result = PerformancePredictor(diffusion_store).train_model(None, "auto", split="time")
    assert result["n_test"] == 200 and result["n_train"] == 467
    assert result["accuracy_within_20_percent"] >= 0.95
    assert 0.72 <= result["interval_coverage"] <= 0.88


@pytest.mark.slow
def test_diffusion_extrapolates_to_the_largest_jobs(diffusion_store):
    result = PerformancePredictor(diffusion_store).train_model(None, "auto", split="size",
                                                               test_fraction=0.2)
    assert result["accuracy_within_20_percent"] >= 0.93


@pytest.mark.parametrize("split,fraction", [("time", 0.3), ("size", 0.2)])
@pytest.mark.slow
def test_video_transformer_with_its_profile(dit_store, split, fraction):
    result = PerformancePredictor(dit_store).train_model(None, "auto", split=split,
                                                         test_fraction=fraction)
    assert result["accuracy_within_20_percent"] >= 0.90


@pytest.fixture(scope="module")
def dit_store_without_profile(tmp_path_factory) -> Store:
    from tests.conftest import REAL_DATA

    return _store_with(tmp_path_factory, REAL_DATA / "video-dit-jobs.csv")


@pytest.mark.parametrize("split,fraction", [("time", 0.3), ("size", 0.2)])
@pytest.mark.slow
def test_video_transformer_without_a_profile_infers_its_geometry(dit_store_without_profile,
                                                                 split, fraction):
    predictor = PerformancePredictor(dit_store_without_profile)
    result = predictor.train_model(None, "linear_regression", split=split,
                                   test_fraction=fraction)
    inferred = result["inferred_profiles"]["tiny-wan-dit-s"]
    assert inferred["vae_temporal_factor"] == 4 and inferred["full_attention"]
    assert result["accuracy_within_20_percent"] >= 0.90  # 0.69 on the size split with SD-style
    predictor.save_model_to_db(None, "linear_regression")
    assert PerformancePredictor(dit_store_without_profile).active_model("video").profiles[
        "tiny-wan-dit-s"].full_attention


@pytest.mark.slow
def test_geometry_is_left_alone_where_configured_or_where_the_default_fits(diffusion_store,
                                                                            dit_store):
    assert PerformancePredictor(diffusion_store).train_model(
        None, "linear_regression")["inferred_profiles"] == {}  # a UNet: per-frame attention
    assert PerformancePredictor(dit_store).train_model(
        None, "linear_regression")["inferred_profiles"] == {}  # its profile is configured


def test_geometry_inference_recovers_a_planted_geometry():
    rng = np.random.default_rng(3)
    n = 300
    side = rng.choice([256, 384, 512, 640], n)
    jobs = pd.DataFrame({"model_name": "planted", "width": side, "height": side,
                         "frame_count": rng.choice([9, 17, 33, 49, 65, 81], n),
                         "steps": rng.integers(10, 40, n), "guidance_scale": 1.0})
    for temporal, full in [(8, True), (1, True), (4, False), (1, False)]:
        truth = {"planted": ModelProfile(vae_temporal_factor=temporal, full_attention=full)}
        features = build_features(jobs, truth)
        seconds = (0.5 + 2e-6 * features.work_units + 4e-10 * features.attention_work) \
            * np.exp(rng.normal(0, 0.03, n))
        positions = np.arange(n)
        inferred = infer_profiles(jobs, seconds.to_numpy(), positions[:200], positions[200:], {})
        assert inferred.get("planted", ModelProfile()) == truth["planted"]


@pytest.mark.slow
def test_auto_picks_the_best_family_and_reports_every_metric(diffusion_store):
    result = PerformancePredictor(diffusion_store).train_model("image", "auto")
    comparison = result["comparison"]
    assert set(comparison) == set(FAMILIES)
    best = max(comparison.values(), key=lambda m: (m["accuracy_within_20_percent"], -m["mape"]))
    assert comparison[result["model_type"]] == best
    for metrics in comparison.values():
        assert set(metrics) == {"accuracy_within_20_percent", "accuracy_within_10_percent",
                                "mape", "median_absolute_error_seconds", "interval_coverage",
                                "n_train", "n_test"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_each_family_trains_saves_and_estimates(diffusion_store, family):
    predictor = PerformancePredictor(diffusion_store)
    result = predictor.train_model(None, family)
    assert result["model_type"] == family and result["accuracy_within_20_percent"] > 0.8
    predictor.save_model_to_db(None, family)
    estimate = PerformancePredictor(diffusion_store).estimate(VIDEO_REQUEST)
    assert estimate["prediction_method"] == "ml_model"
    assert estimate["model_used"].startswith(family)
    low, high = estimate["uncertainty_range"]
    assert low < estimate["predicted_time_seconds"] < high
    assert 0 <= estimate["confidence"] <= 1


# -- features --------------------------------------------------------------------------------
def test_feature_matrix_documents_every_feature_and_survives_unknown_categories():
    jobs = pd.DataFrame([{"width": 768, "height": 512, "frame_count": 16, "steps": 25,
                          "guidance_scale": 7.5, "batch_size": 2, "pipeline_type": "video",
                          "model_name": "never-seen", "gpu_name": None}])
    features = build_features(jobs)
    assert list(features.columns) == list(FEATURE_DESCRIPTIONS) and len(FEATURE_DESCRIPTIONS) >= 15
    row = features.iloc[0]
    assert row.tokens_per_frame == 96 * 64 and row.cfg_factor == 2
    assert row.work_units == 96 * 64 * 16 * 2 * 25 * 2
    assert row.attention_work == row.work_units * row.tokens_per_frame
    assert row.gpu_name == "unknown"


def test_model_profile_counts_true_latent_tokens_and_full_attention():
    jobs = pd.DataFrame([{"width": 384, "height": 256, "frame_count": 33, "steps": 10,
                          "guidance_scale": 1.0, "model_name": "tiny-wan-dit-s"}])
    row = build_features(jobs, WAN_PROFILE).iloc[0]
    assert row.tokens_per_frame == (384 / 16) * (256 / 16) and row.latent_frames == 9
    assert row.attention_span == row.tokens_per_frame * 9
    assert build_features(jobs).iloc[0].latent_frames == 33  # SD-style default


def test_history_feature_never_sees_the_future():
    start = pd.Timestamp("2026-11-01", tz="UTC")
    jobs = pd.DataFrame({
        "submitted_at": [start + pd.Timedelta(minutes=i) for i in range(6)],
        "finished_at": [start + pd.Timedelta(minutes=i, seconds=30) for i in range(6)],
        "status": "success"})
    keys = np.array(["gpu|m"] * 6)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    before = past_median(jobs, keys, values)
    assert np.isnan(before[0]) and before[1] == 1.0 and before[3] == 2.0
    changed = values.copy()
    changed[4:] = 1000.0  # rewrite the future and the job itself
    after = past_median(jobs, keys, changed)
    np.testing.assert_array_equal(before[:5], after[:5])
    # a job that finished after a later one was submitted is not yet history for it
    late = jobs.assign(finished_at=jobs.finished_at.where(jobs.index != 2,
                                                          start + pd.Timedelta(hours=1)))
    assert past_median(late, keys, values)[3] == 1.5
    # the recent spread (which scales intervals) is just as blind to the future
    spread_before = past_median(jobs, keys, values, min_periods=2, statistic="spread")
    spread_after = past_median(jobs, keys, changed, min_periods=2, statistic="spread")
    np.testing.assert_array_equal(spread_before[:5], spread_after[:5])
    assert spread_before[3] == pytest.approx(1.0 / 1.349)  # IQR of 1, 2, 3 is 1


def test_job_rows_as_columns_give_the_same_features_as_a_frame():
    """An estimate builds features from column lists, training from a DataFrame: same code,
    same numbers (timestamps included)."""
    submitted = [pd.Timestamp("2026-11-02 22:30", tz="UTC").to_pydatetime(),
                 pd.Timestamp("2026-11-05 03:10", tz="Europe/Berlin").to_pydatetime()]
    columns = {"width": [768, 512], "height": [512, 512], "frame_count": [16, None],
               "steps": [25, 30], "guidance_scale": [7.5, 1.0], "model_name": ["m", None],
               "pipeline_type": ["video", "image"], "submitted_at": submitted}
    from_columns = pd.DataFrame(feature_columns(columns, WAN_PROFILE))
    from_frame = build_features(pd.DataFrame(columns), WAN_PROFILE)
    pd.testing.assert_frame_equal(from_columns, from_frame)
    assert list(from_frame.hour_of_day) == [22, 2] and list(from_frame.day_of_week) == [0, 3]


def test_matrix_encoder_gives_rare_and_unseen_values_one_code():
    X = np.array([[1.0, np.nan, "a"]] * 6 + [[2.0, np.nan, "b"]] * 5 + [[3.0, np.nan, "rare"]],
                 dtype=object)
    encoder = MatrixEncoder(categorical=[2], min_frequency=5).fit(X)
    out = encoder.transform(np.array([[4.0, 1.0, "b"], [5.0, np.nan, "rare"],
                                      [6.0, 2.0, "new"], [7.0, np.nan, None]], dtype=object))
    np.testing.assert_array_equal(out[:, 0], [3.0, 3.0, 3.0, 3.0])  # clamped to 1–3
    np.testing.assert_array_equal(out[:, 1], 0.0)  # empty in training: carries nothing
    np.testing.assert_array_equal(out[:, 2], [1.0, 2.0, 2.0, 2.0])
    indicators = MatrixEncoder(categorical=[2], one_hot=True).fit(X).transform(X[[0, 6, 11]])
    np.testing.assert_array_equal(indicators[:, 2:], [[1, 0], [0, 1], [0, 0]])


@pytest.mark.slow
def test_a_short_history_still_trains_every_family(tmp_path, real_data):
    """35 jobs: categories all rare and some history columns empty in the first fits."""
    jobs = pd.read_csv(real_data / "video-dit-jobs.csv").head(35)
    jobs.to_csv(tmp_path / "few.csv", index=False)
    store = Store(f"sqlite:///{tmp_path / 'few.db'}", Settings(spool_dir=tmp_path))
    import_jobs(tmp_path / "few.csv", store)
    for split in ("time", "size"):
        result = PerformancePredictor(store).train_model(None, "auto", split=split)
        assert set(result["comparison"]) == set(FAMILIES)


def test_a_correction_never_runs_away_outside_the_training_range():
    rng = np.random.default_rng(0)
    steps = rng.uniform(10, 50, 400)
    features = build_features(pd.DataFrame({"width": 512, "height": 512, "steps": steps}))
    anchored = features.assign(log_cost_seconds=0.0, recent_log_ratio=0.0)
    seconds = np.exp(0.01 * steps)  # the correction grows with steps
    model = make_family("neural_network").fit(anchored, seconds)
    low, high = model.correction_range_
    far = anchored.iloc[:3].assign(steps=[1000.0, 5000.0, 9000.0],
                                   step_passes=[2000.0, 10000.0, 18000.0])
    corrections = np.log(model.predict(far))
    assert high == pytest.approx(0.5, abs=0.05)
    assert (corrections <= high + 1e-9).all() and (corrections >= low - 1e-9).all()


@pytest.mark.slow
def test_single_estimate_matches_the_batch_path(diffusion_store):
    predictor = PerformancePredictor(diffusion_store)
    predictor.train_model(None, "gradient_boosting")
    predictor.save_model_to_db(None, "gradient_boosting")
    single = predictor.estimate(VIDEO_REQUEST)
    row = {**VIDEO_REQUEST, "width": 512, "height": 512}
    del row["resolution"]
    batch = predictor.estimate_batch(pd.DataFrame([row]), "video").iloc[0]
    assert single["predicted_time_seconds"] == pytest.approx(batch.predicted_time_seconds,
                                                             rel=1e-3)
    assert single["uncertainty_range"] == pytest.approx([batch.low, batch.high], rel=1e-3)


def test_intervals_follow_each_groups_recent_spread():
    """Normalised conformal: calm and noisy groups each get about the asked coverage, where one
    interval for all would over-cover the calm and under-cover the noisy."""
    rng = np.random.default_rng(1)
    sigma = np.where(rng.random(4000) < 0.5, 0.05, 0.25)
    actual = np.exp(rng.normal(0, sigma))
    calibration = Calibration(0.8).fit(actual[:2000], np.ones(2000), sigma[:2000])
    low, high = calibration.interval(np.ones(2000), sigma[2000:])
    inside = (actual[2000:] >= low) & (actual[2000:] <= high)
    for group in (0.05, 0.25):
        assert 0.75 <= inside[sigma[2000:] == group].mean() <= 0.85
    typical = calibration.typical_spread_
    low, high = calibration.interval([10.0] * 4, [0.05, 0.25, np.nan, typical])
    assert np.log(high[1] / 10) == pytest.approx(5 * np.log(high[0] / 10))
    assert (low[2], high[2]) == (low[3], high[3])  # unknown spread: the typical one
    calm, noisy = calibration.confidence([10.0, 10.0], [0.05, 0.25])
    assert calm > 0.99 and 0.5 < noisy < 0.65  # P(|N(0, 0.25)| within ±20%) ≈ 0.58


@pytest.mark.slow
def test_a_gpu_that_turns_noisy_gets_wider_intervals(tmp_path_factory):
    from tests.conftest import REAL_DATA

    store = _store_with(tmp_path_factory, REAL_DATA / "diffusion-jobs.csv")
    predictor = PerformancePredictor(store)
    predictor.train_model(None, "linear_regression")
    predictor.save_model_to_db(None, "linear_regression")
    request = {**VIDEO_REQUEST, "gpu_name": "cpu-2t"}
    low, high = predictor.estimate(request)["uncertainty_range"]
    calm = np.log(high / low)

    # A day later, the same GPU's jobs run ±30% at random (a noisy neighbour moved in).
    kept = ["pipeline_type", "job_type", "status", "width", "height", "frame_count", "steps",
            "batch_size", "guidance_scale", "sampler", "model_name", "gpu_name", "started_at",
            "finished_at", "total_seconds"]
    jobs = predictor.training_data()
    recent = jobs[jobs.gpu_name == "cpu-2t"].tail(40)[kept].to_dict("records")
    rng = np.random.default_rng(0)
    store.write_jobs([{**row, "job_id": f"noisy-{i}",
                       "started_at": row["started_at"] + pd.Timedelta(days=1),
                       "finished_at": row["finished_at"] + pd.Timedelta(days=1),
                       "total_seconds": row["total_seconds"] * np.exp(rng.normal(0, 0.3))}
                      for i, row in enumerate(recent)])
    low, high = PerformancePredictor(store).estimate(request)["uncertainty_range"]
    assert np.log(high / low) > 3 * calm


# -- fallback, model store ---------------------------------------------------------------------
def test_heuristic_without_history_or_model(tmp_path):
    predictor = PerformancePredictor(Store(f"sqlite:///{tmp_path / 'empty.db'}",
                                           Settings(spool_dir=tmp_path)))
    result = predictor.estimate(VIDEO_REQUEST)
    assert result["prediction_method"] == "heuristic" and result["model_used"] == "heuristic"
    low, high = result["uncertainty_range"]
    assert high / low >= 3.9 and result["confidence"] <= 0.2
    with pytest.raises(ValueError, match="at least 30"):
        predictor.train_model("video")


def test_heuristic_learns_from_a_short_history(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'few.db'}", Settings(spool_dir=tmp_path))
    store.write_jobs([{"job_id": f"j{i}", "pipeline_type": "image", "status": "success",
                       "width": 512, "height": 512, "steps": steps, "guidance_scale": 7.5,
                       "started_at": f"2026-11-01T10:{i:02d}:00Z",
                       "total_seconds": 1.0 + 0.05 * steps}
                      for i, steps in enumerate([10, 20, 30, 40, 50, 15, 25])])
    predictor = PerformancePredictor(store)
    result = predictor.estimate({"pipeline_type": "image", "resolution": "512x512",
                                 "steps": 30})
    assert result["prediction_method"] == "heuristic"
    assert result["predicted_time_seconds"] == pytest.approx(2.5, rel=0.1)


@pytest.mark.slow
def test_only_three_versions_kept_and_new_versions_picked_up(diffusion_store, monkeypatch):
    monkeypatch.setattr(predictor_module, "RELOAD_CHECK_SECONDS", 0.0)
    trainer = PerformancePredictor(diffusion_store)
    serving = PerformancePredictor(diffusion_store)
    trainer.train_model(None, "linear_regression")
    versions = [trainer.save_model_to_db(None, "linear_regression") for _ in range(2)]
    assert serving.estimate(VIDEO_REQUEST)["model_used"].startswith(
        f"linear_regression v{versions[-1]}")
    versions += [trainer.save_model_to_db(None, "linear_regression") for _ in range(3)]
    table = performance_prediction_models
    with diffusion_store.engine.connect() as conn:
        kept = conn.execute(sa.select(table.c.version).where(
            table.c.family == "linear_regression")).scalars().all()
    assert sorted(kept) == versions[-3:]
    assert serving.estimate(VIDEO_REQUEST)["model_used"].startswith(
        f"linear_regression v{versions[-1]}")
    status = serving.model_status()
    assert status["video"]["version"] == versions[-1] and not status["video"]["heuristic_in_use"]


class Payload:
    """Anything not on the trusted list — it must never be instantiated from a blob."""


@pytest.mark.slow
def test_tampered_model_blob_is_refused(diffusion_store, caplog, monkeypatch):
    monkeypatch.setattr(predictor_module, "RELOAD_CHECK_SECONDS", 0.0)
    blob = skops.io.dumps({"model": Payload()})
    with pytest.raises(UntrustedModelError, match="Payload"):
        load_model_blob(blob)
    with pytest.raises(UntrustedModelError):
        load_model_blob(b"not a model at all")
    trainer = PerformancePredictor(diffusion_store)
    trainer.train_model(None, "linear_regression")
    older = trainer._trained[("all", "linear_regression")]
    older.format = 1
    with pytest.raises(IncompatibleModelError, match="retrain"):
        load_model_blob(skops.io.dumps(older))
    older.format = predictor_module.MODEL_FORMAT
    good = trainer.save_model_to_db(None, "linear_regression")
    with diffusion_store.engine.begin() as conn:
        table = performance_prediction_models
        conn.execute(sa.update(table).values(is_active=False))
        conn.execute(sa.insert(table).values(
            pipeline_type="all", family="random_forest", version=99, is_active=True, blob=blob,
            created_at=pd.Timestamp.now(tz="UTC").to_pydatetime()))
    with caplog.at_level(logging.WARNING, logger="perflib"):
        result = PerformancePredictor(diffusion_store).estimate(VIDEO_REQUEST)
    assert result["model_used"] == f"linear_regression v{good} (all)"
    assert "random_forest v99 (all) refused" in caplog.text and "Payload" in caplog.text
    status = PerformancePredictor(diffusion_store).model_status()["video"]
    assert status["active"]["version"] == 99 and status["version"] == good
    assert status["refused"][0]["version"] == 99 and "Payload" in status["refused"][0]["reason"]


# -- estimate API ---------------------------------------------------------------------------
def test_recommendations_are_priced_and_only_when_cheaper(tmp_path):
    predictor = PerformancePredictor(Store(f"sqlite:///{tmp_path / 'r.db'}",
                                           Settings(spool_dir=tmp_path)))
    costly = predictor.estimate({"pipeline_type": "video", "resolution": "768x768",
                                 "frame_count": 60, "steps": 30, "guidance_scale": 7.5})
    text = " | ".join(costly["recommendations"])
    assert "steps 30 → 20 saves about" in text and "frame_count 60 → 30" in text
    assert "resolution 768x768 → 576x576" in text and "guidance_scale 7.5 → 1" in text
    lean = predictor.estimate({"pipeline_type": "video", "resolution": "512x512",
                               "frame_count": 16, "steps": 10, "guidance_scale": 1.0})
    assert lean["recommendations"] == []
    saving = float(text.split("steps 30 → 20 saves about ")[1].split(" s")[0])
    assert saving == pytest.approx(costly["predicted_time_seconds"] * 0.33, rel=0.1)


@pytest.mark.parametrize("bad,field", [
    ({"resolution": "abc"}, "resolution"), ({"steps": -5}, "steps"),
    ({"frame_count": 0}, "frame_count"), ({"pipeline_type": "audio"}, "pipeline_type"),
    ({"steps": None}, "steps"), ({"resolution": "99999x10"}, "resolution"),
    ({"guidance_scale": "high"}, "guidance_scale"), ({"steps": 5000}, "steps"),
])
def test_bad_inputs_raise_errors_naming_the_field(tmp_path, bad, field):
    predictor = PerformancePredictor(Store(f"sqlite:///{tmp_path / 'v.db'}",
                                           Settings(spool_dir=tmp_path)))
    with pytest.raises(ValueError, match=field):
        predictor.estimate({**VIDEO_REQUEST, **bad})


@pytest.mark.slow
def test_model_store_on_postgres(pg_url, real_data, tmp_path):
    store = Store(pg_url, Settings(spool_dir=tmp_path))
    import_jobs(real_data / "diffusion-jobs.csv", store)
    predictor = PerformancePredictor(store)
    predictor.train_model("video", "gradient_boosting")
    assert predictor.save_model_to_db("video", "gradient_boosting") == 1
    result = PerformancePredictor(store).estimate(VIDEO_REQUEST)
    assert result["model_used"] == "gradient_boosting v1 (video)"


@pytest.mark.slow
def test_cli_train_and_estimate(diffusion_store, capsys):
    from perflib.cli import main

    url = str(diffusion_store.url)
    assert main(["--database-url", url, "train", "--model-type", "linear_regression"]) == 0
    assert "chose linear_regression" in capsys.readouterr().out
    assert main(["--database-url", url, "estimate", "--pipeline-type", "video", "--resolution",
                 "768x768", "--frame-count", "60", "--steps", "25", "--job-type", "scene"]) == 0
    assert '"prediction_method"' in capsys.readouterr().out
    assert main(["--database-url", url, "estimate", "--pipeline-type", "video", "--resolution",
                 "abc", "--steps", "25"]) == 2
    assert "resolution" in capsys.readouterr().err
