"""Settings of the perflib custom node: the environment first, then ``perflib_estimate.json``
beside this file (written by ``perflib comfyui install --service-url``), then defaults.

The node is a small client of its own inside ComfyUI's process, so it reads its few settings
itself; perflib's own configuration rules (``perflib/config.py``) are not loaded here.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Mapping

logger = logging.getLogger("perflib_estimate")

CONFIG_FILE = "perflib_estimate.json"
DEFAULT_SERVICE_URL = "http://127.0.0.1:8328"
# environment variable → setting name
ENVIRONMENT = {"PERFLIB_SERVICE_URL": "service_url", "PERFLIB_API_TOKEN": "api_token",
               "PERFLIB_NODE_SPOOL": "spool_path", "PERFLIB_NODE_HOSTNAME": "hostname"}


@dataclass(frozen=True)
class Settings:
    service_url: str = DEFAULT_SERVICE_URL
    api_token: str | None = None  # sent as a bearer token when the service requires one
    spool_path: pathlib.Path = pathlib.Path("perflib-spool.jsonl")
    hostname: str | None = None  # None: this server's address:port, as the collector names it
    estimate_timeout_s: float = 2.0  # one estimate request; also the longest a start waits
    record_timeout_s: float = 5.0
    retry_after_s: float = 30.0  # after a failed request the service is left alone this long
    resend_every_s: float = 60.0  # how often spooled records are offered again

    def __repr__(self) -> str:  # never show the token
        return (f"Settings(service_url={self.service_url!r}, spool_path={str(self.spool_path)!r}"
                f", hostname={self.hostname!r}, token={'set' if self.api_token else 'unset'})")


def load_settings(package_dir: pathlib.Path,
                  environ: Mapping[str, str] = os.environ) -> Settings:
    """The node's settings; a config file that cannot be read is logged and ignored."""
    values: dict = {"spool_path": package_dir / "spool" / "records.jsonl"}
    config = package_dir / CONFIG_FILE
    if config.is_file():
        try:
            stored = json.loads(config.read_text(encoding="utf-8"))
            values.update({name: stored[name] for name in ENVIRONMENT.values()
                           if isinstance(stored.get(name), str) and stored[name]})
        except (OSError, ValueError) as exc:
            logger.warning("perflib: ignoring %s: %s", config, exc)
    values.update({name: environ[variable] for variable, name in ENVIRONMENT.items()
                   if environ.get(variable)})
    values["service_url"] = values.get("service_url", DEFAULT_SERVICE_URL).rstrip("/")
    values["spool_path"] = pathlib.Path(values["spool_path"])
    return Settings(**values)
