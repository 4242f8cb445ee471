"""`make lab` starts JupyterLab on notebooks/ with the project's environment, headless."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil

from tools.loadtest import free_port
from tests.conftest import REPO

START_TIMEOUT_S = 90


def test_make_lab_serves_the_notebooks_with_the_project_python(tmp_path):
    port, token = free_port(), "perflib-test"
    arguments = f"--no-browser --port={port} --ServerApp.token={token} --ServerApp.ip=127.0.0.1"
    if os.geteuid() == 0:  # CI containers run as root, which JupyterLab refuses unless told
        arguments += " --allow-root"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    # -o: take the installed environment as it is (the test runs inside it)
    lab = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "lab",
                            f"LAB_ARGS={arguments}"], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        contents = _first_answer(f"{base}/api/contents", headers, lab)
        names = {item["name"] for item in contents["content"]}
        assert {"00-explore.ipynb", "10-weekly-report.ipynb"} <= names
        server = [" ".join(p.cmdline()) for p in psutil.Process(lab.pid).children(True)]
        assert any(c.startswith(f"{REPO / '.venv/bin/python'} .venv/bin/jupyter-lab "
                                "--notebook-dir=notebooks") for c in server), server
        # the default kernel is this interpreter: jupyter_client starts "python" as its own
        kernels = httpx.get(f"{base}/api/kernelspecs", headers=headers).json()
        python = kernels["kernelspecs"][kernels["default"]]["spec"]["argv"][0]
        assert python in {"python", "python3", sys.executable}
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)


def _first_answer(url: str, headers: dict, process: subprocess.Popen) -> dict:
    """Poll `url` until the server answers 200; fail if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make lab exited with {process.returncode}"
        try:
            response = httpx.get(url, headers=headers, timeout=5)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer within {START_TIMEOUT_S} s")
