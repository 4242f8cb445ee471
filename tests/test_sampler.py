"""The sampler: fake NVML for awkward hardware here, real NVML on a GPU machine."""
from __future__ import annotations

import logging
import time

import pytest

from perflib.tracking.nvml import Nvml
from perflib.tracking.sampler import JobResources, ResourceSampler, gpu_indices_for
from tests.fake_nvml import FakeDevice, FakeNvml


def _sampler(devices, **kwargs) -> ResourceSampler:
    nvml = Nvml(FakeNvml(devices, **kwargs))
    nvml.start()
    return ResourceSampler(interval=0.05, nvml=nvml)


def test_job_aggregates_over_its_own_gpus():
    sampler = _sampler([FakeDevice("A100", util=10, used_mb=100),
                        FakeDevice("H100", util=90, used_mb=5000, power_mw=300_000, temp=70)])
    on_gpu1 = JobResources(gpu_indices=(1,))
    on_all = JobResources()
    sampler.attach(on_gpu1)
    sampler.attach(on_all)
    for _ in range(3):
        sampler.sample_once()
    sampler.detach(on_gpu1)
    sampler.sample_once()  # after detaching: not counted for on_gpu1
    one, both = on_gpu1.aggregates(), on_all.aggregates()
    assert on_gpu1.count == 3 and on_all.count == 4
    assert one["gpu_util_avg_pct"] == 90 and one["vram_peak_mb"] == 5000
    assert one["gpu_power_avg_w"] == 300 and one["gpu_temp_max_c"] == 70
    assert on_gpu1.gpu_name == "H100"
    assert both["gpu_util_avg_pct"] == 50 and both["vram_peak_mb"] == 5100
    assert both["vram_total_mb"] == 48000
    assert one["cpu_avg_pct"] is not None and one["ram_peak_mb"] > 0


def test_unsupported_fields_are_none_and_logged_once(caplog):
    sampler = _sampler([FakeDevice("T4", unsupported={"power", "sm_clock"})])
    job = JobResources()
    sampler.attach(job)
    with caplog.at_level(logging.INFO, logger="perflib"):
        for _ in range(5):
            sampler.sample_once()
    aggregates = job.aggregates()
    assert aggregates["gpu_power_avg_w"] is None
    assert aggregates["gpu_util_avg_pct"] == 50
    assert caplog.text.count("power not available") == 1


def test_lost_gpu_stops_its_readings_but_not_the_others():
    lost = FakeDevice("A10", util=30)
    sampler = _sampler([lost, FakeDevice("A10", util=70)])
    job = JobResources()
    sampler.attach(job)
    sampler.sample_once()
    lost.lost = True
    sample = sampler.sample_once()
    assert list(sample.gpus) == [1]
    sampler.sample_once()
    assert job.count == 3 and job.gpu_util_max == 70


def test_no_nvml_library_still_records_cpu_and_ram(caplog):
    with caplog.at_level(logging.INFO, logger="perflib"):
        sampler = _sampler([], missing_library=True)
    assert "NVML unavailable" in caplog.text
    job = JobResources(keep_samples=True)
    sampler.attach(job)
    sampler.sample_once()
    aggregates = job.aggregates()
    assert aggregates["gpu_util_avg_pct"] is None and aggregates["vram_peak_mb"] is None
    assert aggregates["cpu_avg_pct"] is not None and aggregates["ram_peak_mb"] > 0
    rows = job.sample_rows()
    assert rows[0]["gpu_util_pct"] is None and rows[0]["process_rss_mb"] > 0


def test_background_thread_feeds_running_jobs_and_short_jobs_fall_back():
    sampler = _sampler([FakeDevice("L4")]).start()
    try:
        long_job = JobResources()
        sampler.attach(long_job)
        time.sleep(0.3)
        sampler.detach(long_job)
        short_job = JobResources()
        sampler.attach(short_job)
        sampler.detach(short_job)
    finally:
        sampler.stop()
    assert long_job.count >= 3
    assert short_job.count == 0 and short_job.aggregates()["gpu_util_avg_pct"] == 50


@pytest.mark.parametrize("params,visible,expected", [
    ({}, None, None),
    ({}, "2,3", (2, 3)),
    ({"gpu_index": 1}, "2,3", (3,)),
    ({"device": "cuda:0"}, None, (0,)),
    ({"gpu_ids": [0, 1]}, "5,6", (5, 6)),
    ({}, "GPU-3f0a", None),
])
def test_gpu_indices_from_params_and_cuda_visible_devices(params, visible, expected):
    assert gpu_indices_for(params, visible) == expected


@pytest.mark.gpu
def test_real_nvml_reads_every_gpu():
    pytest.importorskip("pynvml")
    nvml = Nvml()
    if not nvml.start():
        pytest.skip("no NVIDIA GPU or driver on this machine")
    readings = nvml.read_all()
    assert readings, "NVML reports devices but none could be read"
    for reading in readings.values():
        assert reading.name
        assert reading.vram_total_mb and reading.vram_total_mb > 0
        assert reading.vram_used_mb is not None and 0 <= reading.vram_used_mb <= reading.vram_total_mb
        assert reading.gpu_util_pct is None or 0 <= reading.gpu_util_pct <= 100
    sampler = ResourceSampler(interval=0.05, nvml=nvml)
    job = JobResources()
    sampler.attach(job)
    sampler.sample_once()
    assert job.aggregates()["vram_total_mb"] > 0
    nvml.shutdown()
