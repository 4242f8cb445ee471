"""The project's set-up files agree with each other and with what README promises."""
from __future__ import annotations

import re
import subprocess
import tomllib

import yaml

from tests.conftest import REPO


def _name_and_spec(requirement: str) -> tuple[str, str]:
    requirement = re.sub(r"\[.*?\]", "", requirement)
    name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0]
    return name.lower().replace("_", "-"), requirement[len(name):].strip()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    everything = project["dependencies"] + [
        requirement for name in ("all", "test") for requirement in _expanded(extras, name)]
    wanted = dict(map(_name_and_spec, everything))
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = dict(_name_and_spec(d) for d in environment["dependencies"] if isinstance(d, str))
    conda.pop("python"), conda.pop("pip")
    assert conda == wanted


def _expanded(extras: dict[str, list[str]], name: str) -> list[str]:
    """An extra's requirements, with the extras of perflib it names (perflib[predict]) unfolded."""
    found = []
    for requirement in extras[name]:
        named = re.fullmatch(r"perflib\[(.*)\]", requirement)
        found += ([r for inner in named.group(1).split(",") for r in _expanded(extras, inner)]
                  if named else [requirement])
    return found


def test_core_install_holds_only_what_tracking_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name_and_spec(requirement)[0] for requirement in project["dependencies"]}
    assert {"sqlalchemy", "alembic", "psutil", "nvidia-ml-py"} <= core
    assert not core & {"psycopg", "pandas", "numpy", "scipy", "scikit-learn", "statsmodels",
                       "fastapi", "uvicorn", "papermill", "nbconvert", "ipykernel",
                       "matplotlib", "seaborn", "jupyterlab"}
    extras = project["optional-dependencies"]
    assert set(extras) >= {"postgres", "predict", "serve", "report", "lab", "all", "test"}
    assert "make setup" in (REPO / "README.md").read_text()
    assert "-e '.[all,test]'" in (REPO / "Makefile").read_text()


def test_make_lists_every_target_with_a_description():
    output = subprocess.run(["make", "--no-print-directory"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    targets = re.findall(r"^([a-z0-9-]+):", (REPO / "Makefile").read_text(), re.MULTILINE)
    for target in targets:
        assert f"make {target}" in output, f"`make` does not describe {target}"


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci


def test_generated_files_are_git_ignored():
    ignored = (REPO / ".gitignore").read_text()
    for pattern in (".venv/", "data/*.db", "reports/*.html", "data/spool/", ".env"):
        assert pattern in ignored
