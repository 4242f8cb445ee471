"""The command line with a database it cannot reach, or a bad configuration: one line naming what
failed (never the password) and a non-zero exit, not a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from perflib.cli import main
from perflib.loadtest import free_port

PASSWORD = "hunter2-secret"
COMMANDS = [["init-db"], ["analyze", "--days-back", "7"], ["maintain"], ["maintain", "--dry-run"],
            ["train", "--model-type", "linear_regression"],
            ["estimate", "--pipeline-type", "video", "--resolution", "768x768", "--steps", "25"],
            ["simulate", "--weeks", "1", "--jobs-per-day", "5"]]


def _closed_postgres_url() -> str:
    return f"postgresql://perflib:{PASSWORD}@127.0.0.1:{free_port()}/perflib"


def _unopenable_sqlite_urls(tmp_path) -> list[str]:
    """SQLite files that cannot be opened, even by root: a folder under a plain file, and a
    database path that is a folder."""
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder.db").mkdir()
    return [f"sqlite:///{tmp_path / 'a-file' / 'data' / 'perflib.db'}",
            f"sqlite:///{tmp_path / 'a-folder.db'}"]


def _one_line_failure(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert PASSWORD not in captured.out + captured.err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_closed_postgres_port_is_one_line_without_the_password(command, capsys, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(tmp_path / "spool"))
    line = _one_line_failure(capsys, ["--database-url", _closed_postgres_url(), *command])
    assert line.startswith(f"perflib {command[0]}: cannot reach the database "
                           "postgresql+psycopg://perflib:***@127.0.0.1:")
    assert "OperationalError" in line


@pytest.mark.parametrize("command", COMMANDS[:4], ids=lambda c: c[0])
def test_an_unopenable_sqlite_file_is_one_line(command, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(tmp_path / "spool"))
    for url in _unopenable_sqlite_urls(tmp_path):
        line = _one_line_failure(capsys, ["--database-url", url, *command])
        assert line.startswith(f"perflib {command[0]}: cannot reach the database {url}: "), line


def test_the_configured_url_is_never_shown_with_its_password(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFLIB_DATABASE_URL", _closed_postgres_url())
    line = _one_line_failure(capsys, ["analyze"])
    assert "perflib:***@127.0.0.1" in line


@pytest.mark.parametrize("variable, value, named", [
    ("PERFLIB_THRESHOLD_HIGH_VRAM_PCT", "ninety", "PERFLIB_THRESHOLD_HIGH_VRAM_PCT"),
    ("PERFLIB_RETENTION_DAYS", "3.5", "PERFLIB_RETENTION_DAYS"),
    ("PERFLIB_DATABASE_URL", f"not a url {PASSWORD}", "PERFLIB_DATABASE_URL")])
def test_bad_configuration_is_one_line_naming_the_variable(variable, value, named, capsys,
                                                           monkeypatch):
    monkeypatch.setenv(variable, value)
    line = _one_line_failure(capsys, ["analyze"])
    assert line.startswith("perflib analyze: bad configuration: ") and named in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    import sqlalchemy as sa

    monkeypatch.setenv("PERFLIB_SPOOL_DIR", str(tmp_path / "spool"))
    with pytest.raises(sa.exc.OperationalError):
        main(["--debug", "--database-url", _closed_postgres_url(), "init-db"])


def test_a_real_process_prints_one_line_and_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    env.update(PERFLIB_DATABASE_URL=_closed_postgres_url(),
               PERFLIB_SPOOL_DIR=str(tmp_path / "spool"))
    result = subprocess.run([sys.executable, "-m", "perflib.cli", "maintain"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("perflib maintain: cannot reach the database ")
    assert PASSWORD not in result.stdout + result.stderr


def test_a_missing_input_file_is_one_line(capsys, tmp_path):
    line = _one_line_failure(capsys, ["--database-url", f"sqlite:///{tmp_path / 'ok.db'}",
                                      "import", str(tmp_path / "missing.csv")])
    assert line.startswith("perflib import: ") and "missing.csv" in line
    assert "database" not in line
