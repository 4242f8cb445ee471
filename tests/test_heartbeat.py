"""Live GPU heartbeats: from the sampler (fake NVML) into the store, at most one write per GPU per
interval, never a failure for the pipeline; and from remote workers through the service."""
from __future__ import annotations

import logging
import time
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from perflib.config import ConfigError, Settings, get_settings
from perflib.serve import create_app
from perflib.store import Store
from perflib.store.heartbeats import read_heartbeats, write_heartbeats
from perflib.tracking.heartbeat import HeartbeatPublisher, heartbeat_for, heartbeats_of
from perflib.tracking.nvml import Nvml
from perflib.tracking.sampler import ResourceSampler
from perflib.tracking.tracker import track_generation_job
from tests.fake_nvml import FakeDevice, FakeNvml

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
DOWN_URL = "postgresql://perflib:hunter2@127.0.0.1:9/perflib"
LONG_AGO = datetime(2000, 1, 1, tzinfo=timezone.utc)


def sampled(*devices, missing_library: bool = False) -> ResourceSampler:
    """A sampler that has taken one reading of `devices` through the fake NVML."""
    sampler = ResourceSampler(interval=60, nvml=Nvml(FakeNvml(devices, missing_library)))
    sampler.nvml.start()
    sampler.sample_once()
    return sampler


def test_each_gpu_gets_one_heartbeat_with_its_reading(store):
    sampler = sampled(FakeDevice("NVIDIA GeForce RTX 4090", util=97, used_mb=18000, temp=71),
                      FakeDevice("NVIDIA A100-SXM4-80GB", total_mb=81920, unsupported={"power"}))
    assert HeartbeatPublisher(store, sampler, hostname="render-01").beat() == 2
    rows = read_heartbeats(store, LONG_AGO)
    assert [(r["hostname"], r["gpu_index"], r["gpu_name"]) for r in rows] == [
        ("render-01", 0, "NVIDIA GeForce RTX 4090"), ("render-01", 1, "NVIDIA A100-SXM4-80GB")]
    first, second = rows
    assert (first["gpu_util_pct"], first["vram_used_mb"], first["vram_total_mb"],
            first["power_w"], first["temperature_c"]) == (97, 18000, 24000, 200, 71)
    assert second["power_w"] is None and second["vram_total_mb"] == 81920  # unsupported: null
    for row in rows:
        assert 0 <= row["cpu_pct"] <= 100 and 0 < row["ram_used_mb"] <= row["ram_total_mb"]


def test_without_nvml_the_host_reports_cpu_and_ram_only(store):
    sampler = sampled(missing_library=True)
    assert heartbeats_of(sampler.latest, "cpu-box")[0]["gpu_index"] is None
    assert HeartbeatPublisher(store, sampler, hostname="cpu-box").beat() == 1
    [row] = read_heartbeats(store, LONG_AGO)
    assert row["hostname"] == "cpu-box" and row["gpu_index"] is None
    assert all(row[name] is None for name in ("gpu_name", "gpu_util_pct", "vram_used_mb",
                                              "power_w", "temperature_c"))
    assert row["cpu_pct"] is not None and row["ram_used_mb"] > 0


def test_a_gpu_row_is_written_at_most_once_per_interval(store):
    """Every tracked process on a host reports its GPUs: together they still write each GPU's
    row at most once per 5 s."""
    now = datetime.now(timezone.utc)

    def beat(at: datetime, util: float) -> int:
        return write_heartbeats(store, [{"hostname": "h", "gpu_index": i, "gpu_util_pct": util}
                                        for i in (0, 1)], at)

    def utilisations() -> list[float]:
        return [row["gpu_util_pct"] for row in read_heartbeats(store, LONG_AGO)]

    assert beat(now, 10) == 2
    assert beat(now + timedelta(seconds=4.9), 20) == 0  # a second process, too soon
    assert utilisations() == [10, 10]
    assert beat(now + timedelta(seconds=5), 30) == 2
    assert utilisations() == [30, 30]
    assert read_heartbeats(store, now + timedelta(seconds=6)) == []  # older readings


