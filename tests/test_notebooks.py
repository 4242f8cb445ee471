"""Notebooks are thin, parameterised templates committed without outputs; the report renders."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import papermill
import pytest

from perflib.cli import main
from perflib.sim.simulate import simulate_history
from perflib.store import Store
from tests.conftest import REPO, row_counts

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_and_no_outputs(path):
    notebook = json.loads(path.read_text())
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    parameters = papermill.inspect_notebook(str(path))
    assert parameters and all(p["help"] for p in parameters.values()), "comment every parameter"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None


def test_expected_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"00-explore.ipynb", "01-train-models.ipynb", "02-bottlenecks.ipynb",
            "03-trends.ipynb", "05-capacity.ipynb", "10-weekly-report.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_by_saying_what_it_answers_and_what_its_parameters_mean(path):
    first = json.loads(path.read_text())["cells"][0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown" and "What it answers" in text
    for name in papermill.inspect_notebook(str(path)):
        assert f"`{name}`" in text, f"the opening cell does not explain {name}"


def _run_notebook(path, url: str, folder) -> str:
    """Execute a notebook on the database at `url`; its outputs as text."""
    parameters = {"database_url": url}
    if path.name.startswith("01"):
        parameters.update(real_data_dir="", model_type="linear_regression")
    executed = folder / path.name
    papermill.execute_notebook(str(path), str(executed), parameters=parameters, cwd=str(REPO),
                               progress_bar=False, kernel_name="python3")
    return executed.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_runs_on_an_empty_database_and_writes_nothing(path, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    store.init_db()
    before = row_counts(store)
    output = _run_notebook(path, str(store.db), tmp_path)
    assert "The database is empty" in output and "perflib simulate --if-empty" in output
    assert row_counts(store) == before


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    assert main(["--database-url", url, "simulate", "--incidents", "--weeks", "3",
                 "--jobs-per-day", "40"]) == 0
    return url


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("10")],
                         ids=lambda p: p.name)
def test_analysis_notebooks_read_demo_data_without_writing(path, demo_database, tmp_path):
    store = Store(demo_database)
    before = row_counts(store)
    output = _run_notebook(path, demo_database, tmp_path)
    assert "This report shows simulated data" in output
    assert row_counts(store) == before


def test_explore_notebook_passes_nbval_on_demo_data(demo_database):
    """As `make test` runs notebooks (there on an empty database), here on demo data."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--nbval-lax", "notebooks/00-explore.ipynb"], cwd=REPO,
                            env={**os.environ, "PERFLIB_DATABASE_URL": demo_database},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


def test_failed_report_exits_non_zero_and_keeps_the_executed_notebook(tmp_path, monkeypatch,
                                                                      capsys):
    from perflib.report import render as report

    broken = tmp_path / "broken.ipynb"
    notebook = json.loads((REPO / report.NOTEBOOK).read_text())
    notebook["cells"].append({"cell_type": "code", "id": "boom", "metadata": {},
                              "execution_count": None, "outputs": [],
                              "source": "raise RuntimeError('boom')"})
    broken.write_text(json.dumps(notebook))
    monkeypatch.setattr(report, "NOTEBOOK", broken)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    simulate_history(Store(url), weeks=1, gpus=1, seed=0, jobs_per_day=20)
    assert main(["--database-url", url, "report", "--output-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "boom" in error
    kept = error.split("kept at ")[1].strip()
    assert "RuntimeError" in open(kept).read()


def test_report_hands_the_database_to_the_kernel_through_the_environment(tmp_path,
                                                                          monkeypatch):
    """A password in the URL must not be written into the executed notebook."""
    from perflib.report import render as report
    from perflib.config import get_settings

    seen = {}

    def fake_execute(source, target, parameters, **kwargs):
        seen["parameters"] = parameters
        seen["url"] = get_settings().database_url
        raise papermill.PapermillExecutionError(0, 0, "", "", "Stop", "stop")

    url = f"sqlite:///{tmp_path / 'r.db'}"
    simulate_history(Store(url), weeks=1, gpus=1, seed=0, jobs_per_day=20)
    monkeypatch.setattr(report.papermill, "execute_notebook", fake_execute)
    with pytest.raises(report.ReportError):
        report.render_report(1, url, output_dir=tmp_path)
    assert "database_url" not in seen["parameters"] and seen["url"] == url
