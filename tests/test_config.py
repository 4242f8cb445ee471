"""Configuration comes from the environment and .env; passwords never show."""
from __future__ import annotations

import pytest

from perflib.config import ConfigError, get_settings, resolve_database_url, safe_url
from perflib.store import Store


def test_defaults_are_a_sqlite_file_under_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("PERFLIB_DATABASE_URL", "PERFLIB_DB_SCHEMA", "PERFLIB_SAMPLE_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    settings = get_settings()
    assert settings.db_schema == "anime_api" and settings.sample_interval == 1.0
    assert str(resolve_database_url(None, settings)) == "sqlite:///data/perflib.db"
    Store(settings=settings).init_db()
    assert (tmp_path / "data" / "perflib.db").exists()


def test_env_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PERFLIB_DB_SCHEMA=from_env_file\nPERFLIB_SAMPLE_INTERVAL=2.5\n"
                                   "PERFLIB_THRESHOLD_QUEUE_SECONDS=45\n")
    monkeypatch.setenv("PERFLIB_SAMPLE_INTERVAL", "0.5")
    settings = get_settings()
    assert settings.db_schema == "from_env_file"
    assert settings.sample_interval == 0.5
    assert settings.thresholds.queue_seconds == 45


def test_seed_style_dict_names_a_postgres_database():
    url = resolve_database_url({"host": "db.internal", "port": 5433, "database": "anime",
                                "user": "svc", "password": "hunter2"})
    assert url.drivername == "postgresql+psycopg" and url.port == 5433
    assert "hunter2" not in safe_url(url) and "***" in safe_url(url)
    assert "hunter2" not in repr(Store({"host": "h", "database": "d", "password": "hunter2"}))
    with pytest.raises(ValueError, match="host"):
        resolve_database_url({"database": "anime"})


def test_model_profiles_from_environment(monkeypatch):
    monkeypatch.setenv("PERFLIB_MODEL_PROFILES", '{"wan": {"vae_temporal_factor": 4, '
                       '"patch_size": 2, "full_attention": true}}')
    profile = get_settings().profile_for("wan")
    assert profile.vae_temporal_factor == 4 and profile.full_attention
    assert get_settings().profile_for("unknown").vae_spatial_factor == 8
    monkeypatch.setenv("PERFLIB_MODEL_PROFILES", "{not json")
    with pytest.raises(ValueError, match="PERFLIB_MODEL_PROFILES"):
        get_settings()


def test_a_bad_number_in_env_file_names_its_variable_and_overrides_keep_the_rest(
        monkeypatch, tmp_path):
    (tmp_path / "perflib.env").write_text("PERFLIB_RETRAIN_ACCURACY_JOBS=many\n")
    monkeypatch.delenv("PERFLIB_RETRAIN_ACCURACY_JOBS", raising=False)
    with pytest.raises(ConfigError, match="PERFLIB_RETRAIN_ACCURACY_JOBS must be a number, "
                                          "got 'many'"):
        get_settings(tmp_path / "perflib.env")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("PERFLIB_KEEP_SAMPLES", "yes")
    settings = get_settings().with_overrides(port=9000)
    assert (settings.cuda_visible_devices, settings.keep_resource_samples, settings.port) == (
        "2,3", True, 9000)
    assert settings.retrain_rule.accuracy_jobs == 30  # unset: the dataclass default