def test_an_unreachable_database_costs_one_line_never_an_exception(settings, caplog):
    """One INFO line per outage (the job writer is the one that warns about it)."""
    publisher = HeartbeatPublisher(Store(DOWN_URL, settings), sampled(FakeDevice("gpu")))
    with caplog.at_level(logging.INFO, logger="perflib"):
        assert publisher.beat() == 0
        assert publisher.beat() == 0
    lines = [r for r in caplog.records if "heartbeat" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert "127.0.0.1:9" in caplog.text and "hunter2" not in caplog.text


def test_a_tracked_process_reports_its_gpus_while_it_runs(sqlite_url, settings):
    store = Store(sqlite_url, settings)
    with track_generation_job("job-1", "image", {"resolution": "64x64", "steps": 1},
                              db=store):
        pass
    deadline = time.monotonic() + 20
    while not read_heartbeats(store, LONG_AGO) and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = read_heartbeats(store, LONG_AGO)
    assert rows and all(row["cpu_pct"] is not None for row in rows)


def test_heartbeats_can_be_turned_off(sqlite_url, settings, monkeypatch):
    off = Store(sqlite_url, settings.with_overrides(heartbeat_seconds=0))
    assert heartbeat_for(off, sampled(FakeDevice("gpu"))) is None
    monkeypatch.setenv("PERFLIB_HEARTBEAT_SECONDS", "0")
    assert get_settings().heartbeat_seconds == 0
    monkeypatch.setenv("PERFLIB_HEARTBEAT_SECONDS", "1")
    with pytest.raises(ConfigError, match="PERFLIB_HEARTBEAT_SECONDS"):
        get_settings()


# -- remote workers post heartbeats to the service ----------------------------------------------
@pytest.fixture
def service(db_url, tmp_path):
    settings = Settings(spool_dir=tmp_path / "spool", api_token="s3cret")
    with TestClient(base_url="http://127.0.0.1", app=create_app(db_url, settings)) as client:
        yield client


AUTH = {"Authorization": "Bearer s3cret"}
READING = {"hostname": "render-02", "gpu_index": 1, "gpu_name": "NVIDIA GeForce RTX 4090",
           "gpu_util_pct": 88.5, "vram_used_mb": 20000, "vram_total_mb": 24564,
           "power_w": 401, "temperature_c": 69, "cpu_pct": 12, "ram_used_mb": 30000,
           "ram_total_mb": 128000}


def test_the_service_stores_a_posted_heartbeat(service):
    answer = service.post(f"{API}/heartbeat", json=[READING, {"hostname": "cpu-box"}],
                          headers=AUTH)
    assert answer.status_code == 200 and answer.json() == {"received": 2, "stored": 2}
    rows = read_heartbeats(service.app.state.services.store, LONG_AGO)
    assert [(row["hostname"], row["gpu_index"], row["power_w"]) for row in rows] == [
        ("cpu-box", None, None), ("render-02", 1, 401)]
    again = service.post(f"{API}/heartbeat", json=READING, headers=AUTH)
    assert again.json() == {"received": 1, "stored": 0}  # within 5 s of the last


@pytest.mark.parametrize("change, field", [({"gpu_util_pct": 140}, "gpu_util_pct"),
                                           ({"gpu_index": -1}, "gpu_index"),
                                           ({"hostname": ""}, "hostname"),
                                           ({"power_w": True}, "power_w"),
                                           ({"fan_pct": 40}, "fan_pct")])
def test_a_bad_heartbeat_is_refused_naming_the_field(service, change, field):
    answer = service.post(f"{API}/heartbeat", json={**READING, **change}, headers=AUTH)
    assert answer.status_code == 422
    assert field in {str(part) for error in answer.json()["detail"] for part in error["loc"]}
    assert read_heartbeats(service.app.state.services.store, LONG_AGO) == []


def test_posting_a_heartbeat_needs_the_token(service):
    assert service.post(f"{API}/heartbeat", json=READING).status_code == 401
    assert service.post(f"{API}/heartbeat", json=READING,
                        headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_heartbeats_while_the_database_is_down_answer_503(tmp_path):
    settings = Settings(spool_dir=tmp_path / "spool")
    with TestClient(base_url="http://127.0.0.1", app=create_app(DOWN_URL, settings)) as client:
        answer = client.post(f"{API}/heartbeat", json=READING)
    assert answer.status_code == 503 and "hunter2" not in answer.text
