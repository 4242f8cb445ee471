"""A thin JSON client of ``perflib serve``: each exchange ends by its timeout, counted from its
start (a service dripping its answer included), and after a failure the service is left alone
for a while, so a service that is down, hung or misbehaving never slows ComfyUI prompt after
prompt. An answer that is not a JSON object is a failure of the service."""
from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from .deadline import open_by

API = "/api/anime/performance"
ANSWER_BYTES = 1_000_000  # the longest answer read; an error's detail is read up to 100 KB


class ServiceUnavailable(Exception):
    """The service did not answer (down, hung, or failing); worth trying again later."""


class ServiceRejected(Exception):
    """The service answered that the request itself is wrong (4xx): retrying will not help.
    ``fields``: each refused field of a record (its top-level name) with the reason."""

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = fields or {}


class ServiceClient:
    def __init__(self, base_url: str, api_token: str | None = None,
                 retry_after_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_token = api_token
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    def estimate(self, graph: dict, gpu_name: str | None, hostname: str | None,
                 timeout: float, inputs: dict | None = None,
                 previous: dict | None = None) -> dict[str, Any]:
        """The service's estimate of a ComfyUI prompt graph (time, interval, fleet queue, per
        node), its input files sized by `inputs`, the nodes that `previous` (the prompt this
        server runs just before it) leaves in ComfyUI's cache costing nothing."""
        body = {"comfyui_prompt": graph, "gpu_name": gpu_name, "hostname": hostname,
                "comfyui_inputs": inputs, "previous_prompt": previous}
        return self.post(f"{API}/estimate-time", {k: v for k, v in body.items() if v}, timeout)

    def record(self, records: list[dict], timeout: float) -> dict[str, Any]:
        """Store finished jobs (the service spools them itself while its database is down)."""
        return self.post(f"{API}/record-metrics", records, timeout)

    @property
    def resting(self) -> bool:
        """True while the service is being left alone after a failure."""
        return time.monotonic() < self._down_until

    def post(self, path: str, body: Any, timeout: float) -> dict[str, Any]:
        if self.resting:
            raise ServiceUnavailable(f"{self.base_url} failed recently; not asking until later")
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", **self._auth()})
        try:
            with open_by(request, time.monotonic() + timeout) as response:
                answer = _json_object(response.read(ANSWER_BYTES + 1))
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if 400 <= exc.code < 500 and exc.code not in (401, 403, 408, 429):
                raise ServiceRejected(f"{path}: HTTP {exc.code}: {detail[:500]}",
                                      _refused_fields(detail)) from None
            self._rest()
            raise ServiceUnavailable(f"{path}: HTTP {exc.code}: {detail[:500]}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self._rest()  # refused, timed out, reset, cut short, not a JSON object
            raise ServiceUnavailable(f"{self.base_url}{path}: {exc}") from None
        return answer

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}

    def _rest(self) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.retry_after_s


def _json_object(body: bytes) -> dict[str, Any]:
    """The answer's JSON object (an empty answer is an empty one); ValueError otherwise."""
    if len(body) > ANSWER_BYTES:
        raise ValueError(f"an answer over {ANSWER_BYTES} bytes")
    answer = json.loads(body or b"{}")
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is not a JSON object but {type(answer).__name__}")
    return answer


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The start of an error answer's body (empty when it cannot be read in time)."""
    try:
        return exc.read(100_000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


def _refused_fields(detail: str) -> dict[str, str]:
    """Field → reason from a 422 answer (``{"detail": [{"loc": ["body", "records", 0, "width",
    ...], "msg": ...}]}``): the first name after the record's index."""
    try:
        problems = json.loads(detail).get("detail")
    except (ValueError, AttributeError):
        return {}
    fields = {}
    for problem in problems if isinstance(problems, list) else ():
        location = problem.get("loc") if isinstance(problem, dict) else None
        after_index = [part for i, part in enumerate(location or ())
                       if isinstance(part, str) and any(isinstance(p, int) for p in location[:i])]
        if after_index:
            fields.setdefault(after_index[0], str(problem.get("msg")))
    return fields
