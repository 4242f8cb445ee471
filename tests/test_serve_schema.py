"""Schemathesis explores every operation of the service's own OpenAPI schema: no input it
generates may produce a server error."""
from __future__ import annotations

import shutil
import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from perflib.config import Settings
from perflib.serve import create_app
from perflib.sim.simulate import generate_jobs
from perflib.store import Store

# Writes the report at once: rendering for real is tested in test_serve_reports.py.
QUICK_RENDER = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('<html></html>')"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    store = Store(f"sqlite:///{folder / 'perflib.db'}", Settings(spool_dir=folder / "spool"))
    store.write_jobs(list(generate_jobs(weeks=1, gpus=2, seed=0, jobs_per_day=60)))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # reports are rendered under this folder
        application = create_app(  # schemathesis' client calls the service "testserver"
            store, store.config.with_overrides(allowed_hosts=("testserver",)), render_command=lambda job: [sys.executable, "-c", QUICK_RENDER, str(job.html)])
    yield application
    shutil.rmtree(folder, ignore_errors=True)


def test_no_generated_request_is_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    explored = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/retrain") and operation.method.upper() == "POST":
            continue  # background retraining is exercised in test_serve.py

        @given(operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, case.body,
                                                response.status_code, response.text[:300])

        call()
        explored.append(f"{operation.method.upper()} {operation.path}")
    assert len(explored) >= 10, explored
