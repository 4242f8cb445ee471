"""The command line with a database it cannot reach, or a bad configuration: one line naming what
failed (never the password) and a non-zero exit, not a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from perflib.cli import main
from tools.loadtest import free_port

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


# -- what was asked is refused in one line naming the problem, exit 2 ---------------------------
PERFLIB = os.path.join(os.path.dirname(sys.executable), "perflib")


def _perflib(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """`perflib argv` as a real process on a database of its own (killed after 60 s: an
    unbounded option ran for hours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    env.update(PERFLIB_SPOOL_DIR=str(cwd / "spool"),
               PERFLIB_DATABASE_URL=f"sqlite:///{cwd / 'own.db'}")
    return subprocess.run([PERFLIB, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def _refused(capsys, argv: list[str]) -> str:
    """The one line `argv` is refused with (exit 2, no traceback)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses an option's value
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.mark.parametrize("argv, named", [
    (["capacity", "--weeks", "1000000"], "argument --weeks: '1000000' is not a whole number "
                                         "from 1 to 104"),
    (["capacity", "--days", "1000000000"], "argument --days: '1000000000' is not a number of "
                                           "days from 7 to 3,660"),
    (["capacity", "--gpus", "10000000"], "argument --gpus: '10000000' is not a whole number "
                                         "from 1 to 10,000"),
    (["capacity", "--target-wait", "nan"], "argument --target-wait: 'nan' is not a number of "
                                           "seconds > 0 and < 86,400"),
    (["analyze", "--days-back", "1e999"], "argument --days-back: '1e999' is not a number of "
                                          "days > 0 and < 3,660"),
    (["compare", "--days", "-1"], "argument --days: '-1' is not a number of days"),
    (["maintain", "--retention-days", "-5"], "argument --retention-days: '-5' is not a whole "
                                             "number from 1 to 36,500"),
    (["report", "--weeks-back", "100000"], "argument --weeks-back: '100000'"),
    (["simulate", "--weeks", "0"], "argument --weeks: '0'"),
    (["simulate", "--jobs-per-day", "1e9"], "argument --jobs-per-day: '1e9'"),
    (["simulate", "--gpus", "1000000"], "argument --gpus: '1000000'"),
    (["simulate", "--gpus-per-host", "65"], "argument --gpus-per-host: '65'"),
    (["simulate", "--seed", "-1"], "argument --seed: '-1' is not a whole number from 0 to "
                                   "4,294,967,295"),
    (["demo", "--jobs", "100000000"], "argument --jobs: '100000000'"),
    (["demo", "--seed", "1.5"], "argument --seed: '1.5'"),
    (["backtest", "--start", "150%"], "argument --start: '150%' is not a share"),
    (["comfyui", "collect", "--url", "http://x", "--interval", "inf"], "argument --interval"),
    (["serve", "--port", "70000"], "argument --port: '70000' is not a whole number from 1 to "
                                   "65,535"),
])
def test_every_numeric_option_is_bounded(argv, named, tmp_path):
    result = _perflib(argv, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and named in result.stderr, result.stderr


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b"\0" * 300_000],
                         ids=["binary", "nul-bytes"])
def test_importing_a_file_that_is_not_text_is_one_line(content, capsys, tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_bytes(content)
    line = _refused(capsys, ["--database-url", f"sqlite:///{tmp_path / 'ok.db'}", "import",
                             str(path)])
    assert line.startswith(f"perflib import: {path} is not a CSV or JSONL text file ("), line


@pytest.mark.parametrize("command", [["import"], ["estimate", "--comfyui-prompt"], ["backtest"]],
                         ids=lambda c: c[0])
def test_a_folder_given_as_a_file_is_named_not_the_database(command, capsys, tmp_path):
    """The folder holds the database, which made the database take the blame."""
    url = f"sqlite:///{tmp_path / 'ok.db'}"
    line = _refused(capsys, ["--database-url", url, *command, str(tmp_path)])
    assert line == f"perflib {command[0]}: {tmp_path} is a folder: give a file"


def test_a_binary_prompt_file_is_one_line(capsys, tmp_path):
    path = tmp_path / "prompt.json"
    path.write_bytes(bytes(range(128, 256)))
    line = _refused(capsys, ["--database-url", f"sqlite:///{tmp_path / 'ok.db'}", "estimate",
                             "--comfyui-prompt", str(path)])
    assert line.startswith(f"perflib estimate: {path} is not a JSON text file ("), line


@pytest.mark.parametrize("argv", [["init-db"], ["estimate", "--pipeline-type", "image",
                                                 "--resolution", "512x512", "--steps", "20"]],
                         ids=lambda argv: argv[0])
def test_a_reader_that_goes_away_ends_the_output_quietly(argv, tmp_path):
    """``perflib … | head``: the pipe closes before perflib writes; no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFLIB_")}
    process = subprocess.Popen(
        [PERFLIB, "--database-url", f"sqlite:///{tmp_path / 'ok.db'}", *argv], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "PERFLIB_SPOOL_DIR": str(tmp_path / "spool")})
    process.stdout.close()  # the reader is gone before perflib has started
    err = process.stderr.read()
    assert process.wait(120) == 1 and err == "", err


def test_a_refusal_from_a_real_process_is_one_line(tmp_path):
    result = _perflib(["capacity", "--gpus", "10000000"], tmp_path)
    assert result.returncode == 2 and result.stderr == (
        "perflib capacity: argument --gpus: '10000000' is not a whole number from 1 to 10,000 "
        "(see perflib capacity --help)\n")
