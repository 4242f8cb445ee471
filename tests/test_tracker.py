"""The tracker records every job, on SQLite and PostgreSQL, and never breaks the pipeline."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from perflib import configure, track_generation_job, track_performance
from perflib.store import flush_all


class PipelineError(RuntimeError):
    pass


def _job(store, job_id):
    frame = store.jobs_frame()
    rows = frame[frame.job_id == job_id]
    assert len(rows) == 1, f"job {job_id} stored {len(rows)} times"
    return rows.iloc[0]


def test_context_manager_records_timeline_params_and_phases(store):
    params = {"resolution": "768x512", "frame_count": 16, "steps": 25, "guidance_scale": 7.5,
              "sampler": "euler", "model_name": "sd15", "seed": 42}
    with track_generation_job("job-1", "video", params, db=store,
                              predicted_seconds=3.0) as job:
        job.mark_queued()
        job.mark_processing_start()
        job.mark_initialized()
        job.mark_phase("encode", "text encoder")
        job.mark_phase("denoise")  # ends "encode"
        with job.mark_phase("inner"):
            pass
        job.mark_phase_end("denoise")
        job.mark_success()
    flush_all()
    row = _job(store, "job-1")
    assert (row.width, row.height, row.frame_count, row.steps) == (768, 512, 16, 25)
    assert row.guidance_scale == 7.5 and row.sampler == "euler" and row.model_name == "sd15"
    assert row.status == "success" and row.predicted_seconds == 3.0
    assert row.extra_params == {"seed": 42}
    assert 0 <= row.queue_seconds <= row.total_seconds
    assert row.processing_seconds <= row.total_seconds
    assert row.submitted_at <= row.started_at <= row.finished_at
    phases = store.phases_frame(["job-1"])
    assert list(phases.name) == ["encode", "denoise", "inner"]
    assert (phases.seconds >= 0).all()
    assert phases.description.iloc[0] == "text encoder"
    assert row.cpu_avg_pct is not None  # the sampler's reading reached the record


def test_user_exception_is_reraised_unchanged_and_job_failed(store):
    error = PipelineError("CUDA out of memory")
    with pytest.raises(PipelineError) as caught:
        with track_generation_job("job-fail", "image", {"steps": 30}, db=store):
            raise error
    assert caught.value is error
    flush_all()
    row = _job(store, "job-fail")
    assert row.status == "failed"
    assert row.error_type == "PipelineError" and row.error_message == "CUDA out of memory"


def test_mark_failure_without_exception(store):
    with track_generation_job("job-mf", "image", {}, db=store) as job:
        job.mark_failure("nsfw filter rejected the image")
    flush_all()
    row = _job(store, "job-mf")
    assert row.status == "failed" and row.error_message == "nsfw filter rejected the image"


def test_decorator_captures_parameters_from_signature(store):
    @track_performance("image", job_type="character", db=store)
    def generate(prompt, resolution="512x512", steps=20, *, guidance_scale=7.5, job_id=None):
        return f"{prompt}:{steps}"

    assert generate("a cat", "1024x768", 30, job_id="deco-1") == "a cat:30"
    generate("a dog", job_id="deco-2")
    flush_all()
    first, second = _job(store, "deco-1"), _job(store, "deco-2")
    assert (first.width, first.height, first.steps, first.guidance_scale) == (1024, 768, 30, 7.5)
    assert first.job_type == "character" and first.extra_params == {"prompt": "a cat"}
    assert (second.width, second.steps) == (512, 20)


def test_decorator_on_async_functions(store):
    @track_performance("video", db=store)
    async def generate(frame_count, steps, job_id):
        await asyncio.sleep(0.01)
        if steps < 0:
            raise ValueError("bad steps")
        return frame_count

    async def main():
        results = await asyncio.gather(*(generate(16, 10, job_id=f"async-{i}") for i in range(20)))
        with pytest.raises(ValueError):
            await generate(8, -1, job_id="async-bad")
        return results

    assert asyncio.run(main()) == [16] * 20
    flush_all()
    frame = store.jobs_frame()
    assert len(frame) == 21
    assert (frame[frame.job_id != "async-bad"].total_seconds >= 0.01).all()
    assert _job(store, "async-bad").status == "failed"


def test_decorator_is_reentrant(store):
    @track_performance("image", db=store)
    def recurse(depth, job_id):
        return 0 if depth == 0 else 1 + recurse(depth - 1, job_id=f"{job_id}-{depth - 1}")

    assert recurse(3, job_id="r") == 3
    flush_all()
    assert set(store.jobs_frame().job_id) == {"r", "r-2", "r-2-1", "r-2-1-0"}


def test_eight_threads_of_500_jobs_all_land(store):
    configure(store.db, store.settings)

    @track_performance("image")
    def work(n, job_id):
        return n * 2

    def worker(thread):
        for n in range(500):
            with track_generation_job(f"t{thread}-cm-{n}", "video", {"steps": n + 1}) as job:
                job.mark_phase("denoise")
            work(n, job_id=f"t{thread}-dec-{n}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flush_all()
    assert store.count() == 8 * 500 * 2
    assert store.jobs_frame().job_id.is_unique


def test_tracker_failure_never_reaches_the_pipeline(store, caplog, monkeypatch):
    from perflib.tracking import tracker as tracker_module

    def broken_binding(db):
        raise RuntimeError("tracker bug")

    monkeypatch.setattr(tracker_module, "_binding_for", broken_binding)
    with caplog.at_level(logging.ERROR, logger="perflib"):
        with track_generation_job("job-x", "image", {}, db=store) as job:
            job.mark_phase("denoise")
            result = 41 + 1
    assert result == 42
    assert "tracker bug" in caplog.text


def test_bad_record_is_skipped_and_logged_not_raised(store, caplog):
    with caplog.at_level(logging.ERROR, logger="perflib"):
        with track_generation_job("job-y", "image", {"resolution": object()}, db=store) as job:
            job.as_record = lambda: 1 / 0  # simulate a bug while building the record
        with track_generation_job("job-z", "image", {}, db=store):
            pass
        flush_all()
    assert "could not build a job record" in caplog.text
    assert list(store.jobs_frame().job_id) == ["job-z"]


def test_unparseable_params_kept_as_extra(store):
    with track_generation_job("job-p", "image", {"resolution": "huge", "steps": "many"},
                              db=store):
        pass
    flush_all()
    row = _job(store, "job-p")
    assert row.width is None or row.width != row.width  # NULL (None or NaN)
    invalid = row.extra_params["invalid_fields"]
    assert {name: fault["value"] for name, fault in invalid.items()} == {
        "resolution": "huge", "steps": "many"}
    assert "WIDTHxHEIGHT" in invalid["resolution"]["error"]
