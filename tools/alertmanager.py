"""A throwaway Prometheus Alertmanager (tests): the Debian package's binary on a free loopback
port, with a temporary storage folder, no clustering, and a route to a receiver that sends
nothing, so what it holds can be read back through its v2 API."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name, upstream's
CONFIG = """\
route:
  receiver: nowhere
  group_by: [alertname]
receivers:
  - name: nowhere
"""
START_TIMEOUT_S = 30.0


def find_alertmanager() -> str | None:
    return next(filter(None, map(shutil.which, BINARIES)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Alertmanager:
    """Start with :meth:`start`, stop with :meth:`stop`; `url` is its base URL. A restart keeps
    the port, with an empty storage (as a replaced pod would)."""

    def __init__(self, binary: str):
        self.binary = binary
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None

    def start(self) -> "Alertmanager":
        self.folder = Path(tempfile.mkdtemp(prefix="perflib-am-"))
        (self.folder / "alertmanager.yml").write_text(CONFIG)
        self.log = open(self.folder / "log", "wb")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.folder / 'alertmanager.yml'}",
             f"--storage.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {self._log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"alertmanager did not become ready: {self._log_text()}")

    def alerts(self, active_only: bool = True) -> list[dict]:
        """The alerts it holds (GET /api/v2/alerts), the resolved ones left out by default."""
        query = "" if active_only else "?active=true&silenced=true&inhibited=true&unprocessed=true"
        with urllib.request.urlopen(self.url + "/api/v2/alerts" + query, timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.folder is not None:
            self.log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _log_text(self) -> str:
        return (self.folder / "log").read_text(errors="replace")[-2000:] if self.folder else ""
