"""The history simulator: deterministic, shaped like a render farm, and its incidents show."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from perflib.prediction.work_terms import STORED_TERMS
from perflib.sim.simulate import (CUDA_CONTEXT_MB, EXPECTED_BOTTLENECKS, HEAVY_MODEL,
                                  INCIDENT_KINDS, MODELS, Incident, SimulationResult,
                                  default_incidents, generate_jobs, simulate_history)
from perflib.store import Store, schema

END = datetime(2025, 3, 3, tzinfo=timezone.utc)      # a Monday, midnight
RTX_4090 = "NVIDIA GeForce RTX 4090"
A100 = "NVIDIA A100-SXM4-80GB"


@lru_cache(maxsize=None)
def history(weeks: int = 8, gpus: int = 2, seed: int = 0, incidents: tuple = (),
            jobs_per_day: float = 180.0) -> pd.DataFrame:
    """Generated jobs as a frame (cached: treat as read-only), with a few derived columns."""
    frame = pd.DataFrame(generate_jobs(weeks=weeks, gpus=gpus, seed=seed, end=END,
                                       incidents=incidents, jobs_per_day=jobs_per_day))
    tokens = (frame.width // 8) * (frame.height // 8)
    cfg = np.where(frame.guidance_scale > 1, 2, 1)
    frame["work"] = tokens * frame.frame_count * frame.batch_size * frame.steps * cfg
    frame["day"] = frame.submitted_at.dt.date
    seconds = {name: frame.phases.map(lambda phases, name=name: sum(
        p["seconds"] for p in phases if p["name"] == name)) for name in
        ("preprocessing", "generation", "decoding")}
    for name, values in seconds.items():
        frame[f"{name}_seconds"] = values
    frame["gpu_seconds"] = frame.generation_seconds + frame.decoding_seconds
    return frame


def in_window(frame: pd.DataFrame, incident: Incident) -> pd.Series:
    inside = frame.day >= incident.start
    return inside & (frame.day <= incident.end) if incident.end else inside


def incident_of(kind: str, weeks: int = 8) -> Incident:
    return next(i for i in default_incidents(END.date(), weeks) if i.kind == kind)


# -- writing through the store -----------------------------------------------------------------
def test_simulate_history_writes_jobs_phases_and_ground_truth_once(store, tmp_path):
    truth = tmp_path / "sim" / "incidents.json"
    incidents = [Incident("driver_regression", date(2025, 2, 28), None, "video")]
    result = simulate_history(store, weeks=1, seed=3, end=END, jobs_per_day=40,
                              incidents=incidents, ground_truth_path=truth, batch_size=100)
    assert isinstance(result, SimulationResult)
    assert result.start == END - timedelta(weeks=1) and result.end == END and result.gpus == 2
    assert result.jobs == result.inserted == store.count() > 150
    frame = store.jobs_frame()
    assert result.failed == (frame.status == "failed").sum()
    assert frame.job_id.str.match(r"^sim-3-\d+$").all()
    assert frame.submitted_at.min() >= result.start and frame.finished_at.max() <= END
    assert store.count(schema.generation_phases) >= 3 * (frame.status == "success").sum()
    assert json.loads(truth.read_text()) == [incidents[0].as_ground_truth()]

    again = simulate_history(store, weeks=1, seed=3, end=END, jobs_per_day=40,
                             incidents=incidents)
    assert again.jobs == result.jobs and again.inserted == 0 and again.ground_truth_path is None
    assert store.count() == result.jobs


def test_end_defaults_to_this_hour(sqlite_url, settings):
    result = simulate_history(Store(sqlite_url, settings), weeks=1, jobs_per_day=5)
    now = datetime.now(timezone.utc)
    assert result.end.minute == result.end.second == result.end.microsecond == 0
    assert timedelta(0) <= now - result.end < timedelta(hours=1)


def test_ground_truth_lists_each_incident_with_its_expected_bottlenecks(sqlite_url, settings,
                                                                        tmp_path):
    incidents = default_incidents(END.date(), 8)
    result = simulate_history(Store(sqlite_url, settings), weeks=8, end=END, jobs_per_day=2,
                              incidents=incidents, ground_truth_path=tmp_path / "truth.json")
    truth = json.loads(result.ground_truth_path.read_text())
    assert [entry["kind"] for entry in truth] == [i.kind for i in incidents]
    for entry, incident in zip(truth, incidents):
        assert entry["start"] == incident.start.isoformat()
        assert entry["end"] == (incident.end.isoformat() if incident.end else None)
        assert entry["magnitude"] == incident.magnitude
        assert entry["expected_bottleneck"] == EXPECTED_BOTTLENECKS[incident.kind]
        assert {"pipeline_type", "job_type", "model_name"} <= entry.keys()
    regression = next(entry for entry in truth if entry["kind"] == "driver_regression")
    assert "slow_generation" in regression["expected_bottleneck"] and regression["end"] is None


# -- determinism and shape ---------------------------------------------------------------------
def test_same_seed_same_history_other_seed_other_history():
    first = list(generate_jobs(weeks=1, seed=7, end=END, jobs_per_day=60))
    assert first == list(generate_jobs(weeks=1, seed=7, end=END, jobs_per_day=60))
    other = list(generate_jobs(weeks=1, seed=8, end=END, jobs_per_day=60))
    assert [r["submitted_at"] for r in first] != [r["submitted_at"] for r in other]


def test_records_are_complete_and_in_the_domain():
    frame = history()
    assert len(frame) == pytest.approx(8 * 7 * 180, rel=0.08)
    # the store derives the cost terms at write time; simulated jobs have one pass each
    derived = {"extra_params", "passes", "tags", *STORED_TERMS}
    assert set(frame.columns) >= set(schema.JOB_COLUMNS) - derived
    assert (frame.pipeline_type == "image").mean() == pytest.approx(0.65, abs=0.03)
    images, videos = frame[frame.pipeline_type == "image"], frame[frame.pipeline_type == "video"]
    assert set(images.job_type) == {"character", "background", "keyframe"}
    assert set(videos.job_type) == {"scene", "loop", "trailer"}
    assert set(zip(images.width, images.height)) == {
        (512, 512), (768, 768), (1024, 1024), (768, 1024), (1024, 768), (512, 768)}
    assert set(zip(videos.width, videos.height)) == {
        (512, 512), (768, 768), (1024, 576), (576, 1024), (768, 432)}
    assert images.steps.between(20, 40).all() and videos.steps.between(20, 30).all()
    assert set(images.batch_size) == {1, 2, 3, 4} and (videos.batch_size == 1).all()
    assert (images.frame_count == 1).all() and videos.frame_count.between(16, 120).all()
    assert set(images.model_name) == {"sdxl-base", "anything-v5"}
    assert set(videos.model_name) == {"animatediff-v3", "wan2.1-1.3b"}
    assert set(frame.guidance_scale) == {1.0, 5.0, 7.0, 7.5, 9.0}
    assert (frame.guidance_scale > 1).mean() > 0.85
    assert set(frame.sampler) == {"euler", "euler_a", "dpmpp_2m", "ddim"}
    assert set(zip(frame.hostname, frame.gpu_name)) == {("render-01", RTX_4090),
                                                          ("render-02", A100)}
    assert (frame.vram_peak_mb <= frame.vram_total_mb).all()
    assert frame.gpu_util_avg_pct.between(0, 100).all()
    assert (frame.gpu_util_max_pct >= frame.gpu_util_avg_pct).all()
    assert (frame.cpu_max_pct >= frame.cpu_avg_pct).all() and (frame.cpu_max_pct <= 100).all()
    assert frame.gpu_temp_max_c.between(30, 90).all() and (frame.gpu_power_avg_w > 0).all()
    assert frame.predicted_seconds.notna().mean() == pytest.approx(0.6, abs=0.03)
    assert frame.user_rating.notna().mean() == pytest.approx(0.2, abs=0.03)
    assert set(frame.user_rating.dropna()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_more_gpus_get_realistic_names_and_hosts():
    frame = pd.DataFrame(generate_jobs(weeks=1, gpus=3, end=END, jobs_per_day=300))
    assert dict(zip(frame.hostname, frame.gpu_name)) == {
        "render-01": RTX_4090, "render-02": A100, "render-03": RTX_4090}


def test_timeline_is_consistent():
    frame = history()
    assert (frame.queued_at == frame.submitted_at).all()
    assert (frame.started_at >= frame.submitted_at).all()
    assert frame.submitted_at.min() >= END - timedelta(weeks=8)
    assert frame.finished_at.max() <= END       # jobs still running at the end are not in it
    assert frame.submitted_at.is_monotonic_increasing
    assert frame.started_at.is_monotonic_increasing             # FIFO
    queue = (frame.started_at - frame.submitted_at).dt.total_seconds()
    processing = (frame.finished_at - frame.started_at).dt.total_seconds()
    assert np.allclose(queue, frame.queue_seconds, atol=2e-6)
    assert np.allclose(processing, frame.processing_seconds, atol=2e-6)
    assert np.allclose(frame.total_seconds, frame.queue_seconds + frame.processing_seconds)
    assert (frame.init_seconds < frame.processing_seconds).all()


def test_phases_sum_to_processing_minus_init_and_follow_each_other():
    frame = history()
    phase_total = frame.preprocessing_seconds + frame.gpu_seconds
    assert np.allclose(phase_total, frame.processing_seconds - frame.init_seconds, atol=1e-6)
    for record in frame.sample(300, random_state=0).itertuples():
        phases = record.phases
        assert [p["seq"] for p in phases] == list(range(len(phases)))
        assert [p["name"] for p in phases] == ["preprocessing", "generation",
                                               "decoding"][:len(phases)]
        clock = record.started_at + timedelta(seconds=record.init_seconds)
        for phase in phases:
            assert abs((phase["started_at"] - clock).total_seconds()) < 2e-6
            clock = phase["started_at"] + timedelta(seconds=phase["seconds"])
        assert abs((record.finished_at - clock).total_seconds()) < 2e-6
    success = frame[frame.status == "success"]
    assert (success.phases.map(len) == 3).all()


# -- arrivals, cost and queueing ---------------------------------------------------------------
def test_arrivals_follow_the_working_day_and_week():
    frame = history(weeks=4, jobs_per_day=400)
    by_hour = frame.submitted_at.dt.hour.value_counts()
    assert by_hour[14] > 4 * by_hour[4]
    assert by_hour[12] < by_hour[11]                    # lunch
    per_weekday = frame.groupby(frame.submitted_at.dt.day_of_week).size() / 4
    assert per_weekday.loc[:4].min() > 2 * per_weekday.loc[5:].max()
    assert len(frame) / 28 == pytest.approx(400, rel=0.05)


def test_time_grows_with_work_and_matches_real_hardware():
    frame = history(weeks=4, jobs_per_day=600)
    ok = frame[(frame.status == "success") & (frame.init_seconds < 1)]
    videos = ok[ok.pipeline_type == "video"]
    rank = videos[["work", "gpu_seconds"]].corr(method="spearman").iloc[0, 1]
    assert rank > 0.9
    # More frames, everything else equal, takes longer.
    same = videos[(videos.model_name == "animatediff-v3") & (videos.steps == 25)
                  & (videos.width == 768) & (videos.height == 768)
                  & (videos.guidance_scale > 1) & (videos.gpu_name == RTX_4090)]
    medians = same.groupby("frame_count").gpu_seconds.median()
    assert len(medians) >= 4 and medians.is_monotonic_increasing
    # The same job is about 1.3x faster on the A100.
    per_work = ok.gpu_seconds / ok.work
    ratio = (per_work[ok.gpu_name == RTX_4090].groupby(ok.model_name).median()
             / per_work[ok.gpu_name == A100].groupby(ok.model_name).median())
    assert np.allclose(ratio, 1.3, rtol=0.15)
    # Calibration: SDXL 1024² 30 steps ~8-15 s, AnimateDiff 768² 60 frames 25 steps 90-240 s.
    sdxl = ok[(ok.model_name == "sdxl-base") & (ok.width == 1024) & (ok.height == 1024)
              & (ok.steps == 30) & (ok.batch_size == 1) & (ok.guidance_scale > 1)
              & (ok.gpu_name == RTX_4090)]
    assert 8 <= (sdxl.processing_seconds - sdxl.init_seconds).median() <= 15
    assert 90 <= (same[same.frame_count == 60].processing_seconds).median() <= 240


def test_model_switches_cost_initialisation():
    frame = history()
    previous = frame.sort_values("started_at").groupby("hostname").model_name.shift()
    switched = previous.notna() & (previous != frame.model_name)
    assert frame.init_seconds[switched].between(4, 15).all()
    assert frame.init_seconds[~switched & previous.notna()].lt(0.5).all()
    assert 0.1 < switched.mean() < 0.7


def test_queues_emerge_from_load():
    means = [history(weeks=2, gpus=gpus, jobs_per_day=400).queue_seconds.mean()
             for gpus in (1, 2, 4)]
    assert means[0] > 2 * means[1] > 0 and means[1] > means[2]
    frame = history(weeks=2, gpus=1, jobs_per_day=400)
    hour = frame.submitted_at.dt.hour
    busy = hour.between(10, 16) & (frame.submitted_at.dt.day_of_week < 5)
    assert frame.queue_seconds[busy].mean() > 3 * frame.queue_seconds[hour.between(2, 6)].mean()


def test_queue_depth_counts_jobs_still_waiting_at_submission():
    frame = history(weeks=1, gpus=1, jobs_per_day=400)
    frame = frame[frame.submitted_at < END - timedelta(days=1)]    # none left out after these
    submitted = frame.submitted_at.to_numpy()
    started = frame.started_at.to_numpy()
    # FIFO: jobs start in submission order, so the waiting ones are the last few started.
    expected = np.arange(len(frame)) - np.searchsorted(started, submitted, side="right")
    assert (frame.queue_depth.to_numpy() == np.maximum(expected, 0)).all()
    assert frame.queue_depth.max() > 2


# -- failures ----------------------------------------------------------------------------------
def vram_need_estimate(frame: pd.DataFrame) -> pd.Series:
    spec = frame.model_name.map(lambda name: MODELS.get(name, HEAVY_MODEL))
    latents = (frame.width // 8) * (frame.height // 8) * frame.frame_count * frame.batch_size
    return (CUDA_CONTEXT_MB + spec.map(lambda s: s.weights_mb)
            + spec.map(lambda s: s.activation_mb_per_token) * latents)


def test_out_of_memory_only_where_the_job_does_not_fit():
    frame = history(incidents=(incident_of("vram_heavy_model"),))
    oom = frame[frame.error_type == "OutOfMemoryError"]
    assert len(oom) > 50 and (oom.gpu_name == RTX_4090).all()
    assert (vram_need_estimate(oom) > 0.9 * oom.vram_total_mb).all()
    assert (oom.vram_peak_mb >= 0.97 * oom.vram_total_mb).all()
    assert oom.error_message.str.startswith("CUDA out of memory. Tried to allocate").all()
    assert (oom.status == "failed").all()
    fitted = frame[(frame.status == "success") & (frame.gpu_name == RTX_4090)]
    assert (vram_need_estimate(fitted) < 1.1 * fitted.vram_total_mb).all()
    # Failed jobs stop early: out of memory in the denoising loop, before decoding.
    assert (oom.phases.map(lambda phases: phases[-1]["name"]) == "generation").all()
    planned = frame[frame.status == "success"].groupby("model_name").gpu_seconds.median()
    assert (oom.gpu_seconds < oom.model_name.map(planned)).mean() > 0.8


def test_clean_history_is_clean():
    frame = history()
    assert frame.queue_seconds.mean() < 10
    assert (frame.status == "failed").mean() < 0.05
    assert frame.gpu_util_avg_pct.mean() > 70
    assert frame.cpu_avg_pct.between(5, 75).all() and frame.cpu_avg_pct.mean() < 40
    errors = frame.error_type.value_counts(normalize=False)
    assert set(errors.index) <= {"OutOfMemoryError", "RuntimeError"}
    assert (frame.error_type == "RuntimeError").mean() == pytest.approx(0.005, abs=0.003)
    big = frame[frame.work > 2e7]
    assert big.gpu_util_avg_pct.median() > 85
    # No step change: every week's video seconds per work unit is close to the overall median.
    videos = frame[(frame.pipeline_type == "video") & (frame.status == "success")]
    per_work = videos.gpu_seconds / videos.work * np.where(videos.gpu_name == A100, 1.3, 1)
    weekly = per_work.groupby(videos.submitted_at.dt.isocalendar().week).median()
    assert np.allclose(weekly / per_work.median(), 1, atol=0.07)


# -- incidents ---------------------------------------------------------------------------------
def test_default_incidents_are_one_of_each_after_a_clean_baseline():
    for weeks in range(3, 13):
        incidents = default_incidents(END.date(), weeks)
        assert sorted(i.kind for i in incidents) == sorted(INCIDENT_KINDS)
        baseline_end = END.date() - timedelta(days=weeks * 7 - 14)
        spans = [(i.start, i.end or END.date()) for i in incidents]
        assert all(start >= baseline_end for start, _ in spans), weeks
        assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), weeks
    eight = {i.kind: i for i in default_incidents(END.date(), 8)}
    regression = eight["driver_regression"]
    assert regression.start == END.date() - timedelta(days=10) and regression.end is None
    assert (eight["queue_backlog"].end - eight["queue_backlog"].start).days == 6
    assert (eight["vram_heavy_model"].end - eight["vram_heavy_model"].start).days == 4
    with pytest.raises(ValueError):
        default_incidents(END.date(), 2)


def test_incidents_are_validated():
    with pytest.raises(ValueError):
        Incident("meteor_strike", date(2025, 1, 1), None)
    with pytest.raises(ValueError):
        Incident("queue_backlog", date(2025, 1, 5), date(2025, 1, 1))
    with pytest.raises(ValueError):
        Incident("driver_regression", date(2025, 1, 1), None, pipeline_type="audio")


def assert_same_jobs_before(frame: pd.DataFrame, clean: pd.DataFrame, day: date) -> None:
    columns = ["job_id", "submitted_at", "model_name", "processing_seconds", "status",
               "cpu_avg_pct", "gpu_util_avg_pct"]
    before, clean_before = frame[frame.day < day], clean[clean.day < day]
    assert len(before) > 1000
    pd.testing.assert_frame_equal(before[columns].reset_index(drop=True),
                                  clean_before[columns].reset_index(drop=True))


def test_driver_regression_is_a_persistent_step_change_for_its_pipeline():
    incident = incident_of("driver_regression")
    frame, clean = history(incidents=(incident,)), history()
    assert_same_jobs_before(frame, clean, incident.start)
    ok = frame[frame.status == "success"]
    per_work = ok.gpu_seconds / ok.work
    after = in_window(ok, incident)
    for pipeline, expected in (("video", 1 + incident.magnitude), ("image", 1.0)):
        mine = ok.pipeline_type == pipeline
        for gpu in (RTX_4090, A100):
            here = mine & (ok.gpu_name == gpu)
            ratio = per_work[here & after].median() / per_work[here & ~after].median()
            assert ratio == pytest.approx(expected, abs=0.06), (pipeline, gpu)
    videos = ok[ok.pipeline_type == "video"]
    daily = (videos.gpu_seconds / videos.work).groupby(videos.day).median()
    last_days = daily[daily.index >= incident.start]
    assert (last_days > 1.15 * daily[daily.index < incident.start].median()).all()


def test_queue_backlog_builds_queues_in_its_window_only():
    incident = incident_of("queue_backlog")
    frame, clean = history(incidents=(incident,)), history()
    assert_same_jobs_before(frame, clean, incident.start)
    inside = in_window(frame, incident)
    jobs_per_day = frame.groupby(inside).size() / frame.groupby(inside).day.nunique()
    assert jobs_per_day[True] > 2.2 * jobs_per_day[False]
    assert frame.queue_seconds[inside].mean() > 60
    assert frame.queue_depth[inside].mean() > 2
    after = frame.day > incident.end + timedelta(days=1)
    assert frame.queue_seconds[after].mean() < 10
    assert frame.queue_seconds[frame.day < incident.start].mean() < 10


def test_cpu_bound_preprocessing_hits_its_job_type_in_its_window():
    incident = incident_of("cpu_bound_preprocessing")
    assert incident.job_type == "background"
    frame, clean = history(incidents=(incident,)), history()
    assert_same_jobs_before(frame, clean, incident.start)
    inside = in_window(frame, incident)
    hit = frame[inside & (frame.job_type == "background")]
    assert len(hit) > 100
    assert hit.cpu_avg_pct.between(85, 100).all()
    assert 20 <= hit.gpu_util_avg_pct.mean() <= 45 and hit.gpu_util_avg_pct.max() < 60
    share = hit.preprocessing_seconds / (hit.processing_seconds - hit.init_seconds)
    assert share.median() > 0.5
    for spared in (frame[inside & (frame.job_type != "background")],
                   frame[~inside & (frame.job_type == "background")]):
        assert spared.cpu_avg_pct.mean() < 45 and spared.gpu_util_avg_pct.mean() > 65
        spared_share = spared.preprocessing_seconds / (spared.processing_seconds
                                                       - spared.init_seconds)
        assert spared_share.median() < 0.3
    # The same jobs, only slower to prepare: their parameters are untouched.
    columns = ["submitted_at", "job_type", "width", "height", "steps", "model_name"]
    pd.testing.assert_frame_equal(frame[columns].reset_index(drop=True),
                                  clean[columns].reset_index(drop=True))


def test_vram_heavy_model_fails_on_small_cards_in_its_window():
    incident = incident_of("vram_heavy_model")
    frame, clean = history(incidents=(incident,)), history()
    assert_same_jobs_before(frame, clean, incident.start)
    heavy = frame[frame.model_name == incident.model_name]
    assert in_window(heavy, incident).all() and (heavy.pipeline_type == "image").all()
    images_inside = in_window(frame, incident) & (frame.pipeline_type == "image")
    assert len(heavy) / images_inside.sum() == pytest.approx(incident.magnitude, abs=0.07)
    on_4090, on_a100 = heavy[heavy.gpu_name == RTX_4090], heavy[heavy.gpu_name == A100]
    out_of_memory = on_4090[on_4090.error_type == "OutOfMemoryError"]
    assert len(out_of_memory) > 0.7 * len(on_4090)
    assert (out_of_memory.vram_peak_mb >= 0.97 * out_of_memory.vram_total_mb).all()
    assert (on_a100.status == "success").mean() > 0.95
    assert (on_a100.vram_peak_mb > 24564).mean() > 0.5
    failure_rate = (frame.status == "failed").groupby(images_inside).mean()
    assert failure_rate[True] > 0.10 and failure_rate[False] < 0.05


def test_an_unnamed_pipeline_or_job_type_means_every_job():
    incident = Incident("driver_regression", date(2025, 2, 20), None, magnitude=0.5)
    frame = history(weeks=2, incidents=(incident,)).merge(
        history(weeks=2)[["job_id", "gpu_name", "gpu_seconds"]], on="job_id",
        suffixes=("", "_clean"))
    same_gpu = (frame.gpu_name == frame.gpu_name_clean) & (frame.status == "success")
    ratio = (frame.gpu_seconds / frame.gpu_seconds_clean)[same_gpu]
    after = in_window(frame, incident)[same_gpu]
    assert np.allclose(ratio[after].groupby(frame.pipeline_type[same_gpu]).median(), 1.5)
    assert np.allclose(ratio[~after], 1.0)
